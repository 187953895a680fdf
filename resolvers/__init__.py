"""The edge: HTTP and GraphQL in, service calls out, domain results and errors back as
HTTP and GraphQL. ``app.py`` builds the app; ``http/`` and ``graphql/`` hold the rest."""
