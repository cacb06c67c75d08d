"""Two hubs on one host with the defaults: each has its own metrics directory (starting one never wipes the
other's), its own drain file beside the shared one, and two hubs told to share a metrics directory stop with one
clear line instead of corrupting each other's /metrics."""

import os
import subprocess
from pathlib import Path

import pytest
import requests

from tests.support.processes import BIN, ROOT, HubServer, _process_env
from tests.support.services import free_port, wait_for

pytestmark = pytest.mark.process

READINESS = "/api/v1/system/health/readiness"
PROBE = "/api/v1/two-hubs-probe"


def readiness(hub) -> str:
    return requests.get(hub.url + READINESS, timeout=10).json()["status"]


def probe_count(hub) -> float:
    """uaip_http_requests_total of the 404s on PROBE, from the hub's /metrics."""
    total = 0.0
    for line in requests.get(hub.url + "/metrics", timeout=10).text.splitlines():
        if line.startswith("uaip_http_requests_total{") and 'status="404"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def defaults(hub_env):
    """hub_env with the per-instance defaults left to gunicorn.conf.py (no metrics directory, no drain file)."""
    return {**hub_env, "PROMETHEUS_MULTIPROC_DIR": None, "UAIP_DRAIN_FILE": None, "LOG_FORMAT": "text"}


def test_two_hubs_on_one_host_keep_their_metrics_and_drain_apart(hub_env):
    with HubServer(defaults(hub_env), workers=1, threads=2, PROMETHEUS_MULTIPROC_DIR=None) as first:
        assert first.metrics_dir == Path(f"/tmp/uaip-metrics-{first.port}") and first.metrics_dir.is_dir()
        for _ in range(3):
            assert requests.get(first.url + PROBE, timeout=10).status_code == 404
        wait_for(lambda: probe_count(first) >= 3, message="the first hub's own requests in its /metrics")
        counted = probe_count(first)

        with HubServer(defaults(hub_env), workers=1, threads=2, PROMETHEUS_MULTIPROC_DIR=None) as second:
            assert second.metrics_dir == Path(f"/tmp/uaip-metrics-{second.port}") != first.metrics_dir
            assert probe_count(first) == counted  # the second start wiped nothing of the first's
            assert probe_count(second) == 0

            own_drain = Path(f"/tmp/uaip-draining-{first.port}")
            own_drain.touch()
            try:
                wait_for(lambda: readiness(first) == "draining", message="the first hub draining")
                assert readiness(second) == "ready"  # the other hub is not touched
            finally:
                own_drain.unlink()
            wait_for(lambda: readiness(first) == "ready", message="the first hub ready again")

            # A third hub pointed at the first's directory would wipe and share its files: it refuses to start.
            env = _process_env({**defaults(hub_env), "SERVER_HOST": "127.0.0.1", "SERVER_PORT": str(free_port()),
                                "SERVER_WORKERS": "1", "PROMETHEUS_MULTIPROC_DIR": str(first.metrics_dir)})
            done = subprocess.run([str(BIN / "gunicorn"), "-c", str(ROOT / "gunicorn.conf.py"), "wsgi:app"],
                                  cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
            output = done.stdout + done.stderr
            assert done.returncode != 0, output
            assert f"PROMETHEUS_MULTIPROC_DIR {first.metrics_dir} is in use by another running hub (pid " \
                   f"{first.pid})" in output, output
            assert probe_count(first) == counted
            assert any(name.endswith(".db") for name in os.listdir(first.metrics_dir))
