"""The MCP endpoint over raw HTTP (Flask's test client, real PostgreSQL/Redis/NATS): authentication, the
transport's refusals, JSON-RPC errors, both protocol eras, and the tools' results and failures. Every refusal is
checked to leave nothing behind; the official SDK's view is in test_mcp_client.py."""

import json

import pytest

from app import create_app
from app.auth.tokens import issue_token
from tests.conftest import ALL_SCOPES, unique_id
from tests.support.mcp import MCP, STATELESS, call, request, stateless, token_request

BASE = "http://localhost"
METADATA = f"{BASE}/.well-known/oauth-protected-resource/api/v1/mcp"


@pytest.fixture()
def mcp_auth(client, api_client_factory):
    """Authorization headers with a token issued for the MCP endpoint, for a new client with `scopes`."""

    def make(scopes: str = ALL_SCOPES) -> dict[str, str]:
        r = client.post("/api/v1/auth/token", data=token_request(*api_client_factory(scopes), BASE + MCP))
        assert r.status_code == 200, r.json
        return {"Authorization": f"Bearer {r.json['access_token']}"}

    return make


@pytest.fixture()
def headers(mcp_auth):
    return mcp_auth()


def post(client, body, headers, **kwargs):
    return client.post(MCP, data=body if isinstance(body, (bytes, str)) else json.dumps(body),
                       headers={"Content-Type": "application/json", **headers, **kwargs.pop("extra", {})}, **kwargs)


def stored_commands(db, device_id: str) -> int:
    def count(cur):
        cur.execute("SELECT count(*) AS n FROM commands WHERE device_id = %s", (device_id,))
        return cur.fetchone()["n"]

    return db.transaction(count)


def tool_result(response) -> dict:
    assert response.status_code == 200, response.get_data(as_text=True)
    assert "error" not in response.json, response.json
    return response.json["result"]


# --- authentication and the transport's refusals -------------------------------------------------------


TOOL_SCOPES = "device:read device:command message:read"  # what its tools use: never admin


def test_without_a_token_401_names_the_resource_metadata_and_the_scopes(client):
    r = post(client, request("tools/list"), {})
    assert r.status_code == 401 and r.json["code"] == "UNAUTHORIZED"
    assert r.headers["WWW-Authenticate"] == f'Bearer resource_metadata="{METADATA}", scope="{TOOL_SCOPES}"'
    assert client.get(METADATA.removeprefix(BASE)).json["resource"] == BASE + MCP  # the challenge leads somewhere


@pytest.mark.parametrize("resource", [None, BASE])
def test_tokens_for_the_rest_api_are_refused(client, api_client_factory, resource):
    form = token_request(*api_client_factory(), resource or "")
    if resource is None:
        del form["resource"]
    access_token = client.post("/api/v1/auth/token", data=form).json["access_token"]
    r = post(client, request("tools/list"), {"Authorization": f"Bearer {access_token}"})
    assert r.status_code == 401 and r.json["code"] == "UNAUTHORIZED"
    assert r.headers["WWW-Authenticate"] == \
        f'Bearer resource_metadata="{METADATA}", scope="{TOOL_SCOPES}", error="invalid_token"'


def test_forged_expired_and_foreign_tokens_are_refused(app, client):
    secret = app.config["SETTINGS"].jwt_secret
    for token in (
        issue_token("c", ["admin"], "another-secret-" * 3, 60, audience=BASE + MCP)[0],
        issue_token("c", ["admin"], secret, -10, audience=BASE + MCP)[0],
        issue_token("c", ["admin"], secret, 60, audience="https://other-hub.example/api/v1/mcp")[0],
        "not-a-jwt",
    ):
        r = post(client, request("tools/list"), {"Authorization": f"Bearer {token}"})
        assert r.status_code == 401, token
        assert r.headers["WWW-Authenticate"] == \
            f'Bearer resource_metadata="{METADATA}", scope="{TOOL_SCOPES}", error="invalid_token"'


def test_a_tool_outside_the_scopes_is_403_with_the_scope_challenge(client, mcp_auth, make_device, db):
    device = make_device()
    r = post(client, call("send_command", {"device_id": device["device_id"], "command": "x"}), mcp_auth("device:read"))
    assert r.status_code == 403 and r.json["code"] == "INSUFFICIENT_SCOPE"
    assert r.headers["WWW-Authenticate"] == \
        f'Bearer error="insufficient_scope", scope="device:command", resource_metadata="{METADATA}"'
    assert stored_commands(db, device["device_id"]) == 0


