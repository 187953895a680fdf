"""What the benchmarks share: the bench API key, the bare Starlette yardstick, process
and load harness, the labelled identity sets."""
