"""Sessions counted from the store are the same whichever path wrote the calls: the
Segment webhook, the event stream and a plain insert (an import) each leave the call's
session id where ``engagement`` reads it (migration 0022's column, which the database
fills), on both databases."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import insert, select

from gateway.db.engine import create_engine
from gateway.db.models import Event, Identity
from gateway.ingest.streams.event_batches import EventBatches
from gateway.privacy.tombstones import Tombstones
from gateway.settings import Settings
from gateway.upstreams.behaviour import ENGAGEMENT_WINDOW, engagement
from gateway.upstreams.event_store import EventStore
from tests.conftest import api_client, unique_email
from tests.in_process import lifespan
from tests.ingest.webhook_requests import realtime_app, segment_request


def _track(user_id: str, at: datetime, session: Any, tag: str) -> dict[str, Any]:
    return {
        "type": "track",
        "event": "Product Viewed",
        "messageId": f"{tag}-{uuid.uuid4().hex[:12]}",
        "userId": user_id,
        "timestamp": at.isoformat(),
        "properties": {"product_id": "p1", "session_id": session},
    }


async def test_sessions_of_calls_from_every_write_path_are_counted(
    database_url: str, settings: Settings
) -> None:
    now = datetime.now(UTC)
    tag = uuid.uuid4().hex[:8]
    user_id = f"user-{tag}"
    hour = timedelta(hours=1)
    # The webhook: the call that names the customer, and one more of the same session.
    webhook = [_track(user_id, now - hour, "web-1", tag), _track(user_id, now, "web-1", tag)]
    webhook[0]["traits"] = {"email": unique_email("sessions")}
    app = realtime_app(settings)
    async with lifespan(app), api_client(app) as client:
        for call in webhook:
            answer = await client.post(**segment_request(call))
            assert answer.status_code == 200, answer.text
    engine = create_engine(database_url)
    try:
        async with engine.connect() as connection:
            customer_id = await connection.scalar(
                select(Identity.customer_id).where(Identity.external_id == user_id)
            )
        assert customer_id is not None
        # The stream: a session of its own, one the webhook saw, a numeric id, an empty
        # one (no session) and one older than the window.
        stream = [
            _track(user_id, now - 2 * hour, "stream-1", tag),
            _track(user_id, now - 3 * hour, "web-1", tag),
            _track(user_id, now - 4 * hour, 42, tag),
            _track(user_id, now - 5 * hour, "", tag),
            _track(user_id, now - timedelta(days=40), "too-old", tag),
        ]
        batches = EventBatches(engine, Tombstones(b"stored-sessions-tests-key"))
        stored = await batches.store([batches.parse(orjson.dumps(m)) for m in stream])
        assert stored.outcomes == ["stored"] * len(stream)
        # A plain insert, as an import writes rows: one more session, one without any.
        async with engine.begin() as connection:
            await connection.execute(
                insert(Event),
                [
                    {
                        "customer_id": customer_id,
                        "source": "segment",
                        "event_id": f"{tag}-import-{n}",
                        "type": "track:Product Viewed",
                        "occurred_at": now - (6 + n) * hour,
                        "properties": {"event": "Product Viewed", "properties": properties},
                    }
                    for n, properties in enumerate(({"session_id": "import-1"}, {}))
                ],
            )
        store = EventStore(engine)
        counted = await store.engagement([customer_id], now - ENGAGEMENT_WINDOW)
        events = await store.recent([customer_id], 1000)
    finally:
        await engine.dispose()
    assert len(events[customer_id]) == 9
    # web-1, stream-1, 42 and import-1: "" and no id are no session, too-old is outside.
    assert counted[customer_id].sessions == 4
    assert counted[customer_id] == engagement(events[customer_id], now)
