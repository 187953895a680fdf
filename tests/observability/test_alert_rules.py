"""The alert rules and the dashboard that ship in ops/: promtool checks and unit-tests the
rules, every metric they and the dashboard read is one the gateway exports, each alert
has its entry in the README, and what a drifting, throttled sample upstream does to
/metrics fires the matching alerts."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.parser import text_string_to_metric_families

from demo.upstreams.runner import SampleUpstreams
from gateway.observability import metrics
from tests.conftest import GatewayFactory
from tests.gql_client import gql

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "ops" / "prometheus" / "alerts.yml"
RULE_TESTS = ROOT / "ops" / "prometheus" / "alerts_test.yml"
DASHBOARD = ROOT / "ops" / "grafana" / "gateway.json"
_METRIC = re.compile(r"\bgateway_[a-z_]+\b")


def _promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("promtool is missing (Debian's `prometheus` package); .ci/run installs it")
        pytest.skip("promtool is not installed")
    return found


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_promtool(), *args], capture_output=True, text=True, timeout=120, check=False
    )


def _exported() -> set[str]:
    """Every sample name the gateway's metrics expose."""
    names: set[str] = set()
    for value in vars(metrics).values():
        if isinstance(value, Counter):
            names.add(f"{value._name}_total")
        elif isinstance(value, Histogram):
            names.update(f"{value._name}_{suffix}" for suffix in ("bucket", "count", "sum"))
        elif isinstance(value, Gauge):
            names.add(value._name)
    return names


def _rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(RULES.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def test_promtool_checks_the_rules() -> None:
    result = _run("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_pass() -> None:
    result = _run("test", "rules", str(RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_rules_ask_for_every_alert_the_operators_expect() -> None:
    alerts = {rule["alert"] for rule in _rules() if "alert" in rule}
    assert alerts >= {
        "GatewayOperationErrorRate",
        "GatewayLatencyBudgetBurnFast",
        "GatewayLatencyBudgetBurnSlow",
        "GatewayUpstreamCircuitOpen",
        "GatewayUpstreamQuotaLow",
        "GatewayUpstreamSchemaDrift",
        "GatewayStreamLag",
        "GatewaySyncReconciliationMismatch",
        "GatewayExportFailed",
        "GatewayServedDataTooOld",
        "GatewaySyncTooOld",
        "GatewayEventsTooOld",
    }
    tested = set(re.findall(r"alertname: (\w+)", RULE_TESTS.read_text()))
    assert tested == alerts  # every alert has a unit test


def test_every_metric_the_rules_read_is_exported() -> None:
    exported = _exported()
    for rule in _rules():
        unknown = set(_METRIC.findall(rule["expr"])) - exported
        assert not unknown, (rule.get("alert") or rule.get("record"), unknown)


def test_every_dashboard_panel_reads_an_exported_metric() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exported = _exported()
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert len(panels) >= 12
    for panel in panels:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            read = set(_METRIC.findall(target["expr"]))
            assert read, (panel["title"], target["expr"])
            assert read <= exported, (panel["title"], read - exported)


def test_the_readme_says_what_each_alert_means_and_what_to_do() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("### Alerts", 1)[1].split("\n## ", 1)[0]
    for rule in _rules():
        runbook = rule.get("annotations", {}).get("runbook")
        if runbook:
            name = runbook.split(": ", 1)[1]
            assert f"**{name}**" in section, name


def _samples(text: str, upstream: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    wanted = {
        "gateway_upstream_schema_drift_total",
        "gateway_upstream_quota_remaining",
        "gateway_upstream_quota_limit",
    }
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in wanted and sample.labels.get("upstream") == upstream:
                found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def _series(name: str, labels: tuple[tuple[str, str], ...]) -> str:
    return name + "{" + ",".join(f'{k}="{v}"' for k, v in labels) + "}"


async def test_a_renamed_field_and_a_shrunk_quota_fire_their_alerts(
    gateway: GatewayFactory, samples: SampleUpstreams, tmp_path: Path
) -> None:
    """/metrics scraped before and after a sample CRM renames a field and announces a
    quota of one call, replayed to promtool: drift and quota alerts fire."""
    query = "query($e: String!) { customer(email: $e) { email lifecycleStage } }"
    async with gateway(cache_url="memory://") as client:
        await gql(client, query, e=samples.people[90].email)
        before = _samples((await client.get("/metrics")).text, "hubspot")
        samples.hubspot.faults.update(rename_fields={"lifecyclestage": "stage"}, quota_limit=1)
        for person in samples.people[91:94]:
            await gql(client, query, e=person.email)
        after = _samples((await client.get("/metrics")).text, "hubspot")
    drifted = {
        key: value
        for key, value in after.items()
        if key[0].endswith("drift_total") and value > before.get(key, 0.0)
    }
    paths = {dict(labels)["path"]: dict(labels)["kind"] for _, labels in drifted}
    assert paths == {
        "results[].properties.stage": "unknown",
        "results[].properties.lifecyclestage": "missing",
    }
    quota = {dict(labels)["quota"] for name, labels in after if "quota" in name}
    assert "interval" in quota
    input_series = [
        {
            "series": _series(name, labels),
            "values": f"{before.get((name, labels), 0.0):g} {value:g}x10",
        }
        for (name, labels), value in after.items()
    ]
    expected_drift = [
        {
            "exp_labels": {"severity": "warning", "upstream": "hubspot", "path": p, "kind": k},
            "exp_annotations": {
                "summary": f"hubspot answers {p} as {k}",
                "runbook": "README.md#alerts: GatewayUpstreamSchemaDrift",
            },
        }
        for p, k in sorted(paths.items())
    ]
    expected_quota = [
        {
            "exp_labels": {"severity": "warning", "upstream": "hubspot", "quota": "interval"},
            "exp_annotations": {
                "summary": "hubspot: under 10 % of its interval rate limit left",
                "runbook": "README.md#alerts: GatewayUpstreamQuotaLow",
            },
        }
    ]
    replay = {
        "rule_files": [str(RULES)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": input_series,
                "alert_rule_test": [
                    {
                        "eval_time": "5m",
                        "alertname": "GatewayUpstreamSchemaDrift",
                        "exp_alerts": expected_drift,
                    },
                    {
                        "eval_time": "5m",
                        "alertname": "GatewayUpstreamQuotaLow",
                        "exp_alerts": expected_quota,
                    },
                ],
            }
        ],
    }
    path = tmp_path / "replay_test.yml"
    path.write_text(yaml.safe_dump(replay))
    result = _run("test", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
