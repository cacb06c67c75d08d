"""The audit log: every change to clients, device types and devices and every command submitted (REST and MCP)
is recorded with its actor and request id; GET /audit filters and pages; nothing changes the log."""

from __future__ import annotations

import datetime as dt
import json
import uuid

import psycopg2
import pytest

from tests.conftest import run_cli, unique_id
from tests.support.asserting import nonempty
from tests.support.mcp import MCP, call, token_request

BASE = "http://localhost"


@pytest.fixture()
def admin(client, api_client_factory):
    """(client_id, headers) of a new admin client."""
    client_id, secret = api_client_factory("admin")
    r = client.post("/api/v1/auth/token", data={"grant_type": "client_credentials", "client_id": client_id,
                                                "client_secret": secret})
    return client_id, {"Authorization": f"Bearer {r.json['access_token']}"}


def _rid() -> str:
    return f"audit-{uuid.uuid4().hex[:12]}"


def _entries(client, headers, **query) -> list[dict]:
    r = client.get("/api/v1/audit", query_string={"limit": 1000, **query}, headers=headers)
    assert r.status_code == 200, r.json
    return r.json["entries"]


def _one(client, headers, request_id: str) -> dict:
    """The single entry a request made (found by its request id)."""
    found = [e for e in _entries(client, headers, actor=None) if e["request_id"] == request_id]
    assert len(found) == 1, found
    return found[0]


def test_client_changes_are_recorded_with_actor_and_request_id(client, admin):
    admin_id, headers = admin
    actor = f"client:{admin_id}"
    rid = _rid()
    created = client.post("/api/v1/clients", json={"name": "audited", "scopes": ["device:read"]},
                          headers={**headers, "X-Request-ID": rid}).json
    target = f"client:{created['client_id']}"
    steps = [
        ("client.create", None),
        ("client.update", lambda r: client.patch(f"/api/v1/clients/{created['client_id']}", json={"name": "x"},
                                                 headers={**headers, "X-Request-ID": r})),
        ("client.rotate_secret", lambda r: client.post(f"/api/v1/clients/{created['client_id']}/secrets",
                                                       headers={**headers, "X-Request-ID": r})),
        ("client.revoke_tokens", lambda r: client.post(f"/api/v1/clients/{created['client_id']}/revoke-tokens",
                                                       headers={**headers, "X-Request-ID": r})),
        ("client.delete", lambda r: client.delete(f"/api/v1/clients/{created['client_id']}",
                                                  headers={**headers, "X-Request-ID": r})),
    ]
    for action, act in steps:
        if act is not None:
            rid = _rid()
            assert act(rid).status_code < 300
        entry = _one(client, headers, rid)
        assert (entry["action"], entry["actor"], entry["target"]) == (action, actor, target)
    entries = _entries(client, headers, target=target)
    assert [e["action"] for e in entries] == [action for action, _ in reversed(steps)]  # newest first
    assert all(created["client_secret"] not in json.dumps(e) for e in nonempty(entries))
    assert entries[-1]["details"] == {"name": "audited", "scopes": ["device:read"]}
    assert set(entries[0]) == {"id", "at", "actor", "action", "target", "request_id", "details"}


def test_device_type_and_command_actions_are_recorded(client, admin, api_client_factory):
    admin_id, headers = admin
    actor = f"client:{admin_id}"
    type_name = unique_id("type")
    device_id = unique_id()

    def did(method, path, action, target, **kwargs):
        rid = _rid()
        r = client.open(path, method=method, headers={**headers, "X-Request-ID": rid}, **kwargs)
        assert r.status_code < 300, r.json
        entry = _one(client, headers, rid)
        assert (entry["action"], entry["actor"], entry["target"]) == (action, actor, target)
        return r, entry

    did("PUT", f"/api/v1/device-types/{type_name}", "device_type.put", f"device_type:{type_name}",
        json={"commands": {"ping": {}}})
    did("POST", "/api/v1/devices", "device.register", f"device:{device_id}",
        json={"device_id": device_id, "name": "d", "device_type": "sensor"})
    did("PATCH", f"/api/v1/devices/{device_id}", "device.update", f"device:{device_id}", json={"name": "e"})
    rid = _rid()
    r = client.post(f"/api/v1/devices/{device_id}/command", json={"command": "reboot"},
                    headers={**headers, "X-Request-ID": rid})
    assert r.status_code == 202
    entry = _one(client, headers, rid)
    assert (entry["action"], entry["actor"]) == ("command.submit", actor)
    assert entry["target"] == f"command:{r.json['message_id']}" and entry["details"]["device_id"] == device_id

    # Through MCP: the same record, the MCP client as actor.
    mcp_client_id, secret = api_client_factory("device:command")
    token = client.post("/api/v1/auth/token", data=token_request(mcp_client_id, secret, BASE + MCP)).json
    rid = _rid()
    r = client.post(MCP, data=json.dumps(call("send_command", {"device_id": device_id, "command": "reboot"})),
                    headers={"Content-Type": "application/json", "Accept": "application/json, text/event-stream",
                             "Authorization": f"Bearer {token['access_token']}", "X-Request-ID": rid,
                             "MCP-Protocol-Version": "2025-06-18"})
    assert r.status_code == 200, r.get_data(as_text=True)
    entry = _one(client, headers, rid)
    assert (entry["action"], entry["actor"]) == ("command.submit", f"client:{mcp_client_id}")

    did("DELETE", f"/api/v1/devices/{device_id}", "device.delete", f"device:{device_id}")
    did("DELETE", f"/api/v1/device-types/{type_name}", "device_type.delete", f"device_type:{type_name}")


