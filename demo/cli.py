"""The demo's commands, plugged into the ``gateway`` command through the ``gateway.commands``
entry point group (pyproject.toml): ``gateway demo``, ``gateway simulate-send``, and the
demo data options of ``gateway recs build`` (``--demo-history N``) and ``gateway recs
eval`` (``--demo``).

The gateway's CLI never imports this package: without the demo installed these commands
and options simply are not there.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import socket
import sys
from collections.abc import Callable
from typing import Any, NoReturn

import click
import uvicorn

from gateway.cli import friendly_errors
from gateway.cli_settings import settings_or_exit
from gateway.db import migrate as migrations
from gateway.observability.logs import configure_logging
from gateway.settings import Settings, is_loopback


def register(main: click.Group) -> None:
    """Add the demo's command and options to the ``gateway`` command group."""
    main.add_command(demo)
    main.add_command(simulate_send)
    recs = main.commands.get("recs")
    if isinstance(recs, click.Group):
        if (build := recs.commands.get("build")) is not None:
            _add_option(build, _DEMO_HISTORY, _store_demo_history)
        if (eval_ := recs.commands.get("eval")) is not None:
            _add_option(eval_, _DEMO_EVAL, _evaluate_demo)


def _add_option(
    command: click.Command,
    option: click.Option,
    before: Callable[[Any, dict[str, Any]], None],
) -> None:
    """``option`` on ``command``; when given, ``before`` runs ahead of the command."""
    if any(param.name == option.name for param in command.params):
        return  # registered already (the group is built once per process)
    command.params.insert(0, option)
    original = command.callback
    assert original is not None
    assert option.name is not None
    name = option.name

    @functools.wraps(original)
    def callback(**kwargs: Any) -> Any:
        value = kwargs.pop(name)
        if value:
            before(value, kwargs)
        return original(**kwargs)

    command.callback = callback


_DEMO_HISTORY = click.Option(
    ["--demo-history"],
    type=click.IntRange(min=1, max=100_000),
    metavar="N",
    help="First store the history of the first N demo people as events (demo databases).",
)
_DEMO_EVAL = click.Option(
    ["--demo/--no-demo"], default=True, show_default=True, help="The demo data."
)


def _store_demo_history(size: int, kwargs: dict[str, Any]) -> None:
    from demo.people.population import population
    from demo.recommendation_history import store_demo_history
    from demo.wiring import seeded_epoch
    from gateway.db.engine import create_engine, create_sessionmaker

    settings = settings_or_exit(database_url=kwargs.get("database_url"))
    # Dated as the people the database holds, if a demo seeded it.
    people = population(size, epoch=seeded_epoch(settings.database_url))

    async def run() -> int:
        engine = create_engine(settings.database_url)
        try:
            return await store_demo_history(create_sessionmaker(engine), people)
        finally:
            await engine.dispose()

    click.echo(f"stored {asyncio.run(run())} demo events")


