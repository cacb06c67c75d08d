"""The token endpoint (RFC 6749 §4.4) and bearer-token checks on protected routes."""

import base64
import json
import threading
import time
from wsgiref.simple_server import WSGIRequestHandler, make_server

import jwt
import pytest
from authlib.integrations.requests_client import OAuth2Session

TOKEN = "/api/v1/auth/token"


def basic(user, password):
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.fixture()
def credentials(api_client_factory):
    return api_client_factory("device:read device:write")


def test_form_with_client_secret_post(client, credentials, app):
    client_id, secret = credentials
    r = client.post(TOKEN, data={"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret})
    assert r.status_code == 200
    assert r.headers["Cache-Control"] == "no-store"
    assert r.json["token_type"] == "Bearer" and r.json["expires_in"] == 3600
    assert r.json["scope"] == "device:read device:write"
    claims = jwt.decode(r.json["access_token"], app.config["SETTINGS"].jwt_secret, algorithms=["HS256"],
                        issuer="uaip-hub")
    assert claims["sub"] == client_id


def test_form_with_http_basic(client, credentials):
    r = client.post(TOKEN, data={"grant_type": "client_credentials"}, headers=basic(*credentials))
    assert r.status_code == 200 and r.json["access_token"]


def test_json_body_and_login_alias(client, credentials):
    client_id, secret = credentials
    body = {"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret}
    assert client.post(TOKEN, json=body).status_code == 200
    assert client.post("/api/v1/auth/login", json=body).status_code == 200


def test_narrower_scope_is_granted_and_scopes_not_held_are_dropped(client, credentials):
    client_id, secret = credentials
    base = {"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret}
    r = client.post(TOKEN, data={**base, "scope": "device:read"})
    assert r.status_code == 200 and r.json["scope"] == "device:read"
    r = client.post(TOKEN, data={**base, "scope": "device:read admin"})
    assert r.status_code == 200 and r.json["scope"] == "device:read"  # RFC 6749 §3.3: the held subset
    r = client.post(TOKEN, data={**base, "scope": "admin unknown:scope"})
    assert r.status_code == 400 and r.json["error"] == "invalid_scope"


@pytest.mark.parametrize(
    "data, status, error",
    [
        ({"client_id": "x", "client_secret": "y"}, 400, "invalid_request"),
        ({"grant_type": "password", "client_id": "x", "client_secret": "y"}, 400, "unsupported_grant_type"),
        ({"grant_type": "client_credentials", "client_id": "nobody", "client_secret": "y"}, 401, "invalid_client"),
        ({"grant_type": "client_credentials"}, 401, "invalid_client"),
    ],
)
def test_oauth_errors_use_rfc6749_bodies(client, data, status, error):
    r = client.post(TOKEN, data=data)
    assert r.status_code == status
    assert r.json["error"] == error and "error_description" in r.json
    if status == 401:
        assert "WWW-Authenticate" in r.headers


def test_wrong_secret_is_invalid_client(client, credentials):
    r = client.post(TOKEN, data={"grant_type": "client_credentials", "client_id": credentials[0],
                                 "client_secret": "nope"})
    assert r.status_code == 401 and r.json["error"] == "invalid_client"


def test_non_form_non_json_body_is_invalid_request(client):
    r = client.post(TOKEN, data="grant_type=client_credentials", content_type="text/plain")
    assert r.status_code == 400 and r.json["error"] == "invalid_request"


def test_inactive_client_cannot_get_a_token(client, credentials, db):
    db.transaction(lambda cur: cur.execute("UPDATE clients SET active = false WHERE client_id = %s", (credentials[0],)))
    r = client.post(TOKEN, data={"grant_type": "client_credentials"}, headers=basic(*credentials))
    assert r.status_code == 401


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, *args):
        pass


def test_authlib_oauth2_client_fetches_a_token_over_http(app, credentials):
    """A real OAuth2 client library, over a real socket, with client_secret_basic and client_secret_post."""
    server = make_server("127.0.0.1", 0, app, handler_class=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_port}"
        for method in ("client_secret_basic", "client_secret_post"):
            session = OAuth2Session(credentials[0], credentials[1], token_endpoint_auth_method=method,
                                    scope="device:read")
            token = session.fetch_token(f"{base}{TOKEN}", grant_type="client_credentials")
            assert token["token_type"] == "Bearer" and token["scope"] == "device:read"
            assert token["expires_at"] > time.time()
            r = session.get(f"{base}/api/v1/devices")
            assert r.status_code == 200, r.text
    finally:
        server.shutdown()


# --- bearer tokens on protected routes ---------------------------------------------------------------------


def test_missing_token_is_401_with_envelope(client):
    r = client.get("/api/v1/devices")
    assert r.status_code == 401 and r.json["code"] == "UNAUTHORIZED"
    assert r.headers["WWW-Authenticate"].startswith("Bearer")
    assert r.json["request_id"] == r.headers["X-Request-ID"]


@pytest.mark.parametrize("value", ["Bearer", "Bearer not-a-jwt", "Token abc", "Basic Zm9vOmJhcg=="])
def test_malformed_authorization_is_401(client, value):
    assert client.get("/api/v1/devices", headers={"Authorization": value}).status_code == 401


def test_forged_expired_and_none_alg_tokens_are_401(client, app):
    secret = app.config["SETTINGS"].jwt_secret
    now = int(time.time())
    claims = {"iss": "uaip-hub", "sub": "c", "scope": "admin", "iat": now, "jti": "j"}
    forged = jwt.encode({**claims, "exp": now + 60}, "not-the-secret" * 3, algorithm="HS256")
    expired = jwt.encode({**claims, "iat": now - 120, "exp": now - 60}, secret, algorithm="HS256")
    header = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').rstrip(b"=").decode()
    payload = base64.urlsafe_b64encode(json.dumps({**claims, "exp": now + 60}).encode()).rstrip(b"=").decode()
    for token in (forged, expired, f"{header}.{payload}."):
        assert client.get("/api/v1/devices", headers={"Authorization": f"Bearer {token}"}).status_code == 401


def test_valid_token_without_scope_is_403(client, token_for):
    token = token_for("device:read")
    r = client.post("/api/v1/devices", json={"name": "x", "device_type": "y"},
                    headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 403 and r.json["code"] == "INSUFFICIENT_SCOPE"


def test_admin_token_passes_every_scope(client, admin_auth):
    r = client.post("/api/v1/devices", json={"name": "x", "device_type": "y"}, headers=admin_auth)
    assert r.status_code == 201