@pytest.mark.parametrize("scopes, tools", [
    ("device:read", ["list_devices", "get_device", "wait_for_events", "get_state", "get_state_history"]),
    ("message:read", ["get_command"]),
    ("device:command", ["send_command", "set_desired"]),
    ("device:write", []),
    ("device:read device:command message:read",
     ["list_devices", "get_device", "send_command", "get_command", "wait_for_events", "get_state", "set_desired",
      "get_state_history"]),
    ("admin", ["list_devices", "get_device", "send_command", "get_command", "wait_for_events", "get_state",
               "set_desired", "get_state_history"]),
])
def test_tools_list_shows_what_the_scopes_allow(client, mcp_auth, scopes, tools):
    r = post(client, request("tools/list"), mcp_auth(scopes))
    assert [tool["name"] for tool in tool_result(r)["tools"]] == tools


def test_an_origin_outside_cors_origins_is_403_and_nothing_runs(hub_env, api_client_factory, make_device, db):
    device = make_device()
    for cors, origin, allowed in (("", "https://evil.example", False),
                                  ("https://console.example", "https://evil.example", False),
                                  ("https://console.example", "https://console.example", True)):
        client = create_app({**hub_env, "CORS_ORIGINS": cors}).test_client()
        token = client.post("/api/v1/auth/token", data=token_request(*api_client_factory(), BASE + MCP)).json
        body = call("send_command", {"device_id": device["device_id"], "command": "go"})
        r = post(client, body, {"Authorization": f"Bearer {token['access_token']}", "Origin": origin})
        if allowed:
            assert r.status_code == 200 and not tool_result(r)["isError"]
        else:
            assert r.status_code == 403 and r.json["code"] == "ORIGIN_NOT_ALLOWED"
    assert stored_commands(db, device["device_id"]) == 1  # only the allowed origin's command


@pytest.mark.parametrize("method", ["GET", "DELETE", "PUT"])
def test_other_methods_are_405(client, headers, method):
    r = client.open(MCP, method=method, headers=headers)
    assert r.status_code == 405 and r.json["code"] == "METHOD_NOT_ALLOWED"
    assert "POST" in r.headers["Allow"]
    assert "Mcp-Session-Id" not in r.headers


@pytest.mark.parametrize("method", ["notifications/initialized", "notifications/cancelled", "notifications/anything"])
def test_notifications_get_202_without_a_body(client, headers, method):
    r = post(client, {"jsonrpc": "2.0", "method": method, "params": {"requestId": 1}}, headers)
    assert r.status_code == 202 and r.data == b"" and "Content-Type" not in r.headers


def test_an_oversized_body_is_413(client, headers, make_device, db):
    device = make_device()
    body = call("send_command", {"device_id": device["device_id"], "command": "x", "params": {"pad": "x" * 70_000}})
    r = post(client, body, headers)
    assert r.status_code == 413 and r.json["code"] == "PAYLOAD_TOO_LARGE"
    assert stored_commands(db, device["device_id"]) == 0


@pytest.mark.parametrize("accept, status", [
    (None, 200), ("*/*", 200), ("application/json", 200), ("application/json, text/event-stream", 200),
    ("application/*", 200), ("text/event-stream", 406), ("text/html", 406), ("application/json;q=0, */*;q=0", 406),
])
def test_accept_must_allow_json(client, headers, accept, status):
    extra = {} if accept is None else {"Accept": accept}
    r = post(client, request("ping"), headers, extra=extra)
    assert r.status_code == status
    if status == 406:
        assert r.json["code"] == "NOT_ACCEPTABLE"


def test_a_body_declared_as_something_else_is_415(client, headers):
    r = client.post(MCP, data=json.dumps(request("ping")), headers={**headers, "Content-Type": "text/plain"})
    assert r.status_code == 415 and r.json["code"] == "UNSUPPORTED_MEDIA_TYPE"


