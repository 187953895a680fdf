"""The synthetic people behind the demo database and every sample upstream: who they are, what they
like, order and browse."""
