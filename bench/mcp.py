"""MCP benchmark (also part of `bench.run`, `scripts/bench --only mcp`): `send_command` without a wait through
`POST /api/v1/mcp` against `POST /api/v1/devices/{id}/command`, the REST submit it wraps.

Both sides run the same work on one gunicorn (2 workers × 4 threads, no relay: commands stay `sent`): wrk with 2
threads and 16 connections, spreading commands over 50 devices; rounds alternate REST and MCP so that load drift
hits both alike, each round on 50 fresh devices so the open-command count each submit checks starts at zero for
both. After each MCP round the stored commands are counted: a tool failure (`isError`) is still HTTP 200, so the
count, not wrk's status check, proves every call sent a command. Goal: MCP ≥ 0.8× the REST rate.
"""

from __future__ import annotations

import json

import requests

from bench.commands import bench_env, lua_list, submit_rate_wrk, wrk_rate
from bench.harness import BenchDatabase, Gunicorn, median

GOAL_RATIO = 0.8
DEVICES_PER_ROUND = 50

MCP_SCRIPT = """
local devices = {%s}
local counter = 0
wrk.method = "POST"
wrk.headers["Authorization"] = "Bearer %s"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json, text/event-stream"
request = function()
  counter = counter + 1
  local body = '{"jsonrpc":"2.0","id":' .. counter .. ',"method":"tools/call","params":{"name":"send_command",'
    .. '"arguments":{"device_id":"' .. devices[(counter %% #devices) + 1] .. '","command":"bench","params":{"n":1}}}}'
  return wrk.format(nil, "/api/v1/mcp", nil, body)
end
"""


def _token(url: str, client_id: str, secret: str, resource: str | None = None) -> str:
    form = {"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret}
    if resource:
        form["resource"] = resource
    r = requests.post(f"{url}/api/v1/auth/token", data=form, timeout=30)
    r.raise_for_status()
    return r.json()["access_token"]


def _stored(db: BenchDatabase, prefix: str) -> int:
    import psycopg2

    conn = psycopg2.connect(db.url)
    with conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM commands WHERE device_id LIKE %s", (prefix + "%",))
        count = cur.fetchone()[0]
    conn.close()
    return count


def _check_one_call(url: str, token: str, device_id: str) -> None:
    """A single send_command, read back: the scripted body is a valid call that sends a command."""
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": "send_command", "arguments": {"device_id": device_id, "command": "bench"}}}
    r = requests.post(f"{url}/api/v1/mcp", json=body, headers={"Authorization": f"Bearer {token}"}, timeout=30)
    result = r.json()["result"]
    if result["isError"]:
        raise RuntimeError(f"send_command failed: {json.dumps(result)}")


def send_command_vs_rest(db: BenchDatabase, rounds: int = 3, seconds: int = 5) -> dict:
    client_id, secret = db.create_client("admin")
    rest_rates, mcp_rates = [], []
    with Gunicorn(bench_env(db.url)) as hub:
        rest_token = _token(hub.url, client_id, secret)
        mcp_token = _token(hub.url, client_id, secret, resource=f"{hub.url}/api/v1/mcp")
        _check_one_call(hub.url, mcp_token, db.seed_devices(1, prefix="bench-mcp-check-")[0])
        for round_number in range(rounds + 1):  # round 0 warms both sides up and is not counted
            devices = db.seed_devices(DEVICES_PER_ROUND, prefix=f"bench-rest-{round_number}-")
            rest_rate, _ = submit_rate_wrk(hub.url, rest_token, devices, seconds)
            prefix = f"bench-mcp-{round_number}-"
            devices = db.seed_devices(DEVICES_PER_ROUND, prefix=prefix)
            mcp_rate, calls = wrk_rate(hub.url, MCP_SCRIPT % (lua_list(devices), mcp_token), seconds)
            stored = _stored(db, prefix)
            # wrk counts only completed responses; a request cut off at the end may still have been stored.
            if not calls <= stored <= calls + 16:
                raise RuntimeError(f"{calls} MCP calls answered but {stored} commands stored")
            if round_number:
                rest_rates.append(rest_rate)
                mcp_rates.append(mcp_rate)
    return {
        "rest_per_s": median(rest_rates), "mcp_per_s": median(mcp_rates),
        "ratio": median(mcp_rates) / median(rest_rates), "rounds": rounds, "seconds": seconds, "goal": GOAL_RATIO,
    }


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    db = BenchDatabase.create()
    try:
        f = send_command_vs_rest(db, rounds=1 if args.quick else 3, seconds=2 if args.quick else 5)
    finally:
        db.drop()
    print(f"MCP send_command {f['mcp_per_s']:.0f}/s vs REST submit {f['rest_per_s']:.0f}/s = {f['ratio']:.2f}× "
          f"(goal ≥ {GOAL_RATIO}×)")


if __name__ == "__main__":
    main()
