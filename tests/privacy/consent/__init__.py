"""Consent: statements, their history, and suppressions kept before a customer exists."""
