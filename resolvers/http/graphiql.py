"""The GraphiQL explorer page, wired to assets served from a Python package, not a CDN.

The built files (GraphiQL, React 17, the explorer plugin) come from the
``graphene-django-graphiql-static`` wheel; the app mounts that package's static
folder at ``ASSETS_PATH``, so the page works on a closed network.

A user pastes an API key into the headers editor, so the page may not be framed by
another site (which could hide it under a decoy and trick a click: clickjacking), runs
only the gateway's own scripts and its one inline script (allowed by its hash), and
never keeps headers in the browser's storage: GraphiQL 2.1 writes them into its
history and tabs even when told not to persist them, so the page hands GraphiQL a
storage that nulls them (a tab without the key is invalid to GraphiQL, which would
drop every tab), and nulls what an earlier page stored.
"""

from __future__ import annotations

import base64
import hashlib
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
    the demo's key), kept for the page's life only."""
    variables = json.dumps({"email": example_email or "someone@example.com"}, indent=2)
    headers = json.dumps(
        {"Authorization": f"Bearer {example_key or '<paste your API key here>'}"}, indent=2
    )
    config = json.dumps(
        {"endpoint": endpoint, "query": DEFAULT_QUERY, "variables": variables, "headers": headers}
    )
    # "</script>" in an example e-mail may not end the script early.
    script = _SCRIPT.replace("__CONFIG__", config.replace("<", "\\u003c"))
    return _PAGE.format(files=_FILES, script=script)


def graphiql_headers(page: str) -> dict[str, str]:
    """The headers the page is served with: its inline script is allowed by its hash."""
    start = page.index("<script>") + len("<script>")
    inline = page[start : page.index("</script>", start)]
    digest = base64.b64encode(hashlib.sha256(inline.encode()).digest()).decode()
    policy = (
        f"default-src 'none'; script-src 'self' 'sha256-{digest}'; "
        "style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self' data:; "
        "connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
    )
    return {
        "Content-Security-Policy": policy,
        "X-Frame-Options": "DENY",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
    }


# Keys as GraphiQL's storage names them; the last three are JSON holding headers.
_SCRIPT = """
    const config = __CONFIG__;
    const HEADERS = "graphiql:headers";
    const HOLDING_HEADERS = ["graphiql:tabState", "graphiql:queries", "graphiql:favorites"];
    function withoutHeaders(key, value) {
      if (key === HEADERS) return null;
      if (!HOLDING_HEADERS.includes(key)) return value;
      try {
        // Null, not removed: GraphiQL throws away stored tabs without a "headers".
        return JSON.stringify(JSON.parse(value), (name, item) =>
          name === "headers" ? null : item);
      } catch (error) {
        return null;
      }
    }
    const storage = {
      getItem(key) {
        const value = window.localStorage.getItem(key);
        return value === null ? null : withoutHeaders(key, value);
      },
      setItem(key, value) {
        const kept = withoutHeaders(key, value);
        if (kept === null) window.localStorage.removeItem(key);
        else window.localStorage.setItem(key, kept);
      },
      removeItem(key) { window.localStorage.removeItem(key); },
      clear() {
        for (const key of Object.keys(window.localStorage)) {
          if (key.startsWith("graphiql:")) window.localStorage.removeItem(key);
        }
      },
      get length() {
        return Object.keys(window.localStorage).filter((k) => k.startsWith("graphiql:")).length;
      },
    };
    // What an earlier page (which persisted headers) left behind.
    window.localStorage.removeItem("graphiql:shouldPersistHeaders");
    for (const key of [HEADERS, ...HOLDING_HEADERS]) {
      const value = window.localStorage.getItem(key);
      if (value !== null) storage.setItem(key, value);
    }
    const fetcher = GraphiQL.createFetcher({ url: config.endpoint });
    // The explorer plugin is a React hook: it lives inside a component that owns the query.
    // The page owns the query (for the explorer): it starts from the last one edited, as
    // GraphiQL's own would, which also makes that one's stored tab the active one.
    const initialQuery = storage.getItem("graphiql:query") || config.query;
    // The variables likewise: a prop given to GraphiQL wins over its stored copy.
    const initialVariables = storage.getItem("graphiql:variables") || config.variables;
    function Explorer() {
      const [query, setQuery] = React.useState(initialQuery);
      const explorer = GraphiQLPluginExplorer.useExplorerPlugin({ query, onEdit: setQuery });
      return React.createElement(GraphiQL, {
        fetcher,
        storage,
        query,
        onEditQuery: setQuery,
        variables: initialVariables,
        defaultHeaders: config.headers,
        plugins: [explorer],
        isHeadersEditorEnabled: true,
        shouldPersistHeaders: false,
        defaultEditorToolsVisibility: true,
      });
    }
    ReactDOM.render(React.createElement(Explorer), document.getElementById("graphiql"));
  """

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Personalization gateway · GraphiQL</title>
  <style>html, body, #graphiql {{ height: 100%; margin: 0; overflow: hidden; width: 100%; }}</style>
  <link rel="stylesheet" href="{files}/graphiql.min.css">
  <link rel="stylesheet" href="{files}/style.css">
  <script src="{files}/react.production.min.js"></script>
  <script src="{files}/react-dom.production.min.js"></script>
  <script src="{files}/graphiql.min.js"></script>
  <script src="{files}/graphiql-plugin-explorer.umd.js"></script>
</head>
<body>
  <div id="graphiql">Loading GraphiQL…</div>
  <script>{script}</script>
</body>
</html>
"""
