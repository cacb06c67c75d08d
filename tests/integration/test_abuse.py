"""Hostile input: every request gets its contract answer, never a 500, and the database is unchanged where
it must be. (Token forgery and racing If-Match PATCHes are in test_auth.py and test_devices.py.)"""

import json

import pytest

from tests.conftest import unique_id

DEVICES = "/api/v1/devices"
SQL_META = ["' OR '1'='1", "'; DROP TABLE devices; --", "\" OR \"\"=\"", "%' --", "\\'; SELECT pg_sleep(5); --", "$1", "?"]
UNICODE_OK = ["温度計", "🌡️ sensor", "Ünïcödé", "שלום", "a\u200bb"]


def device_count(db) -> int:
    def query(cur):
        cur.execute("SELECT count(*) AS n FROM devices")
        return cur.fetchone()["n"]

    return db.transaction(query)


def post_raw(client, headers, payload: bytes, path=DEVICES):
    return client.post(path, data=payload, headers={**headers, "Content-Type": "application/json"})


def assert_contract_error(response, status, code=None):
    assert response.status_code == status, response.get_data(as_text=True)[:300]
    body = response.json
    assert set(body) == {"error", "code", "details", "request_id"}
    if code:
        assert body["code"] == code


@pytest.mark.parametrize(
    "payload, status, code",
    [
        (b"", 400, "INVALID_JSON"),
        (b"null", 400, "VALIDATION_ERROR"),
        (b"\"just a string\"", 400, "VALIDATION_ERROR"),
        (b"{\"name\": \"x\"", 400, "INVALID_JSON"),
        (b"{'name': 'single quotes'}", 400, "INVALID_JSON"),
        (b"{\"name\": NaN, \"device_type\": \"x\"}", 400, "INVALID_JSON"),  # NaN is not JSON
        (b"\x00\x01\x02", 400, "INVALID_JSON"),
        (b"{\"a\":" * 10_000 + b"1" + b"}" * 10_000, 400, "INVALID_JSON"),
        (b"[" * 100_000 + b"]" * 100_000, 413, "PAYLOAD_TOO_LARGE"),
        (json.dumps({"name": "x", "device_type": "y", "metadata": {"k": "\u0000"}}).encode(), 400, "INVALID_JSON"),
        (b'{"name": "x", "device_type": "y", "metadata": {"k": "\\ud800"}}', 400, "INVALID_JSON"),
        (b'{"name": "x", "device_type": "y", "metadata": {"\\u0000": 1}}', 400, "INVALID_JSON"),
        (b'{"name": "x", "device_type": "y", "location": "\\udfff"}', 400, "INVALID_JSON"),
    ],
    ids=["empty", "null", "string", "truncated", "single-quotes", "nan", "binary", "deep-object", "huge-array",
         "nul-value", "lone-surrogate", "nul-key", "low-surrogate"],
)
def test_malformed_bodies_get_4xx_and_write_nothing(client, auth, db, payload, status, code):
    before = device_count(db)
    assert_contract_error(post_raw(client, auth, payload), status, code)
    assert device_count(db) == before


@pytest.mark.parametrize(
    "field, value",
    [("name", 12), ("name", ["x"]), ("name", True), ("device_type", None), ("capabilities", [1, 2]),
     ("capabilities", ["x"] * 65), ("capabilities", [""]), ("metadata", "text"), ("location", 5),
     ("device_id", 123), ("device_id", "é"), ("device_id", "a/b"), ("device_id", "a b"), ("device_id", ""),
     ("name", "tab\there"), ("name", "\x1b[31mred"), ("name", "")],
)
def test_wrong_types_and_control_characters_are_400(client, auth, db, field, value):
    before = device_count(db)
    body = {"name": "ok", "device_type": "ok", field: value}
    response = client.post(DEVICES, json=body, headers=auth)
    assert_contract_error(response, 400, "VALIDATION_ERROR")
    assert field in response.json["details"] or any(k.startswith(field) for k in response.json["details"])
    assert device_count(db) == before


