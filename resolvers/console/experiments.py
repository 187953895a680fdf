"""Experiments: every saved recommendation experiment, its arms and what each measured.

The list of experiments is the experiment store's (names and windows, no personal
data); each one's results are the API's own ``experiment(name, metric)`` run as the
signed-in key, so the figures on the page are the API's: per arm the customers served,
impressions, clicks, click-through, conversions and conversion rate, the Wilson 95 %
interval of the chosen metric drawn as a chart, the lift against the control and the
p-value. The health page shows the running experiment's chart with the same macro.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from starlette.responses import Response

from resolvers.console.operations import run
from resolvers.console.visit import Visit

RESULTS = """query Experiment($name: String!, $metric: ExperimentMetric!) {
  experiment(name: $name, metric: $metric) {
    name start end running metric comparedVariant liftVsControl pValue
    variants { name strategy weight customers impressions clicks ctr conversions
               conversionRate orders orderRate ciLow ciHigh liftVsControl pValue }
  }
}"""
METRICS = ("CLICK_THROUGH", "CONVERSION", "ORDER")


def reference(variants: list[dict[str, Any]], metric: str) -> str | None:
    """The arm the others are compared with, as the API compares them: the control,
    except on the metrics of clicks when it is a holdout (served nothing), then the first
    arm served something."""
    compared = variants if metric == "ORDER" else [v for v in variants if v["strategy"] != "NONE"]
    return compared[0]["name"] if compared else None


def chosen_metric(raw: str | None) -> str:
    return raw if raw in METRICS else METRICS[0]


async def results(
    visit: Visit, metric: str, running_only: bool = False
) -> tuple[list[dict[str, Any]], list[str]]:
    """Each stored experiment as the API answers it (the running ones only if asked),
    newest first, and the problems met reading them."""
    found: list[dict[str, Any]] = []
    problems: list[str] = []
    now = datetime.now(UTC)
    for experiment in reversed(await visit.services.experiments.all()):
        if running_only and not experiment.running(now):
            continue  # measured only when shown
        answer = await run(visit, RESULTS, name=experiment.name, metric=metric)
        problems += [p.message for p in answer.problems]
        shown = answer.data.get("experiment")
        if shown is not None:
            found.append(shown | {"reference": reference(shown["variants"], metric)})
    return found, list(dict.fromkeys(problems))


async def experiments(visit: Visit) -> Response:
    metric = chosen_metric(visit.request.query_params.get("metric"))
    found, problems = await results(visit, metric)
    return visit.render(
        "experiments.html",
        {"experiments": found, "metric": metric, "metrics": METRICS, "problems": problems},
    )
