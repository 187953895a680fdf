"""Recommendation experiments: which variant each customer sees (a hash, no storage) and
what the variants' results say (Wilson intervals, a two-proportion test)."""
