"""Data coming in: webhooks (payloads, signatures), file imports, upstream syncs, and the change
notifications every write sends."""
