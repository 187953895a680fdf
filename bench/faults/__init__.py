"""Benchmarks of the gateway under faults and overload: outages of Postgres and Redis,
readiness while degraded, event-loop stalls, webhook storms."""
