"""The pipeline under real gunicorn: metrics aggregated over workers (and valid for promtool), JSON logs from
gunicorn itself, and one rate limit shared by every worker of two instances on one Redis."""

import glob
import json
import os
import shutil
import subprocess
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.parser import text_string_to_metric_families

from app.auth.tokens import issue_token
from tests.support.asserting import nonempty
from tests.support.processes import HubServer
from tests.support.services import wait_for

pytestmark = pytest.mark.process

PROMTOOL_HINT = (
    "promtool not found: install it (Debian: apt-get install prometheus; scripts/lib.sh does this) "
    "or set UAIP_TEST_ALLOW_NO_PROMTOOL=1 to skip this check explicitly"
)


def promtool() -> str | None:
    found = shutil.which("promtool")
    if found is None and os.environ.get("UAIP_TEST_ALLOW_NO_PROMTOOL") != "1":
        pytest.fail(PROMTOOL_HINT)
    return found


def workers_that_counted(metrics_dir, endpoint: str) -> set[str]:
    """Per-worker files holding a uaip_http_requests_total sample for `endpoint` (proves requests were spread)."""
    files = set()
    for path in glob.glob(str(metrics_dir / "counter_*.db")):
        for entry in MmapedDict.read_all_values_from_file(path):
            key, value = entry[0], entry[1]
            if '"uaip_http_requests_total"' in key and endpoint in key and value > 0:
                files.add(os.path.basename(path))
    return files


def requests_total(url: str, endpoint: str, status: str) -> float:
    text = requests.get(f"{url}/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if (s.name == "uaip_http_requests_total" and s.labels.get("endpoint") == endpoint
                    and s.labels.get("status") == status):
                return s.value
    return 0.0


@pytest.fixture()
def env(hub_env):
    return {**hub_env, "UAIP_REDIS_KEY_PREFIX": f"uaip-test-{uuid.uuid4().hex[:10]}"}


def test_metrics_are_summed_over_workers_and_pass_promtool(env):
    tool = promtool()
    with HubServer(env, workers=2, threads=2) as hub:
        sent = 0

        def burst():
            nonlocal sent
            with ThreadPoolExecutor(8) as pool:
                statuses = list(pool.map(lambda _: requests.get(f"{hub.url}/api/v1/devices", timeout=10).status_code,
                                         range(20)))
            assert set(statuses) == {401}
            sent += len(statuses)
            return len(workers_that_counted(hub.metrics_dir, "/api/v1/devices")) >= 2

        wait_for(burst, timeout=60, interval=0, message="requests served by both workers")
        assert requests_total(hub.url, "/api/v1/devices", "401") == sent

        text = requests.get(f"{hub.url}/metrics", timeout=10).text
        for name in ("uaip_http_requests_total", "uaip_http_request_duration_seconds_bucket", "uaip_rate_limited_total",
                     "uaip_commands_total", "uaip_devices"):
            assert name in text, name
        if tool:
            check = subprocess.run([tool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
            assert check.returncode == 0 and not check.stdout.strip() and not check.stderr.strip(), (
                check.stdout + check.stderr)

        token = issue_token("client-log-check", ["device:read"], env["JWT_SECRET"], 3600)[0]
        requests.get(f"{hub.url}/api/v1/devices?limit=1", headers={"Authorization": f"Bearer {token}"}, timeout=10)

        def access_line_for_token_call():
            return [line for line in hub.json_lines()
                    if line.get("logger") == "uaip.access" and line.get("client_id") == "client-log-check"]

        wait_for(access_line_for_token_call, timeout=10, message="access line of the bearer call")
        lines = hub.json_lines()
        output = hub.output()
    assert token not in output
    assert any(line.get("logger") == "gunicorn.error" and "Booting worker" in line.get("message", "")
               for line in lines), "gunicorn's own log lines are JSON too"
    assert len([line for line in lines if line.get("logger") == "uaip.access"]) >= sent
    non_json = [line for line in output.splitlines() if line.strip() and not line.lstrip().startswith("{")]
    assert not non_json, non_json[:5]


def test_one_burst_is_shared_by_every_worker_of_two_instances(env):
    burst = 20
    limited = {**env, "RATE_LIMIT_BURST": str(burst), "RATE_LIMIT_PER_MINUTE": str(burst)}
    # per-minute = burst: the admitted count is exact for any run shorter than a minute, however loaded the host.
    token = issue_token("client-cluster", ["device:read"], env["JWT_SECRET"], 3600)[0]
    headers = {"Authorization": f"Bearer {token}"}
    with HubServer(limited, workers=2, threads=4) as first, HubServer(limited, workers=2, threads=4) as second:
        urls = [first.url, second.url] * 100

        def call(url):
            return requests.get(f"{url}/api/v1/nothing-here", headers=headers, timeout=30).status_code

        with ThreadPoolExecutor(50) as pool:
            statuses = list(pool.map(call, urls))
    assert len(statuses) == 200
    assert statuses.count(404) == burst, {s: statuses.count(s) for s in set(statuses)}
    assert statuses.count(429) == 200 - burst


def test_check_config_passes_without_a_metrics_directory(env, tmp_path):
    from tests.support.processes import BIN, ROOT, _process_env

    fresh = {**env, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "not-yet")}
    result = subprocess.run([str(BIN / "gunicorn"), "--check-config", "-c", "gunicorn.conf.py", "wsgi:app"],
                            cwd=ROOT, env=_process_env(fresh), capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_exactly_one_log_line_per_request(env, log_format):
    """Under gunicorn (whose logconfig_dict would bring its own access logger back) every request leaves one
    line: the app's access line. Each request is marked by a unique token in its path and X-Request-ID; one of
    them tries to forge a second line with encoded CR/LF, a line separator and a terminal escape."""
    token = issue_token("client-one-line", ["device:read"], env["JWT_SECRET"], 3600)[0]
    calls = [
        ("GET", "/api/v1/system/health/liveness", {}),
        ("GET", "/api/v1/devices", {}),  # 401
        ("GET", "/api/v1/devices?limit=1", {"Authorization": f"Bearer {token}"}),  # 200
        ("DELETE", "/api/v1/devices", {}),  # 405
        ("GET", "/api/v1/nothing-{id}", {}),  # 404, the token in the path too
        ("GET", "/api/v1/nothing-{id}%0D%0A2026-01-01T00:00:00.000Z%20INFO%20forged%E2%80%A8%1B%5B2J", {}),
    ]
    with HubServer({**env, "LOG_FORMAT": log_format}, workers=2, threads=2) as hub:
        ids = []
        for index, (method, path, headers) in enumerate(calls * 3):
            request_id = f"one-line-{log_format}-{index}-{uuid.uuid4().hex[:8]}"
            response = requests.request(method, hub.url + path.format(id=request_id),
                                        headers={**headers, "X-Request-ID": request_id}, timeout=10)
            assert response.headers["X-Request-ID"] == request_id
            ids.append(request_id)
        assert hub.stop() == 0  # every worker has flushed and exited: nothing more can be written
        lines = hub.output().splitlines()
    for request_id in ids:
        matching = [line for line in lines if request_id in line]
        assert len(matching) == 1, (request_id, matching)
    assert not any(line.startswith("2026-01-01") for line in lines)
    if log_format == "json":
        assert all(json.loads(line) for line in nonempty(line for line in lines if line.strip()))
    else:
        assert any("\\r\\n2026-01-01" in line and "\\u2028\\x1b[2J" in line for line in lines)
