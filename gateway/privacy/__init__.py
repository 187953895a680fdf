"""Consent, erasure (and what it reaches), and the audit trail."""
