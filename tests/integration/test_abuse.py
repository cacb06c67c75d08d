"""Hostile input: every request gets its documented answer, never a 500, and the database is unchanged where
it must be. (Token forgery and racing If-Match PATCHes are in test_auth.py and test_devices.py.)"""

import json

import pytest

from tests.conftest import basic, unique_id

DEVICES = "/api/v1/devices"
SQL_META = ["' OR '1'='1", "'; DROP TABLE devices; --", "\" OR \"\"=\"", "%' --", "\\'; SELECT pg_sleep(5); --", "$1",
            "?"]
UNICODE_OK = ["温度計", "🌡 sensor", "Ünïcödé", "שלום"]  # invisible characters: test_invisible_text.py


def device_count(db) -> int:
    def query(cur):
        cur.execute("SELECT count(*) AS n FROM devices")
        return cur.fetchone()["n"]

    return db.transaction(query)


def post_raw(client, headers, payload: bytes, path=DEVICES):
    return client.post(path, data=payload, headers={**headers, "Content-Type": "application/json"})


def assert_documented_error(response, status, code=None):
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
    assert_documented_error(post_raw(client, auth, payload), status, code)
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
    assert_documented_error(response, 400, "VALIDATION_ERROR")
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
    assert_documented_error(response, 401, "UNAUTHORIZED")


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
        {"grant_type": "client_credentials", "client_id": "🌡️",
         "client_secret": "\ud800".encode("utf-8", "surrogatepass").decode("latin-1")},
        {"grant_type": "client_credentials\x00", "client_id": "a", "client_secret": "b"},
    ],
)
def test_hostile_token_requests_are_rfc6749_errors(client, form):
    response = client.post("/api/v1/auth/token", data=form)
    assert response.status_code in (400, 401)
    assert response.json["error"] in ("invalid_client", "invalid_request", "unsupported_grant_type")


def test_hostile_json_token_request(client):
    for body in ([1], {"grant_type": 5},
                 {"grant_type": "client_credentials", "client_id": {"$ne": None}, "client_secret": []}):
        response = client.post("/api/v1/auth/token", json=body)
        assert response.status_code in (400, 401) and "error" in response.json


# --- numbers that are not finite (NaN, Infinity, 1e400): not JSON, and jsonb refuses them -----------------

NON_FINITE = ["NaN", "Infinity", "-Infinity", "1e400", "-1e400"]


def raw_json(client, method, path, text, headers):
    return client.open(path, method=method, data=text.encode(), headers={**headers, "Content-Type": "application/json"})


@pytest.mark.parametrize("number", NON_FINITE)
def test_non_finite_numbers_are_400_and_change_nothing(client, auth, db, make_device, number):
    """Device metadata (register, PATCH, PUT), command params (both submit routes), REST acks, heartbeat bodies."""
    device = make_device()
    device_id, device_auth = device["device_id"], basic(device["device_id"], device["device_secret"])
    message_id = client.post(f"{DEVICES}/{device_id}/command", json={"command": "x"}, headers=auth).json["message_id"]
    before = (device_count(db), client.get(f"{DEVICES}/{device_id}", headers=auth).json,
              client.get(f"/api/v1/messages/{message_id}", headers=auth).json)
    attempts = [
        ("POST", DEVICES, f'{{"name": "n", "device_type": "t", "metadata": {{"v": {number}}}}}', auth),
        ("PATCH", f"{DEVICES}/{device_id}", f'{{"metadata": {{"nested": [1, {number}]}}}}', auth),
        ("PUT", f"{DEVICES}/{device_id}", f'{{"name": "n", "device_type": "t", "location": {{"lat": {number}}}}}',
         auth),
        ("POST", f"{DEVICES}/{device_id}/command", f'{{"command": "set", "params": {{"value": {number}}}}}', auth),
        ("POST", "/api/v1/messages", f'{{"destination": "{device_id}", "payload": {{"v": {number}}}}}', auth),
        ("POST", f"/api/v1/messages/{message_id}/ack", f'{{"status": "completed", "result": {{"v": {number}}}}}',
         device_auth),
        ("POST", f"{DEVICES}/{device_id}/heartbeat", f'{{"status": "online", "temperature": {number}}}', device_auth),
    ]
    for method, path, text, headers in attempts:
        response = raw_json(client, method, path, text, headers)
        assert_documented_error(response, 400, "INVALID_JSON")
        assert "finite" in response.json["error"], (method, path, response.json)
    after = (device_count(db), client.get(f"{DEVICES}/{device_id}", headers=auth).json,
             client.get(f"/api/v1/messages/{message_id}", headers=auth).json)
    assert after == before


def test_large_but_finite_numbers_are_stored(client, auth, make_device):
    device = make_device(metadata={"big": 1.7976931348623157e308, "small": 5e-324, "int": 10**40})
    got = client.get(f"{DEVICES}/{device['device_id']}", headers=auth).json["metadata"]
    # jsonb keeps numbers as numeric: the largest double comes back written out in digits, equal in value.
    assert (float(got["big"]), got["small"], got["int"]) == (1.7976931348623157e308, 5e-324, 10**40)


# --- the token endpoint: text no credential can contain is a malformed request, never a 500 -------------

TOKEN = "/api/v1/auth/token"


@pytest.mark.parametrize(
    "body",
    [
        b'{"grant_type": "client_credentials", "client_id": "\\ud800", "client_secret": "x"}',
        b'{"grant_type": "client_credentials", "client_id": "c", "client_secret": "\\udfff-secret"}',
        b'{"grant_type": "client_credentials", "client_id": "c", "client_secret": "s", "scope": "\\ud83d"}',
        b'{"grant_type": "client_credentials", "client_id": "c", "client_secret": NaN}',
        b'{"grant_type": "client_credentials", "client_id": "c\\u0000", "client_secret": "s"}',
    ],
    ids=["surrogate-id", "surrogate-secret", "surrogate-scope", "nan", "nul"],
)
def test_json_token_requests_with_unstorable_text_are_invalid_request(client, body):
    response = client.post(TOKEN, data=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 400, response.get_data(as_text=True)[:300]
    assert response.json["error"] == "invalid_request" and response.json["error_description"]
    assert response.headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize(
    "body",
    [
        b"grant_type=client_credentials&client_id=c&client_secret=%ED%A0%80",  # a UTF-8-encoded lone surrogate
        b"grant_type=client_credentials&client_id=%FF%FE&client_secret=s",  # not UTF-8 at all
        b"grant_type=client_credentials&client_id=c&client_secret=\xc3\x28",  # raw invalid bytes
        b"grant_type=client_credentials&client_id=c%00d&client_secret=s",  # NUL
    ],
    ids=["encoded-surrogate", "invalid-utf8", "raw-invalid-bytes", "nul"],
)
def test_form_token_requests_that_are_not_utf8_are_invalid_request(client, body):
    response = client.post(TOKEN, data=body, headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert response.status_code == 400, response.get_data(as_text=True)[:300]
    assert response.json["error"] == "invalid_request"


def test_real_credentials_with_unicode_still_work(client, api_client_factory):
    """The checks refuse only text no credential holds: a valid request with non-ASCII scope text is judged
    on its merits (invalid_scope), and a plain valid one gets its token."""
    client_id, secret = api_client_factory("device:read")
    form = {"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret}
    assert client.post(TOKEN, data=form).status_code == 200
    refused = client.post(TOKEN, data={**form, "scope": "温度計"})
    assert refused.status_code == 400 and refused.json["error"] == "invalid_scope"
