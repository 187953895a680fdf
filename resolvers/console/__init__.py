"""The operator console: pages served by the gateway for the people who run it.

Customer 360 (a customer's profile, provenance, identities, consent, timeline and
freshness), identity review, the template studio and health, signed in with an API key
exchanged for a session cookie. Starlette routes and Jinja2 templates, a little
JavaScript of its own (no CDN: nothing is loaded from another host), readable with
JavaScript off. Pages ask the gateway's schema as the signed-in key, so scopes and the
audit log apply as to the API; they call services, never SQL. Routes:
``resolvers.console.routes``; what lives as long as the process: ``parts``.
"""
