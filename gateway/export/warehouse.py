"""An embedded warehouse: the exported state loaded into a DuckDB file, with views an
analyst can query at once.

Tables (the live rows of every finished run, deletions applied): customers, identities,
identity_links, consents, events, attributes.  Views:

- ``customer_consents``: one row per customer with the latest statement per purpose
  (``email_marketing``, ``personalisation``, ``analytics``: true, false or null);
- ``customer_activity``: per customer, events, orders (event types naming an order),
  first and last event;
- ``engagement_daily``: per day, events, orders and active customers.

The load is replaced whole on each call (one transaction), from the files the manifests
list, so a half-written run is never loaded.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pyarrow.fs as pafs

from gateway.export.manifest import Folder
from gateway.export.tables import TABLES
from gateway.export.verify import listed_files, live_query
from gateway.export.writer import filesystem

VIEWS = (
    """
CREATE OR REPLACE VIEW customer_consents AS
SELECT c.*,
       max(CASE WHEN k.purpose = 'email_marketing' THEN k.granted END) AS email_marketing,
       max(CASE WHEN k.purpose = 'personalisation' THEN k.granted END) AS personalisation,
       max(CASE WHEN k.purpose = 'analytics' THEN k.granted END) AS analytics,
       max(k.recorded_at) AS consent_recorded_at
FROM customers AS c LEFT JOIN consents AS k ON k.customer_id = c.id
GROUP BY ALL
""",
    """
CREATE OR REPLACE VIEW customer_activity AS
SELECT c.id AS customer_id,
       count(e.id) AS events,
       count(e.id) FILTER (WHERE e.type ILIKE '%order%') AS orders,
       min(e.occurred_at) AS first_event_at,
       max(e.occurred_at) AS last_event_at
FROM customers AS c LEFT JOIN events AS e ON e.customer_id = c.id
GROUP BY c.id
""",
    """
CREATE OR REPLACE VIEW engagement_daily AS
SELECT CAST(occurred_at AS DATE) AS day,
       count(*) AS events,
       count(*) FILTER (WHERE type ILIKE '%order%') AS orders,
       count(DISTINCT customer_id) AS active_customers
FROM events
GROUP BY ALL
ORDER BY day
""",
)


def load(target: str, database: Path) -> dict[str, int]:
    """Load the exported state into ``database``; the row count of each table."""
    fs, root = filesystem(target)
    if not isinstance(fs, pafs.LocalFileSystem):
        raise ValueError("--to duckdb reads a local export folder")
    manifests = Folder(fs, root).manifests()
    counts: dict[str, int] = {}
    with duckdb.connect(str(database)) as db:
        db.execute("BEGIN")
        for spec in TABLES:
            paths = [f"{root}/{f['path']}" for f in listed_files(manifests, spec.name)]
            if paths:
                body = live_query(paths, spec, "* EXCLUDE (_nth, _op, _run)")
            else:  # nothing exported yet: an empty table of the right shape
                body = (
                    "SELECT "
                    + ", ".join(
                        f"CAST(NULL AS {_duck(c.kind.value)}) AS {c.name}" for c in spec.columns
                    )
                    + " WHERE false"
                )
            db.execute(f"CREATE OR REPLACE TABLE {spec.name} AS {body}")
            row = db.execute(f"SELECT count(*) FROM {spec.name}").fetchone()
            counts[spec.name] = int(row[0]) if row else 0
        for view in VIEWS:
            db.execute(view)
        db.execute("COMMIT")
    return counts


def _duck(kind: str) -> str:
    return {
        "int": "BIGINT",
        "float": "DOUBLE",
        "bool": "BOOLEAN",
        "time": "TIMESTAMPTZ",
    }.get(kind, "VARCHAR")
