"""What every adapter runs on: the REST and SOAP clients, credentials as httpx auth flows, and the
call policy (deadline, retries, circuit breaker)."""
