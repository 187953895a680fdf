"""The demo: synthetic people, the sample upstreams, seeding and the ``gateway demo`` command.
Production code never imports this package."""
