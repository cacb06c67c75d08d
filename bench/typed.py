"""Typed-command benchmark (a script, not a test): `python -m bench.typed [--quick]`, also `scripts/bench --only
typed_commands`.

1. Submit rate to devices of a declared type (the simulator's thermostat: `set_temperature` {value 5–35}) against
   devices of an undeclared type, the same body, the same gunicorn (2 workers × 4 threads), in alternating A/B
   rounds with fresh devices each round (a device's backlog of open commands is counted at every submit).
   Goal: typed ≥ 0.9× untyped.
2. Validation cost per command, in process: the compiled validator the submit path uses, on valid and invalid
   params (microseconds), and compiling the type on a worker's first command of a new version.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import uuid

import requests

from app.cli.examples import THERMOSTAT
from app.cli.simulate import declare_type, fetch_token, register_devices
from app.schemas.validation import compile_schema, params_errors
from bench.commands import bench_env, submit_rate_wrk
from bench.harness import BenchDatabase, Gunicorn

GOAL_RATIO = 0.9
BODY = {"command": "set_temperature", "params": {"value": 21.5}}
PARAMS_SCHEMA = THERMOSTAT.declaration["commands"]["set_temperature"]["params"]


def validation_cost_us(iterations: int) -> dict[str, float]:
    """CPU microseconds per call (this thread's CPU time: stable on a shared machine), as the submit path runs it
    (compiled validator already cached)."""
    validator = compile_schema(PARAMS_SCHEMA)
    figures = {}
    for label, params in (("valid", {"value": 21.5}), ("invalid", {"value": 90, "extra": True})):
        params_errors(validator, params, "/params")
        started = time.thread_time()
        for _ in range(iterations):
            params_errors(validator, params, "/params")
        figures[f"validate_{label}_us"] = (time.thread_time() - started) / iterations * 1e6
    started = time.thread_time()
    for _ in range(200):
        compile_schema(PARAMS_SCHEMA)
    figures["compile_us"] = (time.thread_time() - started) / 200 * 1e6
    return figures


def _round(url: str, token: str, device_type: str, seconds: int) -> float:
    prefix = f"bench-{device_type}-{uuid.uuid4().hex[:6]}"
    devices = register_devices(url, token, [f"{prefix}-{i}" for i in range(1, 51)], device_type)
    try:
        rate, _ = submit_rate_wrk(url, token, devices, seconds, BODY)
        return rate
    finally:
        for device_id in devices:  # cancels the round's backlog, so the next round starts from nothing
            requests.delete(f"{url}/api/v1/devices/{device_id}", headers={"Authorization": f"Bearer {token}"},
                            timeout=30).raise_for_status()


def run(quick: bool = False) -> dict[str, object]:
    database = BenchDatabase.create()
    try:
        client_id, secret = database.create_client("admin")
        rounds, seconds = (1, 3) if quick else (3, 8)
        typed, untyped = [], []
        with Gunicorn(bench_env(database.url)) as hub:
            token = fetch_token(hub.url, client_id, secret)
            declare_type(hub.url, token, THERMOSTAT)
            _round(hub.url, token, "undeclared", 1)  # warm-up: connections, compiled validators
            _round(hub.url, token, THERMOSTAT.device_type, 1)
            for _ in range(rounds):
                untyped.append(_round(hub.url, token, "undeclared", seconds))
                typed.append(_round(hub.url, token, THERMOSTAT.device_type, seconds))
    finally:
        database.drop()
    figures: dict[str, object] = {
        "typed_per_s": statistics.median(typed), "untyped_per_s": statistics.median(untyped),
        "typed_rounds": typed, "untyped_rounds": untyped,
        "submit_tool": "wrk -t2 -c16",
    }
    figures["ratio"] = figures["typed_per_s"] / figures["untyped_per_s"]
    figures.update(validation_cost_us(2_000 if quick else 20_000))
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="shorter runs")
    args = parser.parse_args()
    figures = run(quick=args.quick)
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