@pytest.mark.parametrize("text", SQL_META + UNICODE_OK)
def test_sql_metacharacters_and_unicode_are_stored_verbatim(client, auth, text):
    device_id = unique_id()
    body = {"device_id": device_id, "name": text, "device_type": text[:64], "capabilities": [text[:64]],
            "location": text, "metadata": {text: text}}
    assert client.post(DEVICES, json=body, headers=auth).status_code == 201
    got = client.get(f"{DEVICES}/{device_id}", headers=auth).json
    assert (got["name"], got["device_type"], got["capabilities"], got["location"], got["metadata"]) == (
        text, text[:64], [text[:64]], text, {text: text})
    listed = client.get(DEVICES, query_string={"type": text[:64], "capability": text[:64]}, headers=auth).json
    assert device_id in [d["device_id"] for d in listed["devices"]]


@pytest.mark.parametrize("value", SQL_META + ["\x00", "x" * 129, "🌡️"])
def test_hostile_filters_never_500(client, auth, value):
    for name in ("type", "capability", "status", "limit", "offset"):
        response = client.get(DEVICES, query_string={name: value}, headers=auth)
        assert response.status_code in (200, 400), (name, value, response.status_code)
        if response.status_code == 400:
            assert response.json["code"] == "VALIDATION_ERROR"


@pytest.mark.parametrize("device_id", ["%00", "..", "%2e%2e%2fetc", "' OR 1=1 --", "é", "a" * 129, "%F0%9F%8C%A1"])
def test_hostile_path_ids_are_404(client, auth, device_id):
    for method in ("get", "patch", "delete"):
        response = getattr(client, method)(f"{DEVICES}/{device_id}", json={"name": "x"}, headers=auth)
        assert response.status_code in (404, 405), (method, device_id, response.status_code)
        assert response.json["code"] in ("DEVICE_NOT_FOUND", "NOT_FOUND", "METHOD_NOT_ALLOWED")


def test_patch_with_hostile_fields_leaves_device_unchanged(client, auth, make_device):
    device = make_device()
    path = f"{DEVICES}/{device['device_id']}"
    for body in ({"name": "\x00"}, {"metadata": {"a": "\ud800"}}, {"version": 99}, {"device_id": "other"},
                 {"capabilities": "x"}, {"name": "x" * 300}):
        response = client.patch(path, data=json.dumps(body), headers={**auth, "Content-Type": "application/json"})
        assert response.status_code == 400, body
    got = client.get(path, headers=auth).json
    assert got["version"] == 1 and got["name"] == device["name"]


@pytest.mark.parametrize(
    "header",
    ["Bearer " + "a" * 10_000, "Bearer a.b.c", "Bearer \u00e9\u00e9", "Basic !!!notbase64", "Basic " + "QQ==" * 1000,
     "bearer", "Negotiate abc"],
)
def test_hostile_authorization_headers_are_401(client, header):
    response = client.get(DEVICES, headers={"Authorization": header})
    assert_contract_error(response, 401, "UNAUTHORIZED")


def test_hostile_request_ids_are_replaced(client):
    for value in ("x" * 10_000, "a\tb", "<script>", "' OR 1=1", "id\u00e9"):
        response = client.get("/api/v1/nope", headers={"X-Request-ID": value})
        assert response.headers["X-Request-ID"] != value and len(response.headers["X-Request-ID"]) == 36
        assert response.json["request_id"] == response.headers["X-Request-ID"]


@pytest.mark.parametrize(
    "form",
    [
        {"grant_type": "client_credentials", "client_id": "' OR 1=1 --", "client_secret": "x"},
        {"grant_type": "client_credentials", "client_id": "a\x00b", "client_secret": "x"},
        {"grant_type": "client_credentials", "client_id": "x" * 10_000, "client_secret": "y" * 10_000},
        {"grant_type": "client_credentials", "client_id": "🌡️", "client_secret": "\ud800".encode("utf-8", "surrogatepass").decode("latin-1")},
        {"grant_type": "client_credentials\x00", "client_id": "a", "client_secret": "b"},
    ],
)
def test_hostile_token_requests_are_rfc6749_errors(client, form):
    response = client.post("/api/v1/auth/token", data=form)
    assert response.status_code in (400, 401)
    assert response.json["error"] in ("invalid_client", "invalid_request", "unsupported_grant_type")


def test_hostile_json_token_request(client):
    for body in ([1], {"grant_type": 5}, {"grant_type": "client_credentials", "client_id": {"$ne": None}, "client_secret": []}):
        response = client.post("/api/v1/auth/token", json=body)
        assert response.status_code in (400, 401) and "error" in response.json
