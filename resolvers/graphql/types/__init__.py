"""The schema's types, queries and mutations, one module per domain (customer, upstream facts,
identity, privacy, recommendations, render)."""