def _evaluate_demo(_: bool, kwargs: dict[str, Any]) -> None:
    from demo.people.population import population
    from demo.recommendation_history import demo_history
    from gateway.recommendations.cli import print_report
    from gateway.recommendations.training.builder import GATEWAY_PARAMS
    from gateway.recommendations.training.evaluation import evaluate

    settings = settings_or_exit()
    history = demo_history(population())
    report = evaluate(
        history.interactions,
        GATEWAY_PARAMS,
        how="recent",
        seed=kwargs["seed"],
        k=kwargs["k"],
        categories=history.categories,
        threads=kwargs["threads"] or settings.recs_threads,
    )
    print_report("demo data (1,000 customers, events and orders)", report, kwargs["trials"])


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8000, show_default=True)
@click.option(
    "--customers",
    type=click.IntRange(min=1, max=100_000),
    default=1000,
    show_default=True,
    help="How many synthetic customers to seed.",
)
@click.option("--database-url", help="Override GATEWAY_DATABASE_URL (default: embedded SQLite).")
@click.option(
    "--upstreams-port",
    type=int,
    default=8101,
    show_default=True,
    help="First of four loopback ports for the sample upstreams (0: any free ports).",
)
@friendly_errors
def demo(
    host: str, port: int, customers: int, database_url: str | None, upstreams_port: int
) -> None:
    """Migrate and seed the embedded database, start the sample upstreams, and serve."""
    from demo.console_data import build_scores_in_background
    from demo.people.population import demo_epoch
    from demo.upstreams.runner import SERVICE_NAMES, SampleUpstreams
    from demo.wiring import (
        DEMO_API_KEY,
        ids_from_before,
        prepare,
        sample_upstreams_config,
        seeded_epoch,
    )
    from gateway.scores.model_seal import deployment_model_key
    from resolvers.app import create_app

    # The demo is the one server that accepts its own public key.
    settings = settings_or_exit(host=host, port=port, database_url=database_url, insecure_demo=True)
    configure_logging(settings.log_level)
    # Both bound before anything is seeded, so a second demo stops at once, saying which.
    listening = _listen(settings.host, settings.port, "--port")
    ports = {
        name: upstreams_port + i if upstreams_port else 0 for i, name in enumerate(SERVICE_NAMES)
    }
    # A database a demo seeded before keeps its people's dates: the samples must serve
    # the histories it holds. A new one is dated up to today.
    seeded = seeded_epoch(settings.database_url)
    samples = SampleUpstreams(size=customers, ports=ports, epoch=seeded or demo_epoch())
    try:
        samples.start()
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise
        taken = next((p for p in ports.values() if not _free(settings.host, p)), upstreams_port)
        _port_in_use(
            taken,
            "the sample upstreams use four ports from --upstreams-port; choose others "
            "with --upstreams-port N, or --upstreams-port 0 for any free ones",
        )
    with samples:  # started above; stopped however this ends
        people = samples.people
        migrations.upgrade(settings.database_url)
        added = asyncio.run(prepare(settings, people))
        example = people[0].email
        app = create_app(
            settings,
            upstreams=sample_upstreams_config(samples.base_urls),
            example_email=example,
            example_key=DEMO_API_KEY,
        )
        _print_demo_banner(settings, added, len(people), example, samples.base_urls)
        if seeded is not None and seeded < demo_epoch():
            click.echo(
                f"The demo's history runs up to {seeded:%Y-%m-%d}, when this database was "
                "seeded: for one up to today, start with a new --database-url (or in an "
                "empty directory)."
            )
        if seeded is not None and ids_from_before(settings.database_url):
            click.echo(
                "This database's customers hold the ids an earlier demo made from their "
                "e-mail addresses (an export gives those away): for ids made from nothing "
                "personal, start with a new --database-url (or in an empty directory)."
            )
        # Served meanwhile: the first start trains the propensity model (most of a minute).
        model_key = deployment_model_key(settings, insecure_demo=settings.insecure_demo)
        build_scores_in_background(settings.database_url, model_key)
        config = uvicorn.Config(
            app,
            log_config=None,
            access_log=False,
            timeout_keep_alive=int(settings.keep_alive_timeout_s),
            ws_max_size=settings.max_body_bytes,
        )
        uvicorn.Server(config).run(sockets=[listening])


@click.command("simulate-send")
@click.option(
    "--customers",
    type=click.IntRange(min=10, max=100_000),
    default=1000,
    show_default=True,
    help="How many synthetic customers to seed and mail.",
)
@click.option("--database-url", help="Override GATEWAY_DATABASE_URL (default: embedded SQLite).")
@click.option("--seed", type=int, default=25, show_default=True, help="The recipients' dice.")
@click.option("--send-id", help="The send's id (default: simulated-<UTC time>).")
@friendly_errors
def simulate_send(customers: int, database_url: str | None, seed: int, send_id: str | None) -> None:
    """Send a campaign to the demo's customers in an experiment (popular vs personal
    recommendations) through the sample ESP, and print its results."""
    from demo.simulated_send import simulate

    settings = settings_or_exit(database_url=database_url, insecure_demo=True, log_level="WARNING")
    configure_logging(settings.log_level)
    click.echo(simulate(settings, customers, seed, send_id))


def _listen(host: str, port: int, option: str) -> socket.socket:
    """A socket bound to the port, or one line naming the port and the option to change."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno != errno.EADDRINUSE:
            raise
        _port_in_use(port, f"choose another with {option} N")
    return sock


def _free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _port_in_use(port: int, advice: str) -> NoReturn:
    click.echo(f"gateway: port {port} is already in use (another demo?); {advice}", err=True)
    sys.exit(1)


def _print_demo_banner(
    settings: Settings, added: int, size: int, example: str, upstreams: dict[str, str]
) -> None:
    from demo.wiring import DEMO_API_KEY

    exposed = (
        ""
        if is_loopback(settings.host)
        else f"Warning: bound to {settings.host}, so anyone who reaches this port can use "
        "the demo's public key (GraphiQL does not pre-fill it here).\n"
    )
    click.echo(
        f"\nSeeded {added} new customers ({size} in the demo population).\n"
        "Sample upstreams: " + ", ".join(f"{k} {v}" for k, v in upstreams.items()) + "\n"
        f"GraphiQL:  http://{settings.host}:{settings.port}/graphql\n"
        f"Console:   http://{settings.host}:{settings.port}/console (sign in with the key below)\n"
        f"API key (demo only, admin): {DEMO_API_KEY}\n"
        f"{exposed}"
        "Try:\n"
        f"  curl -s http://{settings.host}:{settings.port}/graphql "
        "-H 'content-type: application/json' \\\n"
        f"    -H 'Authorization: Bearer {DEMO_API_KEY}' \\\n"
        f'    -d \'{{"query": "{{ customer(email: \\"{example}\\") '
        "{ id email firstName identities { source externalId } lifecycleStage orderCount "
        "lifetimeValue { amount currency } engagement { sessions30d } "
        "sources { upstream status latencyMs } } }\"}'\n"
    )
