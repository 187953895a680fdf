"""Linking a batch of source records to customers: ``Resolver`` (one transaction per
batch), the in-memory linker, what the database already knows of the batch's keys, the
writes of its decisions and the folding of one stored customer into another."""
