"""The GraphQL edge: schema, per-request context and loaders, execution, limits and costs, scopes,
error codes, subscriptions."""
