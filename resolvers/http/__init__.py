"""The HTTP edge: the GraphQL-over-HTTP view and sockets, GraphiQL, persisted queries, body limits,
and the plain JSON URLs (profiles, recommendations)."""