def test_rate_limited_like_every_route(hub_env, api_client_factory):
    import uuid

    app = create_app({**hub_env, "RATE_LIMIT_BURST": "2", "RATE_LIMIT_PER_MINUTE": "100",
                      "UAIP_REDIS_KEY_PREFIX": f"uaip-test-{uuid.uuid4().hex[:10]}"})
    client = app.test_client()
    client_id, _ = api_client_factory()
    token = issue_token(client_id, ["device:read"], app.config["SETTINGS"].jwt_secret, 60, audience=BASE + MCP)[0]
    statuses = [post(client, request("ping"), {"Authorization": f"Bearer {token}"}) for _ in range(3)]
    assert [r.status_code for r in statuses] == [200, 200, 429]
    assert statuses[-1].json["code"] == "RATE_LIMITED" and int(statuses[-1].headers["Retry-After"]) > 0


# --- JSON-RPC framing errors: HTTP 400, id null, nothing runs ------------------------------------------


@pytest.mark.parametrize("body, code", [
    (b"{not json", -32700),
    (b"", -32700),
    (b'{"jsonrpc": "2.0", "id": 1, "method": "ping", "params": {"x": NaN}}', -32700),
    (b"[" * 100 + b"]" * 100, -32700),  # deeper than the hub takes
    (json.dumps([{"jsonrpc": "2.0", "id": 1, "method": "ping"}]).encode(), -32600),  # batch
    (b"[]", -32600),
    (b"5", -32600),
    (b'"ping"', -32600),
    (b"null", -32600),
    (json.dumps({"jsonrpc": "2.0", "method": "tools/list"}).encode(), -32600),  # a request without id
    (json.dumps({"jsonrpc": "2.0", "id": None, "method": "tools/list"}).encode(), -32600),
    (json.dumps({"jsonrpc": "2.0", "id": 1.5, "method": "tools/list"}).encode(), -32600),
    (json.dumps({"jsonrpc": "2.0", "id": True, "method": "tools/list"}).encode(), -32600),
    (json.dumps({"jsonrpc": "1.0", "id": 1, "method": "ping"}).encode(), -32600),
    (json.dumps({"id": 1, "method": "ping"}).encode(), -32600),
    (json.dumps({"jsonrpc": "2.0", "id": 1}).encode(), -32600),  # no method
    (json.dumps({"jsonrpc": "2.0", "id": 1, "result": {}}).encode(), -32600),  # a response: we never asked
    (json.dumps({"jsonrpc": "2.0", "id": 1, "method": 7}).encode(), -32600),
    (json.dumps({"jsonrpc": "2.0", "id": 1, "method": "ping", "params": "x"}).encode(), -32600),
])
def test_malformed_messages_are_400_with_a_null_id(client, headers, body, code):
    r = post(client, body, headers)
    assert r.status_code == 400
    assert r.json["jsonrpc"] == "2.0" and r.json["id"] is None and r.json["error"]["code"] == code


def test_a_refused_batch_runs_nothing(client, headers, make_device, db):
    device = make_device()
    batch = [call("send_command", {"device_id": device["device_id"], "command": "x"})]
    assert post(client, batch, headers).status_code == 400
    body = call("send_command", {"device_id": device["device_id"], "command": "x"})
    del body["id"]
    assert post(client, body, headers).status_code == 400
    assert stored_commands(db, device["device_id"]) == 0


# --- JSON-RPC errors for a readable request: HTTP 200 (handshake era) ----------------------------------


def test_unknown_method_is_32601(client, headers):
    body = request("resources/list")
    r = post(client, body, headers)
    assert r.status_code == 200 and r.json["id"] == body["id"] and r.json["error"]["code"] == -32601


def test_unknown_tool_is_32602(client, headers):
    r = post(client, call("reboot_everything"), headers)
    assert r.status_code == 200 and r.json["error"]["code"] == -32602
    assert "reboot_everything" in r.json["error"]["message"]


