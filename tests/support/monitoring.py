"""The chart's monitoring objects (alerting rules, Grafana dashboard) and the metric names their PromQL uses.

Shared by the offline chart tests (tests/deploy/test_alerts.py) and the live check against a real gunicorn and
relay (tests/process/test_metrics_live.py). Names come from promql-parser's syntax tree, not from a regex, so a
label value or a function name is never mistaken for a metric.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import promql_parser
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART_DIR = ROOT / "helm" / "uaip-hub"
DASHBOARD_FILE = CHART_DIR / "dashboards" / "uaip-hub.json"
RELEASE, NAMESPACE = "uaip-hub", "uaip"
TEST_SECRETS = {"databaseUrl": "postgresql://u:p@db:5432/uaip", "natsUrl": "nats://nats:4222", "jwtSecret": "x" * 40}
MONITORING_ON = {"metrics": {"serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True},
                             "dashboard": {"enabled": True}}}
# Series the rules take from kube-state-metrics rather than from the hub (pods cannot report their own absence).
KUBE_STATE_METRICS = {"kube_deployment_status_replicas_unavailable"}
# Grafana's variables are not PromQL: replaced by something of the same kind before parsing.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}


def merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in override.items():
        both_dicts = isinstance(value, dict) and isinstance(out.get(key), dict)
        out[key] = merge(out[key], value) if both_dicts else copy.deepcopy(value)
    return out


def render_monitoring(chart, overrides: dict | None = None) -> dict[str, dict]:
    """Render with monitoring on; {kind: manifest} for PrometheusRule and the dashboard ConfigMap."""
    values = merge(merge({"secrets": TEST_SECRETS}, MONITORING_ON), overrides or {})
    rendered = chart.render(values, name=RELEASE, namespace=NAMESPACE)
    found = {}
    for path, text in rendered.items():
        if not path.endswith(".yaml"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc and doc.get("kind") == "PrometheusRule":
                found["PrometheusRule"] = doc
            elif doc and doc.get("kind") == "ConfigMap" and doc["metadata"]["name"].endswith("-dashboard"):
                found["dashboard"] = doc
    return found


def alert_rules(prometheus_rule: dict) -> list[dict]:
    return [rule for group in prometheus_rule["spec"]["groups"] for rule in group["rules"] if "alert" in rule]


def dashboard_expressions(dashboard: dict) -> list[tuple[str, str]]:
    """(panel title, expr) of every query in the dashboard, nested row panels included."""
    found = []

    def visit(panels):
        for panel in panels:
            for target in panel.get("targets", []):
                found.append((panel["title"], target["expr"]))
            visit(panel.get("panels", []))

    visit(dashboard["panels"])
    return found


def rule_expressions(prometheus_rule: dict) -> list[tuple[str, str]]:
    return [(rule["alert"], rule["expr"]) for rule in alert_rules(prometheus_rule)]


def metric_names(expr: str) -> set[str]:
    """Every metric name a PromQL expression selects (Grafana variables allowed)."""
    for variable, replacement in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, replacement)
    names: set[str] = set()

    def visit(node):
        if isinstance(node, promql_parser.VectorSelector):
            name = node.name or next((m.value for m in node.matchers.matchers if m.name == "__name__"), None)
            assert name, f"selector without a metric name in {expr!r}"
            names.add(name)

    promql_parser.walk(promql_parser.parse(expr), visit)
    return names


def names_used(chart) -> dict[str, set[str]]:
    """{metric name: where it is used} over the rules and the dashboard (the file and its ConfigMap agree)."""
    rendered = render_monitoring(chart)
    dashboard = json.loads(rendered["dashboard"]["data"]["uaip-hub.json"])
    used: dict[str, set[str]] = {}
    for where, expr in [*rule_expressions(rendered["PrometheusRule"]), *dashboard_expressions(dashboard)]:
        for name in metric_names(expr):
            used.setdefault(name, set()).add(where)
    return used


def exposed_sample_names(exposition: str) -> set[str]:
    """Sample names of a Prometheus text exposition (histograms give _bucket, _count, _sum)."""
    from prometheus_client.parser import text_string_to_metric_families

    return {sample.name for family in text_string_to_metric_families(exposition) for sample in family.samples}


def runbook_anchors(markdown: str) -> set[str]:
    """GitHub-style anchors of the headings of a markdown file."""
    anchors = set()
    for line in markdown.splitlines():
        match = re.match(r"^#{1,6}\s+(.*?)\s*$", line)
        if match:
            text = re.sub(r"[^\w\- ]", "", match.group(1).strip().lower())
            anchors.add(text.replace(" ", "-"))
    return anchors
