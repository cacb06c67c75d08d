"""RFC 8707 `resource` at the token endpoint: it becomes the token's `aud`, only the hub's two resources are
issued, and each resource accepts only its own tokens (REST also those naming no resource)."""

import jwt
import pytest
from werkzeug.datastructures import MultiDict

from app import create_app
from app.auth.tokens import issue_token

TOKEN = "/api/v1/auth/token"
MCP = "/api/v1/mcp"
BASE = "http://localhost"  # the test client's base URL, hence the hub's base when UAIP_PUBLIC_URL is unset


@pytest.fixture()
def credentials(api_client_factory):
    client_id, secret = api_client_factory("device:read")
    return {"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret}


def audience(app, access_token):
    claims = jwt.decode(access_token, app.config["SETTINGS"].jwt_secret, algorithms=["HS256"],
                        options={"verify_aud": False})
    return claims.get("aud")


@pytest.mark.parametrize("resource, expected", [
    (BASE, BASE),
    (BASE + MCP, BASE + MCP),
    ("HTTP://LocalHost/", BASE),  # scheme and host compare lower-cased, a trailing slash is dropped
    ("http://LOCALHOST/api/v1/mcp/", BASE + MCP),
])
def test_resource_becomes_the_audience(app, client, credentials, resource, expected):
    r = client.post(TOKEN, data={**credentials, "resource": resource})
    assert r.status_code == 200, r.json
    assert audience(app, r.json["access_token"]) == expected


def test_json_body_takes_a_resource_too(app, client, credentials):
    r = client.post(TOKEN, json={**credentials, "resource": BASE + MCP})
    assert r.status_code == 200 and audience(app, r.json["access_token"]) == BASE + MCP


def test_no_resource_means_no_audience(app, client, credentials):
    r = client.post(TOKEN, data=credentials)
    assert r.status_code == 200 and audience(app, r.json["access_token"]) is None


@pytest.mark.parametrize("resource", [
    "https://localhost",  # another scheme is another resource
    "http://localhost:8443",
    "http://localhost/api/v1",
    "http://localhost/api/v1/devices",
    "http://localhost/api/v1/mcp?x=1",
    "http://localhost/api/v1/mcp#frag",
    "http://other.example/api/v1/mcp",
    "/api/v1/mcp",
    "",
    "urn:uaip:hub",
])
def test_other_resources_are_invalid_target(client, credentials, resource):
    r = client.post(TOKEN, data={**credentials, "resource": resource})
    assert r.status_code == 400
    assert r.json["error"] == "invalid_target"
    assert BASE + MCP in r.json["error_description"]  # says which resources exist
    assert r.headers["Cache-Control"] == "no-store"


def test_more_than_one_resource_is_invalid_target(client, credentials):
    r = client.post(TOKEN, data=MultiDict([*credentials.items(), ("resource", BASE), ("resource", BASE + MCP)]))
    assert r.status_code == 400 and r.json["error"] == "invalid_target"
    r = client.post(TOKEN, json={**credentials, "resource": [BASE, BASE + MCP]})
    assert r.status_code == 400 and r.json["error"] == "invalid_target"
    r = client.post(TOKEN, json={**credentials, "resource": 5})
    assert r.status_code == 400 and r.json["error"] == "invalid_target"


def test_resource_compares_against_the_configured_public_url(hub_env, api_client_factory):
    client_id, secret = api_client_factory("device:read")
    app = create_app({**hub_env, "UAIP_PUBLIC_URL": "https://hub.example.com"})
    client = app.test_client()
    form = {"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret}
    r = client.post(TOKEN, data={**form, "resource": "https://hub.example.com/api/v1/mcp"})
    assert r.status_code == 200 and audience(app, r.json["access_token"]) == "https://hub.example.com/api/v1/mcp"
    assert client.post(TOKEN, data={**form, "resource": BASE + MCP}).json["error"] == "invalid_target"


def test_rest_routes_accept_no_audience_or_the_base_and_refuse_any_other(app, client, credentials):
    for resource in (None, BASE):
        data = credentials if resource is None else {**credentials, "resource": resource}
        access_token = client.post(TOKEN, data=data).json["access_token"]
        assert client.get("/api/v1/devices", headers={"Authorization": f"Bearer {access_token}"}).status_code == 200
    mcp_token = client.post(TOKEN, data={**credentials, "resource": BASE + MCP}).json["access_token"]
    r = client.get("/api/v1/devices", headers={"Authorization": f"Bearer {mcp_token}"})
    assert r.status_code == 401 and r.json["code"] == "UNAUTHORIZED"
    assert 'error="invalid_token"' in r.headers["WWW-Authenticate"]
    # A token for another hub (signed with this hub's key, say by a misconfigured issuer) is refused as well.
    foreign = issue_token("c", ["device:read"], app.config["SETTINGS"].jwt_secret, 60, audience="https://elsewhere")[0]
    assert client.get("/api/v1/devices", headers={"Authorization": f"Bearer {foreign}"}).status_code == 401


def test_a_non_string_audience_is_an_invalid_token(app, client):
    settings = app.config["SETTINGS"]
    forged = jwt.encode({"iss": "uaip-hub", "sub": "c", "scope": "device:read", "iat": 0, "exp": 2**31,
                         "aud": [BASE]}, settings.jwt_secret, algorithm="HS256")
    assert client.get("/api/v1/devices", headers={"Authorization": f"Bearer {forged}"}).status_code == 401