@pytest.mark.parametrize("name, arguments, field", [
    ("list_devices", {"limit": "5"}, "limit"),
    ("list_devices", {"limit": 51}, "limit"),
    ("list_devices", {"status": "sleeping"}, "status"),
    ("list_devices", {"colour": "red"}, "colour"),
    ("get_device", {}, "device_id"),
    ("get_device", {"device_id": 5}, "device_id"),
    ("send_command", {"device_id": "d", "command": "x", "params": []}, "params"),
    ("send_command", {"device_id": "d", "command": "x", "wait_seconds": 31}, "wait_seconds"),
    ("send_command", {"device_id": "d", "command": "x", "idempotency_key": "é"}, "idempotency_key"),
    ("send_command", {"device_id": "d", "command": "x", "qos": 3}, "qos"),
    ("send_command", {"device_id": "d", "command": ""}, "command"),
    ("get_command", {"message_id": None}, "message_id"),
])
def test_arguments_that_do_not_match_the_input_schema_are_32602(client, headers, name, arguments, field):
    r = post(client, call(name, arguments), headers)
    assert r.status_code == 200 and r.json["error"]["code"] == -32602
    assert any(key.split(".")[0] == field for key in r.json["error"]["data"]["errors"]), r.json


def test_arguments_must_be_an_object(client, headers):
    r = post(client, request("tools/call", {"name": "list_devices", "arguments": [1]}), headers)
    assert r.status_code == 200 and r.json["error"]["code"] == -32602


# --- the handshake era ---------------------------------------------------------------------------------


@pytest.mark.parametrize("requested, answered", [
    ("2025-06-18", "2025-06-18"), ("2025-11-25", "2025-11-25"), ("2024-11-05", "2025-11-25"),
    ("2099-01-01", "2025-11-25"),
])
def test_initialize_negotiates_the_protocol_version(client, headers, requested, answered):
    body = request("initialize", {"protocolVersion": requested, "capabilities": {},
                                  "clientInfo": {"name": "t", "version": "1"}})
    r = post(client, body, headers)
    result = tool_result(r)
    assert result["protocolVersion"] == answered
    assert result["capabilities"] == {"tools": {"listChanged": False}}
    assert result["serverInfo"]["name"] == "uaip-hub" and result["instructions"]
    assert "Mcp-Session-Id" not in r.headers and r.mimetype == "application/json"


def test_initialize_without_a_version_is_32602(client, headers):
    r = post(client, request("initialize", {"capabilities": {}}), headers)
    assert r.status_code == 200 and r.json["error"]["code"] == -32602


def test_ping_and_requests_without_a_handshake(client, headers):
    """Stateless: no request depends on an earlier initialize."""
    assert tool_result(post(client, request("ping"), headers)) == {}
    assert tool_result(post(client, request("tools/list"), headers))["tools"]


@pytest.mark.parametrize("version", ["2025-03-26", "2024-11-05", "1.0", "garbage"])
def test_an_unsupported_protocol_version_header_is_400(client, headers, version):
    body = request("tools/list")
    r = post(client, body, headers, extra={"MCP-Protocol-Version": version})
    assert r.status_code == 400 and r.json["id"] == body["id"]
    assert r.json["error"]["code"] == -32022
    assert r.json["error"]["data"] == {"supported": ["2025-06-18", "2025-11-25", STATELESS], "requested": version}


@pytest.mark.parametrize("version", ["2025-06-18", "2025-11-25"])
def test_handshake_versions_in_the_header_are_served(client, headers, version):
    assert tool_result(post(client, request("ping"), headers, extra={"MCP-Protocol-Version": version})) == {}


# --- the stateless 2026-07-28 revision -----------------------------------------------------------------


def test_server_discover(client, headers):
    body, extra = stateless("server/discover")
    r = post(client, body, headers, extra=extra)
    result = tool_result(r)
    assert result["resultType"] == "complete"
    assert result["supportedVersions"] == [STATELESS]
    assert result["capabilities"] == {"tools": {"listChanged": False}}
    assert result["_meta"]["io.modelcontextprotocol/serverInfo"]["name"] == "uaip-hub"
    assert result["cacheScope"] == "public" and result["ttlMs"] >= 0
    assert "Mcp-Session-Id" not in r.headers


def test_stateless_tools_list_and_call_carry_result_type_and_cache_hints(client, headers):
    body, extra = stateless("tools/list")
    listed = tool_result(post(client, body, headers, extra=extra))
    assert listed["resultType"] == "complete" and listed["cacheScope"] == "private" and listed["ttlMs"] >= 0
    assert [tool["name"] for tool in listed["tools"]] == ["list_devices", "get_device", "send_command", "get_command",
                                                          "wait_for_events", "get_state", "set_desired",
                                                          "get_state_history"]
    body, extra = stateless("tools/call", {"name": "list_devices", "arguments": {"limit": 1}})
    called = tool_result(post(client, body, headers, extra=extra))
    assert called["resultType"] == "complete" and called["isError"] is False
    assert called["_meta"]["io.modelcontextprotocol/serverInfo"]["name"] == "uaip-hub"


