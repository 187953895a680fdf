"""Segments: saved, typed filters over customers' traits, scores, consent and profile
fields, evaluated in the database (never free SQL) and paged by customer id for a send."""
