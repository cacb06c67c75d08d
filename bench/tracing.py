"""What tracing costs per request, measured under real gunicorn (run: `python -m bench.tracing`).

The same tiny view behind the hub's whole pipeline (`bench.apps:ping_full()`: request id, JSON access log,
Redis rate-limit check, metrics, headers) served three ways, with `hey` in rounds that alternate A/B/C:

- absent: the code from just before tracing was added (`git archive` of the parent of the commit that added
  app/telemetry/tracing.py), so "off" is compared with the hub as it was, not with itself;
- off: today's code, no OTEL_* variable set;
- on: today's code with OTEL_EXPORTER_OTLP_ENDPOINT pointing at a local OTLP/HTTP receiver (it reads and discards
  the batches), every request sampled (the SDK's default sampler, parentbased_always_on) and exported in batches:
  a server span plus the limiter's two Redis spans per request.

The overhead is the difference of the medians (1 connection: latency; 8 connections: the cores are saturated, so
requests per second). The machine may be shared: figures are what this run saw, not a guarantee.
"""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

from bench.apps import PING
from bench.harness import ROOT, Gunicorn, alternate_pings

SIDES = ("absent", "off", "on")


def code_before_tracing() -> Path | None:
    """A copy of the tree as it was before app/telemetry/tracing.py existed, or None outside a git checkout."""
    try:
        added = subprocess.run(["git", "log", "--diff-filter=A", "--format=%H", "--", "app/telemetry/tracing.py"],
        cwd=ROOT,
                               capture_output=True, text=True, check=True).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        return None
    if not added:
        return None
    tree = Path(tempfile.mkdtemp(prefix="uaip-bench-before-tracing-"))
    archive = subprocess.run(["git", "archive", f"{added[-1]}^"], cwd=ROOT, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    return tree


def _server(env: dict[str, str], tree: Path | None = None) -> Gunicorn:
    server = Gunicorn({**env, **({"PYTHONPATH": str(tree)} if tree else {})}, target="bench.apps:ping_full()")
    if tree is not None:
        server.args[1:1] = ["--chdir", str(tree)]  # the old tree's `app` and `bench` (PYTHONPATH wins over ROOT)
    return server


def measure(rounds: int = 3, requests_per_round: int = 1500, concurrency: int = 8) -> dict:
    from app.auth.tokens import issue_token
    from tests.support.otlp import OtlpReceiver
    from tests.support.services import NATS_URL, POSTGRES_ADMIN_URL, REDIS_BASE_URL

    before = code_before_tracing()
    if before is None:
        return {"error": "not a git checkout with the commit that added app/telemetry/tracing.py: no baseline"}
    jwt_secret = secrets.token_urlsafe(48)
    env = {
        "DATABASE_URL": POSTGRES_ADMIN_URL, "NATS_URL": NATS_URL, "REDIS_URL": REDIS_BASE_URL,
        "JWT_SECRET": jwt_secret, "UAIP_REDIS_KEY_PREFIX": f"uaip-bench-{uuid.uuid4().hex[:8]}",
        "LOG_FORMAT": "json", "LOG_LEVEL": "info", "RATE_LIMIT_PER_MINUTE": "1000000", "RATE_LIMIT_BURST": "1000000",
    }
    headers = {"Authorization": f"Bearer {issue_token('bench-client', ['device:read'], jwt_secret, 3600)[0]}"}
    try:
        with OtlpReceiver(keep_spans=False) as otlp, _server(env, before) as absent, _server(env) as off, \
                _server({**env, "OTEL_EXPORTER_OTLP_ENDPOINT": otlp.url}) as on:
            servers = dict(zip(SIDES, (absent, off, on), strict=True))
            figures: dict = alternate_pings(servers, PING, rounds=rounds, requests_per_round=requests_per_round,
                                            concurrency=concurrency, headers=headers)
            exports, exported_bytes = otlp.requests, otlp.bytes
    finally:
        shutil.rmtree(before, ignore_errors=True)
    figures["off_vs_absent_ms_c1"] = figures["off"]["c1"] - figures["absent"]["c1"]
    figures["on_vs_off_ms_c1"] = figures["on"]["c1"] - figures["off"]["c1"]
    figures["export_requests"], figures["exported_bytes"] = exports, exported_bytes
    figures.update(rounds=rounds, requests_per_round=requests_per_round, concurrency=concurrency,
                   sampling="100 % (parentbased_always_on), BatchSpanProcessor defaults, OTLP/HTTP to a local receiver")
    return figures


def main() -> None:
    print(json.dumps(measure(), indent=2))


if __name__ == "__main__":
    main()