def test_stateless_errors_use_that_revisions_statuses(client, headers):
    body, extra = stateless("resources/list")
    r = post(client, body, headers, extra=extra)
    assert r.status_code == 404 and r.json["error"]["code"] == -32601
    for removed in ("ping", "initialize"):
        body, extra = stateless(removed)
        assert post(client, body, headers, extra=extra).status_code == 404
    body, extra = stateless("tools/call", {"name": "nope", "arguments": {}})
    r = post(client, body, headers, extra=extra)
    assert r.status_code == 400 and r.json["error"]["code"] == -32602 and r.json["id"] == body["id"]
    body, extra = stateless("tools/call", {"name": "list_devices", "arguments": {"limit": "x"}})
    assert post(client, body, headers, extra=extra).json["error"]["code"] == -32602


def test_stateless_requests_need_their_envelope_and_matching_headers(client, headers):
    body = request("tools/list")  # no _meta
    r = post(client, body, headers, extra={"MCP-Protocol-Version": STATELESS, "Mcp-Method": "tools/list"})
    assert r.status_code == 400 and r.json["error"]["code"] == -32602
    body, extra = stateless("tools/list")
    r = post(client, body, headers, extra={**extra, "Mcp-Method": "tools/call"})
    assert r.status_code == 400 and r.json["error"]["code"] == -32020
    body, extra = stateless("tools/list")
    del extra["Mcp-Method"]
    assert post(client, body, headers, extra=extra).json["error"]["code"] == -32020
    body, extra = stateless("tools/call", {"name": "list_devices", "arguments": {}}, name_header="get_device")
    assert post(client, body, headers, extra=extra).json["error"]["code"] == -32020
    body, extra = stateless("tools/call", {"name": "list_devices", "arguments": {}},
                            name_header="=?base64?bGlzdF9kZXZpY2Vz?=")  # "list_devices", base64-wrapped
    assert tool_result(post(client, body, headers, extra=extra))["isError"] is False
    body, extra = stateless("tools/list")
    body["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"] = "2025-11-25"
    assert post(client, body, headers, extra=extra).json["error"]["code"] == -32020


def test_stateless_notifications_are_accepted(client, headers):
    r = post(client, {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 3}}, headers,
             extra={"MCP-Protocol-Version": STATELESS})
    assert r.status_code == 202


# --- tools ---------------------------------------------------------------------------------------------


def test_list_devices_filters_and_pages_without_metadata(client, headers, make_device):
    kind = unique_id("kind")
    first, second = make_device(device_type=kind, metadata={"secret": 1}), make_device(device_type=kind)
    result = tool_result(post(client, call("list_devices", {"type": kind, "limit": 1}), headers))
    assert result["structuredContent"] == {
        "devices": [{key: first[key] for key in ("device_id", "name", "device_type", "status")}],
        "total": 2, "limit": 1, "offset": 0,
    }
    assert json.loads(result["content"][0]["text"]) == result["structuredContent"]
    page_two = tool_result(post(client, call("list_devices", {"type": kind, "offset": 1}),
                                headers))["structuredContent"]
    assert [device["device_id"] for device in page_two["devices"]] == [second["device_id"]]
    pending = tool_result(post(client, call("list_devices", {"type": kind, "status": "online"}), headers))
    assert pending["structuredContent"]["total"] == 0


def test_get_device_returns_the_device_and_its_type(client, headers, make_device, auth):
    device = make_device(capabilities=["temperature"], location="roof")
    result = tool_result(post(client, call("get_device", {"device_id": device["device_id"]}), headers))
    rest = client.get(f"/api/v1/devices/{device['device_id']}", headers=auth).json
    assert result["structuredContent"] == {"device": rest, "device_type": None}
    assert json.loads(result["content"][0]["text"]) == result["structuredContent"]


