"""Fault injection against real services: servers of the tests' own (a `redis-server`, a
Postgres cluster) that a test can stop, freeze and restart without touching the shared ones."""
