"""The GraphiQL explorer page, wired to assets served from a Python package, not a CDN.

The built files (GraphiQL, React 17, the explorer plugin) come from the
``graphene-django-graphiql-static`` wheel; the app mounts that package's static
folder at ``ASSETS_PATH``, so the page works on a closed network.
"""

from __future__ import annotations

import json

ASSETS_PACKAGE = "graphene_django_graphiql_static"
ASSETS_PATH = "/graphiql/assets"
_FILES = f"{ASSETS_PATH}/{ASSETS_PACKAGE}"

DEFAULT_QUERY = """# The explorer (left) lists every field; Ctrl-Enter runs the query.
query Customer($email: String!) {
  customer(email: $email) {
    id
    email
    firstName
    lastName
    identities { source externalId }
  }
}
"""


def graphiql_html(
    endpoint: str, example_email: str | None = None, example_key: str | None = None
) -> str:
    """The page; the headers editor starts with an Authorization header to fill in (or
    the demo's key), and keeps what the user pastes in the browser's storage."""
    variables = json.dumps({"email": example_email or "someone@example.com"}, indent=2)
    headers = json.dumps(
        {"Authorization": f"Bearer {example_key or '<paste your API key here>'}"}, indent=2
    )
    config = json.dumps(
        {"endpoint": endpoint, "query": DEFAULT_QUERY, "variables": variables, "headers": headers}
    )
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Personalization gateway · GraphiQL</title>
  <style>html, body, #graphiql {{ height: 100%; margin: 0; overflow: hidden; width: 100%; }}</style>
  <link rel="stylesheet" href="{_FILES}/graphiql.min.css">
  <link rel="stylesheet" href="{_FILES}/style.css">
  <script src="{_FILES}/react.production.min.js"></script>
  <script src="{_FILES}/react-dom.production.min.js"></script>
  <script src="{_FILES}/graphiql.min.js"></script>
  <script src="{_FILES}/graphiql-plugin-explorer.umd.js"></script>
</head>
<body>
  <div id="graphiql">Loading GraphiQL…</div>
  <script>
    const config = {config};
    const fetcher = GraphiQL.createFetcher({{ url: config.endpoint }});
    // The explorer plugin is a React hook: it lives inside a component that owns the query.
    function Explorer() {{
      const [query, setQuery] = React.useState(config.query);
      const explorer = GraphiQLPluginExplorer.useExplorerPlugin({{ query, onEdit: setQuery }});
      return React.createElement(GraphiQL, {{
        fetcher,
        query,
        onEditQuery: setQuery,
        variables: config.variables,
        defaultHeaders: config.headers,
        plugins: [explorer],
        isHeadersEditorEnabled: true,
        shouldPersistHeaders: true,
        defaultEditorToolsVisibility: true,
      }});
    }}
    ReactDOM.render(React.createElement(Explorer), document.getElementById("graphiql"));
  </script>
</body>
</html>
"""
