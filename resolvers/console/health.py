"""Health: is the gateway serving well, and if not, where is it hurting.

Circuits of every worker (the /readyz report), each upstream's latency, errors and
cache hit ratio, the rate-limited keys, the event stream's lag, the last sync run of
each source and the last export with their reconciliation lines, and the running
experiment's arms with their intervals as a chart: read from the
gateway's own metrics and stores (gateway/observability/overview.py). The page's
script reads it again every ``refresh`` seconds (15 unless the address says otherwise)
and swaps the figures in place, until the operator unticks the box (WCAG 2.2.1: a
page that changes on its own can be stopped); without script, a link reloads it.
"""

from __future__ import annotations

from starlette.responses import Response

from resolvers.console.experiments import chosen_metric, results
from resolvers.console.visit import Visit
from resolvers.state import state_of

REFRESH_S = 15
REFRESH_RANGE = (2, 300)


async def health(visit: Visit) -> Response:
    raw = visit.request.query_params.get("refresh", "")
    refresh = int(raw) if raw.isdigit() else REFRESH_S
    refresh = min(max(refresh, REFRESH_RANGE[0]), REFRESH_RANGE[1])
    _, readiness = await state_of(visit.request)["readiness"].answer()
    overview = await visit.services.overview.read()
    metric = chosen_metric(visit.request.query_params.get("metric"))
    # Results name no one, but the API asks profiles:read for them: a key without it
    # sees the service's health and no experiment.
    running, problems = (
        await results(visit, metric, running_only=True) if visit.can_read else ([], [])
    )
    return visit.render(
        "health.html",
        {
            "readiness": readiness,
            "overview": overview,
            "refresh_s": refresh,
            "experiments": running,
            "experiment_problems": problems,
            "metric": metric,
        },
    )
