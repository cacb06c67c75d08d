"""Every error path answers with the documented JSON envelope; bad input changes nothing."""

import pytest


def assert_envelope(response, status, code):
    assert response.status_code == status
    assert response.mimetype == "application/json"
    body = response.json
    assert set(body) == {"error", "code", "details", "request_id"}
    assert body["code"] == code and isinstance(body["details"], dict) and body["error"]
    assert body["request_id"] == response.headers["X-Request-ID"]
    assert "Traceback" not in response.get_data(as_text=True)


def test_unknown_route_is_404_envelope(client):
    assert_envelope(client.get("/api/v1/nothing-here"), 404, "NOT_FOUND")
    assert_envelope(client.get("/"), 404, "NOT_FOUND")


def test_wrong_method_is_405_envelope_with_allow(client):
    r = client.delete("/api/v1/devices")
    assert_envelope(r, 405, "METHOD_NOT_ALLOWED")
    assert "GET" in r.headers["Allow"] and "GET" in r.json["details"]["allowed_methods"]


def test_body_over_the_limit_is_413(client, auth, app):
    size = app.config["SETTINGS"].max_message_size_bytes + 1
    r = client.post("/api/v1/devices", data=b"{" + b" " * size + b"}",
                    headers={**auth, "Content-Type": "application/json"})
    assert_envelope(r, 413, "PAYLOAD_TOO_LARGE")


def test_non_json_body_is_415(client, auth):
    r = client.post("/api/v1/devices", data="name=x", headers={**auth, "Content-Type": "text/plain"})
    assert_envelope(r, 415, "UNSUPPORTED_MEDIA_TYPE")


@pytest.mark.parametrize("payload", [b"{not json", b"[1, 2", b'{"name": "x",}', b"\xff\xfe", b"[" * 5000 + b"]" * 5000])
def test_malformed_json_is_400(client, auth, payload):
    r = client.post("/api/v1/devices", data=payload, headers={**auth, "Content-Type": "application/json"})
    assert_envelope(r, 400, "INVALID_JSON")


def test_json_that_is_not_an_object_is_400(client, auth):
    assert_envelope(client.post("/api/v1/devices", json=[1, 2], headers=auth), 400, "VALIDATION_ERROR")


def test_deeply_nested_metadata_is_400(client, auth):
    nested = {}
    for _ in range(40):
        nested = {"n": nested}
    r = client.post("/api/v1/devices", json={"name": "x", "device_type": "y", "metadata": nested}, headers=auth)
    assert_envelope(r, 400, "INVALID_JSON")


def test_unexpected_exception_is_500_without_details(app, client):
    @app.get("/api/v1/boom-for-test")
    def boom():
        raise RuntimeError("secret internal detail")

    r = client.get("/api/v1/boom-for-test")
    assert_envelope(r, 500, "INTERNAL_ERROR")
    assert "secret internal detail" not in r.get_data(as_text=True)


def test_request_id_is_echoed_or_replaced(client):
    echoed = client.get("/api/v1/nothing", headers={"X-Request-ID": "abc-123:x.y_z"})
    assert echoed.headers["X-Request-ID"] == "abc-123:x.y_z"
    for bad in ("has space", "x" * 129, "ünicode", ""):
        rid = client.get("/api/v1/nothing", headers={"X-Request-ID": bad}).headers["X-Request-ID"]
        assert rid != bad and len(rid) == 36


def test_database_outage_is_503_envelope(hub_env):
    from app import create_app

    app = create_app({**hub_env, "DATABASE_URL": "postgresql://postgres@127.0.0.1:1/none"})
    r = app.test_client().post("/api/v1/auth/token",
                               data={"grant_type": "client_credentials", "client_id": "a", "client_secret": "b"})
    assert_envelope(r, 503, "SERVICE_UNAVAILABLE")


def test_pooled_connections_are_reused(hub_env, db):
    """A returned connection stays in the pool: a request must not pay for a new PostgreSQL connection."""
    from app.infra.db import Database

    pool = Database(hub_env["DATABASE_URL"], maxconn=2)
    pids = set()
    for _ in range(5):
        pids.add(pool.transaction(
            lambda cur: (cur.execute("SELECT pg_backend_pid() AS pid"), cur.fetchone())[1]["pid"]))
    pool.close()
    assert len(pids) == 1


@pytest.mark.parametrize("payload", [b'{"name": "x", "device_type": "y", "metadata": {"k": "a\\u0000b"}}',
                                     b'{"name": "x", "device_type": "y", "metadata": {"\\udc36": 1}}'])
def test_text_postgresql_cannot_store_is_400_not_500(client, auth, payload):
    # Found by schemathesis: NUL and unpaired surrogates in jsonb made PostgreSQL fail the insert.
    r = client.post("/api/v1/devices", data=payload, headers={**auth, "Content-Type": "application/json"})
    assert_envelope(r, 400, "INVALID_JSON")