def test_device_written_text_is_scrubbed_of_control_characters(client, headers, make_device, db):
    device = make_device(metadata={"note\u200f": "line1\nline2\x07\u061c"})
    # REST refuses such a name now (tests/integration/test_invisible_text.py); one stored before still shows clean.
    db.transaction(lambda cur: cur.execute("UPDATE devices SET name = %s WHERE device_id = %s",
                                           ("Boiler\u202e\u0085 room\u2066", device["device_id"])))
    result = tool_result(post(client, call("get_device", {"device_id": device["device_id"]}), headers))
    structured = result["structuredContent"]["device"]
    assert structured["name"] == "Boiler room"
    assert structured["metadata"] == {"note": "line1 line2"}  # a line break becomes a space
    text = result["content"][0]["text"]
    for character in ("\u202e", "\u0085", "\u2066", "\u200f", "\n", "\x07", "\u061c"):
        assert character not in text and character not in json.dumps(structured, ensure_ascii=False)
    listed = post(client, request("tools/list"), headers).get_data(as_text=True)
    assert "Boiler" not in listed  # device data never reaches the tool descriptions


@pytest.mark.parametrize("name, arguments, code", [
    ("get_device", {"device_id": "no-such-device"}, "DEVICE_NOT_FOUND"),
    ("send_command", {"device_id": "no-such-device", "command": "x"}, "DEVICE_NOT_FOUND"),
    ("get_command", {"message_id": "00000000-0000-0000-0000-000000000000"}, "MESSAGE_NOT_FOUND"),
    ("get_command", {"message_id": "not-a-uuid"}, "MESSAGE_NOT_FOUND"),
])
def test_unknown_devices_and_messages_are_tool_errors(client, headers, name, arguments, code):
    r = post(client, call(name, arguments), headers, extra={"X-Request-ID": "mcp-req-1"})
    result = tool_result(r)
    assert result["isError"] is True and "structuredContent" not in result
    body = json.loads(result["content"][0]["text"])
    assert body["code"] == code and body["request_id"] == "mcp-req-1"
    assert set(body) == {"error", "code", "details", "request_id"}


def test_send_command_then_get_command(client, headers, make_device, db):
    device = make_device()
    sent = tool_result(post(client, call("send_command", {"device_id": device["device_id"], "command": "set",
                                                         "params": {"value": 21}}), headers))
    message = sent["structuredContent"]
    assert sent["isError"] is False
    assert message["device_id"] == device["device_id"] and message["command"] == "set"
    assert message["params"] == {"value": 21} and message["status"] in ("queued", "sent")
    assert message["qos"] == 1 and message["priority"] == 5
    read = tool_result(post(client, call("get_command", {"message_id": message["message_id"]}), headers))
    assert read["structuredContent"]["message_id"] == message["message_id"]
    assert stored_commands(db, device["device_id"]) == 1


def test_send_command_takes_qos_priority_and_ttl(client, headers, make_device):
    device = make_device()
    sent = tool_result(post(client, call("send_command", {"device_id": device["device_id"], "command": "x",
                                                         "qos": 2, "priority": 9, "ttl_ms": 5000}), headers))
    assert sent["structuredContent"]["qos"] == 2 and sent["structuredContent"]["priority"] == 9


def test_send_command_with_an_idempotency_key(client, headers, make_device, db):
    device = make_device()
    arguments = {"device_id": device["device_id"], "command": "open", "idempotency_key": "valve-1"}
    first = tool_result(post(client, call("send_command", arguments), headers))["structuredContent"]
    again = tool_result(post(client, call("send_command", {**arguments, "wait_seconds": 0}), headers))
    assert again["structuredContent"]["message_id"] == first["message_id"]
    other = tool_result(post(client, call("send_command", {**arguments, "command": "close"}), headers))
    assert other["isError"] is True
    assert json.loads(other["content"][0]["text"])["code"] == "IDEMPOTENCY_KEY_REUSED"
    assert stored_commands(db, device["device_id"]) == 1


