"""The chart's PrometheusRule and Grafana dashboard, checked offline.

promtool (Debian's `prometheus` package) checks the rendered rules and runs tests/deploy/alerts/uaip-hub.test.yaml:
for every alert, synthetic series on which it fires (with its exact labels and annotations) and healthy ones on
which it stays silent. The rules must name only metrics the hub or relay defines (checked here against this
process's registry, and against live /metrics in tests/process/test_metrics_live.py), link each alert to its own
section of docs/runbook.md, and follow the thresholds given in values.
"""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import helm_python as helm
import pytest
import yaml
from prometheus_client import REGISTRY

import app.telemetry.metrics  # noqa: F401 - defines every uaip_* metric in this process's registry
from tests.support.monitoring import (
    DASHBOARD_FILE,
    KUBE_STATE_METRICS,
    NAMESPACE,
    RELEASE,
    ROOT,
    alert_rules,
    dashboard_expressions,
    merge,
    metric_names,
    names_used,
    render_monitoring,
    runbook_anchors,
)

from .conftest import CHART_DIR

TEST_FILE = Path(__file__).parent / "alerts" / "uaip-hub.test.yaml"
RUNBOOK = ROOT / "docs" / "runbook.md"
ALERTS = {
    "UaipHubHighErrorRate", "UaipHubHighLatency", "UaipHubDependencyDown", "UaipHubNatsDisconnected",
    "UaipHubRateLimitedSurge", "UaipHubCommandsFailing", "UaipHubCommandsExpiring", "UaipHubAcksNotApplied",
    "UaipHubRelayDown", "UaipHubRelayStalled", "UaipHubPodsNotReady",
}


def promtool() -> str:
    found = shutil.which("promtool")
    assert found, "promtool not found: install Debian's `prometheus` package (scripts/test does)"
    return found


@pytest.fixture(scope="module")
def chart():
    with helm.Chart.load(CHART_DIR) as loaded:
        yield loaded


@pytest.fixture(scope="module")
def rendered(chart):
    return render_monitoring(chart)


def run_promtool_tests(prometheus_rule: dict, workdir: Path) -> subprocess.CompletedProcess:
    """The rendered rules as rules.yaml beside a copy of the unit-test file, then `promtool test rules`."""
    (workdir / "rules.yaml").write_text(yaml.safe_dump(prometheus_rule["spec"], sort_keys=False))
    shutil.copy(TEST_FILE, workdir / TEST_FILE.name)
    return subprocess.run([promtool(), "test", "rules", TEST_FILE.name], cwd=workdir, capture_output=True, text=True,
                          timeout=120)


