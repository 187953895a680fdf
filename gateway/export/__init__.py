"""Export to the warehouse: the unified customers, identities with their link evidence,
consents, events and attributes as Parquet, incremental by a cursor per table, with
tombstone rows for deletions, a manifest per run, pseudonymised by default."""