def test_a_full_queue_and_an_offline_device_are_tool_errors(hub_env, api_client_factory, db):
    app = create_app({**hub_env, "MAX_PENDING_COMMANDS_PER_DEVICE": "1"})
    client = app.test_client()
    client_id, secret = api_client_factory()
    rest = client.post("/api/v1/auth/token", data={"grant_type": "client_credentials", "client_id": client_id,
                                                   "client_secret": secret})
    device_id = unique_id()
    assert client.post("/api/v1/devices", json={"device_id": device_id, "name": "d", "device_type": "t"},
                       headers={"Authorization": f"Bearer {rest.json['access_token']}"}).status_code == 201
    token = client.post("/api/v1/auth/token", data=token_request(*api_client_factory(), BASE + MCP)).json
    headers = {"Authorization": f"Bearer {token['access_token']}"}
    offline = tool_result(post(client, call("send_command", {"device_id": device_id, "command": "x", "qos": 0}),
                               headers))
    assert offline["isError"] is True and json.loads(offline["content"][0]["text"])["code"] == "DEVICE_OFFLINE"
    sent = tool_result(post(client, call("send_command", {"device_id": device_id, "command": "x"}), headers))
    assert sent["isError"] is False
    full = tool_result(post(client, call("send_command", {"device_id": device_id, "command": "x"}), headers))
    assert full["isError"] is True and json.loads(full["content"][0]["text"])["code"] == "DEVICE_QUEUE_FULL"
    assert stored_commands(db, device_id) == 1


def test_every_tool_declares_schemas_and_honest_annotations(client, headers):
    tools = {tool["name"]: tool for tool in tool_result(post(client, request("tools/list"), headers))["tools"]}
    for tool in tools.values():
        assert tool["inputSchema"]["type"] == "object" and tool["outputSchema"]["type"] == "object"
        assert tool["description"] and tool["title"]
    for name in ("list_devices", "get_device", "get_command", "get_state", "get_state_history"):
        assert tools[name]["annotations"]["readOnlyHint"] is True
    assert tools["set_desired"]["annotations"]["readOnlyHint"] is False
    send = tools["send_command"]["annotations"]
    assert send["readOnlyHint"] is False and send["destructiveHint"] is True and send["idempotentHint"] is False


# --- typed commands (device types) ---------------------------------------------------------------------

THERMOSTAT = {
    "description": "A thermostat",
    "commands": {
        "set_temperature": {
            "description": "Set the target temperature",
            "params": {"type": "object", "properties": {"value": {"type": "number", "minimum": 5, "maximum": 30},
                                                        "zones": {"type": "array", "items": {"type": "integer"}}},
                       "required": ["value"], "additionalProperties": False},
            "idempotent": True,
        },
        "read": {"description": "Report the temperature", "safe": True, "idempotent": True},
    },
}


@pytest.fixture()
def thermostat(client, admin_auth, make_device):
    type_name = unique_id("thermostat")
    r = client.put(f"/api/v1/device-types/{type_name}", json=THERMOSTAT, headers=admin_auth)
    assert r.status_code == 201, r.json
    return make_device(device_type=type_name)


def test_get_device_includes_the_declared_type(client, headers, thermostat, admin_auth):
    result = tool_result(post(client, call("get_device", {"device_id": thermostat["device_id"]}), headers))
    declared = client.get(f"/api/v1/device-types/{thermostat['device_type']}", headers=admin_auth).json
    assert result["structuredContent"]["device_type"] == declared
    assert set(declared["commands"]) == {"set_temperature", "read"}


@pytest.mark.parametrize("params, pointers", [
    ({}, ["/params/value"]),
    ({"value": 900}, ["/params/value"]),
    ({"value": 20, "zones": [1, 2, "three"]}, ["/params/zones/2"]),
    ({"value": 20, "fan": True}, ["/params/fan"]),
])
def test_params_that_break_the_type_are_tool_errors_with_pointers(client, headers, thermostat, db, params, pointers):
    arguments = {"device_id": thermostat["device_id"], "command": "set_temperature", "params": params}
    result = tool_result(post(client, call("send_command", arguments), headers))
    assert result["isError"] is True and "structuredContent" not in result
    body = json.loads(result["content"][0]["text"])
    assert body["code"] == "INVALID_PARAMS"
    assert [error["pointer"] for error in body["details"]["errors"]] == pointers
    assert stored_commands(db, thermostat["device_id"]) == 0