def test_rules_pass_promtool_check(rendered, tmp_path):
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump(rendered["PrometheusRule"]["spec"], sort_keys=False))
    check = subprocess.run([promtool(), "check", "rules", str(rules)], capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in check.stdout


def test_every_alert_fires_on_its_synthetic_series_and_stays_silent_on_healthy_ones(rendered, tmp_path):
    result = run_promtool_tests(rendered["PrometheusRule"], tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_unit_tests_cover_every_alert_both_ways(rendered):
    """Each alert has a case where it fires and one where it stays silent (a new alert needs both)."""
    fires, silent = set(), set()
    for group in yaml.safe_load(TEST_FILE.read_text())["tests"]:
        for case in group.get("alert_rule_test", []):
            (fires if case.get("exp_alerts") else silent).add(case["alertname"])
    names = {rule["alert"] for rule in alert_rules(rendered["PrometheusRule"])}
    assert names == ALERTS
    assert fires == ALERTS, sorted(ALERTS - fires)
    assert silent == ALERTS, sorted(ALERTS - silent)


def test_the_unit_tests_follow_the_thresholds(chart, tmp_path):
    """Not vacuous: with a higher 5xx threshold the firing case at 10% must fail."""
    raised = render_monitoring(chart, {"metrics": {"prometheusRule": {"alerts": {"highErrorRate": {"ratio": 0.2}}}}})
    result = run_promtool_tests(raised["PrometheusRule"], tmp_path)
    assert result.returncode != 0
    assert "UaipHubHighErrorRate" in result.stdout + result.stderr


def test_every_alert_says_what_where_and_links_its_runbook_section(rendered):
    anchors = runbook_anchors(RUNBOOK.read_text())
    for rule in alert_rules(rendered["PrometheusRule"]):
        name, annotations = rule["alert"], rule["annotations"]
        assert set(annotations) == {"summary", "description", "runbook_url"}, name
        assert len(annotations["summary"]) > 20 and len(annotations["description"]) > 60, name
        assert rule["labels"]["severity"] in {"critical", "warning"}, name
        assert rule["for"], name
        base, _, anchor = annotations["runbook_url"].partition("#")
        assert base.endswith("/docs/runbook.md") and anchor == name.lower(), annotations["runbook_url"]
        assert anchor in anchors, f"docs/runbook.md has no section '{name}'"


def test_alerts_are_scoped_to_the_release(rendered):
    for rule in alert_rules(rendered["PrometheusRule"]):
        expr = rule["expr"]
        assert f'namespace="{NAMESPACE}"' in expr, rule["alert"]
        if rule["alert"] != "UaipHubPodsNotReady":
            assert f'job=~"{RELEASE}|{RELEASE}-relay"' in expr, rule["alert"]


def test_every_metric_the_rules_and_dashboard_use_is_defined_by_the_hub(chart):
    defined = {sample_name for family in REGISTRY.collect() for sample_name in _sample_names(family)}
    used = names_used(chart)
    unknown = {name: sorted(where) for name, where in used.items() if name not in defined | KUBE_STATE_METRICS}
    assert not unknown, unknown
    # The dashboard covers the new metrics too, not only the old ones.
    for name in ("uaip_command_completion_seconds_bucket", "uaip_acks_total", "uaip_command_redeliveries_total",
                 "uaip_nats_connected", "uaip_relay_last_sweep_timestamp_seconds", "uaip_devices",
                 "uaip_rate_limited_total", "uaip_dependency_up", "uaip_http_request_duration_seconds_bucket"):
        assert name in used, name


def _sample_names(family) -> set[str]:
    if family.type == "histogram":
        return {f"{family.name}_bucket", f"{family.name}_count", f"{family.name}_sum"}
    if family.type == "counter":
        return {f"{family.name}_total"}
    return {family.name}


def test_thresholds_durations_and_switches_come_from_values(chart):
    custom = render_monitoring(chart, {"metrics": {"prometheusRule": {
        "runbookUrl": "https://wiki.example.com/uaip/runbook.md",
        "alertLabels": {"team": "iot"},
        "alerts": {"highLatency": {"seconds": 2.5, "for": "15m", "severity": "critical", "window": "10m"},
                   "acksNotApplied": {"minSent": 50},
                   "podsNotReady": {"enabled": False}},
    }}})["PrometheusRule"]
    rules = {rule["alert"]: rule for rule in alert_rules(custom)}
    latency = rules["UaipHubHighLatency"]
    assert latency["expr"].rstrip().endswith("> 2.5") and "[10m]" in latency["expr"]
    assert latency["for"] == "15m" and latency["labels"] == {"severity": "critical", "team": "iot"}
    assert latency["annotations"]["runbook_url"] == "https://wiki.example.com/uaip/runbook.md#uaiphubhighlatency"
    assert ">= 50" in rules["UaipHubAcksNotApplied"]["expr"]
    assert "UaipHubPodsNotReady" not in rules
    # A group whose alerts are all off is left out (an empty group is not a valid rule group).
    assert [group["name"] for group in custom["spec"]["groups"]] == ["uaip-hub.api", "uaip-hub.commands"]


def test_relay_alerts_only_when_the_relay_reports_metrics(chart):
    for relay in ({"enabled": False}, {"metricsPort": 0}):
        rule = render_monitoring(chart, {"relay": relay})["PrometheusRule"]
        names = {r["alert"] for r in alert_rules(rule)}
        assert not names & {"UaipHubRelayDown", "UaipHubRelayStalled"}, relay
        assert "UaipHubAcksNotApplied" in names  # acks may come over REST


def test_a_release_name_with_dots_is_escaped_in_the_selectors(chart, tmp_path):
    values = merge({"secrets": {"databaseUrl": "postgresql://u:p@db/uaip", "natsUrl": "nats://n:4222",
                                "jwtSecret": "x" * 40}}, {"metrics": {"prometheusRule": {"enabled": True}}})
    docs = [d for path, text in chart.render(values, name="hub.prod", namespace="iot").items()
            if path.endswith(".yaml") for d in yaml.safe_load_all(text) if d]
    (rule,) = [d for d in docs if d["kind"] == "PrometheusRule"]
    assert 'job=~"hub\\\\.prod-uaip-hub|hub\\\\.prod-uaip-hub-relay"' in rule["spec"]["groups"][0]["rules"][0]["expr"]
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump(rule["spec"]))
    check = subprocess.run([promtool(), "check", "rules", str(rules)], capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr


def test_a_custom_selector_replaces_the_default(chart):
    rule = render_monitoring(chart, {"metrics": {"prometheusRule": {"selector": 'cluster="eu1", service="hub"'}}})
    expr = alert_rules(rule["PrometheusRule"])[0]["expr"]
    assert 'cluster="eu1", service="hub", status=~"5.."' in expr and "job=~" not in expr


# --------------------------------------------------------------------------- dashboard


def test_dashboard_configmap_carries_the_file_for_the_grafana_sidecar(rendered):
    configmap = rendered["dashboard"]
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert configmap["metadata"]["namespace"] == NAMESPACE
    assert json.loads(configmap["data"]["uaip-hub.json"]) == json.loads(DASHBOARD_FILE.read_text())


def test_dashboard_namespace_labels_and_annotations_are_configurable(chart):
    configmap = render_monitoring(chart, {"metrics": {"dashboard": {
        "namespace": "monitoring", "labels": {"grafana_dashboard": "uaip"}, "annotations": {"grafana_folder": "IoT"},
    }}})["dashboard"]
    assert configmap["metadata"]["namespace"] == "monitoring"
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "uaip"
    assert configmap["metadata"]["annotations"] == {"grafana_folder": "IoT"}


def test_dashboard_has_the_panels_an_operator_needs():
    dashboard = json.loads(DASHBOARD_FILE.read_text())
    expressions = dashboard_expressions(dashboard)
    titles = " | ".join(title for title, _ in expressions).lower()
    for words in ("requests / s by endpoint", "errors / s by endpoint", "p99 latency by endpoint", "rate-limited",
                  "commands by status", "time to completion", "acks", "redeliveries", "dependency",
                  "devices by status"):
        assert words in titles, words
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert variables == {"datasource", "namespace", "job"}
    for title, expr in expressions:
        metric_names(expr)  # parses
        assert 'namespace="$namespace"' in expr and 'job=~"$job"' in expr, title


def test_monitoring_objects_are_off_by_default(chart):
    values = {"secrets": {"databaseUrl": "postgresql://u:p@db/uaip", "natsUrl": "nats://n:4222", "jwtSecret": "x" * 40}}
    docs = [d for path, text in chart.render(values, name=RELEASE, namespace=NAMESPACE).items()
            if path.endswith(".yaml") for d in yaml.safe_load_all(text) if d]
    assert not {d["kind"] for d in docs} & {"PrometheusRule", "ServiceMonitor"}
    assert not [d for d in docs if d["metadata"]["name"].endswith("-dashboard")]
