"""Logs (repeated errors summarised), metrics, the request id every log line carries, the circuit
states of every worker and the ``/readyz`` probes."""