def test_an_undeclared_command_is_a_tool_error_listing_the_declared_ones(client, headers, thermostat, db):
    arguments = {"device_id": thermostat["device_id"], "command": "self_destruct", "idempotency_key": "k-1"}
    result = tool_result(post(client, call("send_command", arguments), headers))
    body = json.loads(result["content"][0]["text"])
    assert result["isError"] is True and body["code"] == "UNKNOWN_COMMAND"
    assert sorted(body["details"]["commands"]) == ["read", "set_temperature"]
    assert stored_commands(db, thermostat["device_id"]) == 0
    # The refused command did not use up its idempotency key: the corrected command may take it.
    fixed = {**arguments, "command": "read"}
    assert tool_result(post(client, call("send_command", fixed), headers))["isError"] is False
    assert stored_commands(db, thermostat["device_id"]) == 1


def test_a_valid_typed_command_is_sent(client, headers, thermostat, db):
    arguments = {"device_id": thermostat["device_id"], "command": "set_temperature", "params": {"value": 21.5}}
    result = tool_result(post(client, call("send_command", arguments), headers))
    assert result["isError"] is False and result["structuredContent"]["params"] == {"value": 21.5}
    assert stored_commands(db, thermostat["device_id"]) == 1


def test_a_stored_command_is_answered_even_when_reading_it_back_fails(hub_env, api_client_factory, db):
    """Stored means answered: a table lock held by the test makes the waiter's re-read and the tool's read-back hit
    the statement timeout; the agent still gets its command (no error that would invite a second actuation)."""
    import threading

    import psycopg2

    from tests.support.services import wait_for

    app = create_app(hub_env)
    client = app.test_client()
    token = client.post("/api/v1/auth/token", data=token_request(*api_client_factory(), BASE + MCP)).json
    headers = {"Authorization": f"Bearer {token['access_token']}", "X-Request-ID": "mcp-stored-1"}
    admin = issue_token("c", ["admin"], app.config["SETTINGS"].jwt_secret, 60)[0]
    device_id = unique_id()
    assert client.post("/api/v1/devices", json={"device_id": device_id, "name": "d", "device_type": "t"},
                       headers={"Authorization": f"Bearer {admin}"}).status_code == 201
    answer = {}

    def agent():
        answer["response"] = post(client, call("send_command", {"device_id": device_id, "command": "open",
                                                               "params": {"n": 1}, "wait_seconds": 25}), headers)

    waiting = threading.Thread(target=agent)
    waiting.start()
    wait_for(lambda: stored_commands(db, device_id) == 1, timeout=20, message="the command stored")
    locker = psycopg2.connect(hub_env["DATABASE_URL"])
    try:
        with locker.cursor() as cur:
            cur.execute("LOCK TABLE commands IN ACCESS EXCLUSIVE MODE")
            waiting.join(timeout=30)
            assert not waiting.is_alive(), "the tool call did not answer"
    finally:
        locker.rollback()
        locker.close()
    result = tool_result(answer["response"])
    assert result["isError"] is False
    message = result["structuredContent"]
    assert message["device_id"] == device_id and message["command"] == "open" and message["params"] == {"n": 1}
    assert message["status"] in ("queued", "sent") and message["request_id"] == "mcp-stored-1"
    assert stored_commands(db, device_id) == 1


def test_send_command_waits_within_the_same_waiter_bounds_as_rest(hub_env, api_client_factory, db):
    """With no waiter slot (UAIP_MAX_WAITERS=0), a wait is not taken: the command is sent and the call returns at
    once with it, as REST's ?wait does over the bound."""
    import time

    app = create_app({**hub_env, "UAIP_MAX_WAITERS": "0"})
    client = app.test_client()
    token = client.post("/api/v1/auth/token", data=token_request(*api_client_factory(), BASE + MCP)).json
    admin = issue_token("c", ["admin"], app.config["SETTINGS"].jwt_secret, 60)[0]
    device_id = unique_id()
    assert client.post("/api/v1/devices", json={"device_id": device_id, "name": "d", "device_type": "t"},
                       headers={"Authorization": f"Bearer {admin}"}).status_code == 201
    started = time.monotonic()
    r = post(client, call("send_command", {"device_id": device_id, "command": "x", "wait_seconds": 30}),
             {"Authorization": f"Bearer {token['access_token']}"})
    assert time.monotonic() - started < 15  # nobody answers this device: a wait taken would last 30 s
    assert tool_result(r)["structuredContent"]["status"] in ("queued", "sent")
    assert stored_commands(db, device_id) == 1