def test_heartbeats_are_not_audited(client, admin, make_device):
    _, headers = admin
    device = make_device()
    rid = _rid()
    r = client.post(f"/api/v1/devices/{device['device_id']}/heartbeat", headers={**headers, "X-Request-ID": rid})
    assert r.status_code == 200
    assert [e for e in _entries(client, headers) if e["request_id"] == rid] == []


def test_filters_time_window_and_cursor_paging(client, admin):
    admin_id, headers = admin
    started = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    ids = [client.post("/api/v1/clients", json={"name": f"p{i}", "scopes": []}, headers=headers).json["client_id"]
           for i in range(5)]
    actor = f"client:{admin_id}"
    mine = _entries(client, headers, actor=actor, action="client.create")
    assert [e["target"] for e in mine] == [f"client:{i}" for i in reversed(ids)]

    pages, cursor = [], None
    while True:
        query = {"actor": actor, "limit": 2, **({"cursor": cursor} if cursor else {})}
        r = client.get("/api/v1/audit", query_string=query, headers=headers)
        assert r.status_code == 200
        pages.append(r.json["entries"])
        cursor = r.json["next_cursor"]
        if cursor is None:
            break
    assert [len(page) for page in pages] == [2, 2, 1]
    assert [e["id"] for page in pages for e in page] == [e["id"] for e in mine]

    assert _entries(client, headers, actor=actor, **{"from": started.isoformat()}) == mine
    assert _entries(client, headers, actor=actor, to=started.isoformat().replace("+00:00", "Z")) == []
    assert _entries(client, headers, actor="client:nobody") == []


@pytest.mark.parametrize("query", [{"limit": 0}, {"limit": 1001}, {"from": "yesterday"}, {"to": "2026-01-01"},
                                   {"cursor": "not-a-cursor"}])
def test_bad_queries_are_400(client, admin, query):
    _, headers = admin
    r = client.get("/api/v1/audit", query_string=query, headers=headers)
    assert r.status_code == 400 and r.json["code"] == "VALIDATION_ERROR"


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
def test_no_api_changes_the_log(client, admin, method):
    _, headers = admin
    r = client.open("/api/v1/audit", method=method, json={}, headers=headers)
    assert r.status_code == 405 and r.json["code"] == "METHOD_NOT_ALLOWED"


def test_audit_needs_admin(client, auth):
    assert client.get("/api/v1/audit", headers=auth).status_code == 403


def test_postgresql_refuses_to_update_entries(client, admin, database):
    _, headers = admin
    client.post("/api/v1/clients", json={"name": "u", "scopes": []}, headers=headers)
    with psycopg2.connect(database) as conn, conn.cursor() as cur:
        with pytest.raises(psycopg2.Error, match="append-only"):
            cur.execute("UPDATE audit_log SET actor = 'someone-else'")
    conn.close()


def test_cli_changes_are_recorded_as_cli(client, admin, hub_env):
    _, headers = admin
    result = run_cli(["clients", "create", "--name", "from-cli", "--scopes", "device:read", "--json"], hub_env)
    assert result.returncode == 0, result.stderr
    client_id = json.loads(result.stdout)["client_id"]
    entries = _entries(client, headers, target=f"client:{client_id}")
    assert [(e["action"], e["actor"]) for e in entries] == [("client.create", "cli")]


def test_retention_purges_only_old_entries(db):
    from app.services.audit import purge_audit

    marker = f"purge-{uuid.uuid4().hex[:8]}"

    def insert(cur):
        cur.execute("INSERT INTO audit_log (at, actor, action, target) VALUES "
                    "(now() - interval '91 days', 'cli', 'client.create', %s), "
                    "(now() - interval '89 days', 'cli', 'client.create', %s)", (f"client:{marker}-old",
                                                                                  f"client:{marker}-new"))

    db.transaction(insert)
    assert purge_audit(db, 90) >= 1

    def left(cur):
        cur.execute("SELECT target FROM audit_log WHERE target LIKE %s", (f"client:{marker}%",))
        return [row["target"] for row in cur.fetchall()]

    assert db.read(left) == [f"client:{marker}-new"]
