"""Who may call and how much: API keys and their scopes (and their grace while the database is
unreachable), authentication, rate limits, the public demo secrets check, and ``gateway keys``."""
