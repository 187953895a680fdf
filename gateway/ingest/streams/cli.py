"""``gateway consume``: run a stream consumer until SIGINT/SIGTERM (the batch in
flight is finished first), or move the dead letters back with ``--replay-dead-letters``."""

from __future__ import annotations

import asyncio
import signal

import click

from gateway.settings import Settings, SettingsError


@click.command()
@click.option("--transport", type=click.Choice(["redis", "nats"]), help="GATEWAY_STREAM_TRANSPORT.")
@click.option("--stream", "stream_name", help="Stream name (GATEWAY_STREAM_NAME).")
@click.option("--subject", "stream_subject", help="NATS subject (GATEWAY_STREAM_SUBJECT).")
@click.option("--group", "stream_group", help="Consumer group (GATEWAY_STREAM_GROUP).")
@click.option("--consumer", "stream_consumer", help="This consumer's name in the group.")
@click.option(
    "--batch-size", "stream_batch_size", type=click.IntRange(1, 10_000), help="Per transaction."
)
@click.option("--database-url", help="Override GATEWAY_DATABASE_URL.")
@click.option(
    "--replay-dead-letters",
    is_flag=True,
    help="Move every dead-lettered message back to the stream, printing progress, and exit.",
)
def consume(replay_dead_letters: bool, transport: str | None, **overrides: object) -> None:
    """Consume Segment Track/Identify/Page messages from Redis Streams or NATS JetStream
    into the events store (at least once, deduplicated by messageId)."""
    from gateway.cli_settings import fail, settings_or_exit
    from gateway.observability.logs import configure_logging

    settings = settings_or_exit(stream_transport=transport, **overrides)
    configure_logging(settings.log_level, repeat_interval_s=settings.log_repeat_interval_s)
    try:
        if replay_dead_letters:
            moved = asyncio.run(_replay(settings))
            click.echo(f"replayed {moved} dead letters")
            return
        asyncio.run(_consume(settings))
    except SettingsError as exc:  # the upstreams file, read when the consumer starts
        fail(str(exc), 2)


async def _replay(settings: Settings) -> int:
    from gateway.ingest.streams.consumer import replay_dead_letters
    from gateway.ingest.streams.running import open_transport

    transport = open_transport(settings)

    def progress(moved: int, total: int) -> None:
        click.echo(f"  {moved}/{total} dead letters back on the stream", err=True)

    try:
        return await replay_dead_letters(transport, progress)
    finally:
        await transport.aclose()


async def _consume(settings: Settings) -> None:
    from gateway.ingest.streams.consumer import freeze_startup_heap
    from gateway.ingest.streams.running import ConsumerParts
    from gateway.observability.tracing import Tracing

    parts = ConsumerParts.open(settings, settings.load_upstreams())
    # Each stream batch a trace of its own (with its SQL and Redis), when configured.
    tracing = Tracing.open(settings)
    tracing.instrument(engine=parts.engine, redis=parts.redis.client if parts.redis else None)
    consumer = parts.consumer()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, consumer.stop)
    click.echo(
        f"consuming {settings.stream_name} ({settings.stream_transport}) as "
        f"{settings.stream_consumer} in group {settings.stream_group}",
        err=True,
    )
    freeze_startup_heap()
    try:
        await consumer.run()
    finally:
        await consumer.transport.aclose()
        tracing.close()
        await parts.aclose()
