"""Desktop agents through the operator: registration (RFC 7591), authorization with PKCE, consent, the code and
refresh grants with rotation and reuse detection, revocation in the console. Flask's test client plays the browser;
tests/process/test_console_browser.py does it with Chromium and the MCP SDK."""

from __future__ import annotations

import base64
import hashlib
import secrets
from urllib.parse import parse_qs, urlencode, urlsplit

import jwt
import pytest

from tests.support.console import csrf_from, new_operator, sign_in

REDIRECT = "http://127.0.0.1:8765/callback"


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
    return verifier, challenge


def register(client, **extra) -> dict:
    body = {"client_name": "Desk Agent", "redirect_uris": [REDIRECT], "token_endpoint_auth_method": "none", **extra}
    r = client.post("/api/v1/auth/register", json=body)
    assert r.status_code == 201, r.json
    return r.json


def authorize_query(client_id: str, challenge: str, **overrides) -> str:
    params = {"response_type": "code", "client_id": client_id, "redirect_uri": REDIRECT, "code_challenge": challenge,
              "code_challenge_method": "S256", "scope": "device:read device:command", "state": "st-1",
              "resource": "http://localhost/api/v1/mcp", **overrides}
    return urlencode({key: value for key, value in params.items() if value is not None})


def consent(client, query: str, decision: str = "approve"):
    """GET the authorization page (signed in), then submit its form as the browser would."""
    page = client.get(f"/api/v1/auth/authorize?{query}")
    assert page.status_code == 200, page.get_data(as_text=True)
    html = page.get_data(as_text=True)
    fields = dict(pair for pair in _hidden_fields(html))
    return client.post("/api/v1/auth/authorize", data={**fields, "decision": decision,
                                                       "csrf_token": csrf_from(html)}), html


def _hidden_fields(html: str):
    import re

    for name, value in re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', html):
        if name != "csrf_token":
            yield name, value.replace("&amp;", "&").replace("&#34;", '"').replace("&#39;", "'")


def redirect_params(response) -> dict[str, str]:
    assert response.status_code in (302, 303), response.get_data(as_text=True)
    location = urlsplit(response.headers["Location"])
    assert f"{location.scheme}://{location.netloc}{location.path}".startswith("http://127.0.0.1:")
    return {key: values[0] for key, values in parse_qs(location.query).items()}


@pytest.fixture()
def operator_client(app, db):
    def make(role="admin"):
        client = app.test_client()
        email, password = new_operator(db, role)
        assert sign_in(client, email, password).status_code == 303
        return client, email

    return make


def exchange(client, client_id, code, verifier, redirect_uri=REDIRECT, resource=None):
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri, "client_id": client_id,
            "code_verifier": verifier}
    if resource:
        data["resource"] = resource
    return client.post("/api/v1/auth/token", data=data)


def test_registration_answers_201_and_refuses_confidential_or_remote_http(client):
    body = register(client)
    assert body["token_endpoint_auth_method"] == "none" and body["client_id"] and "client_secret" not in body
    for bad in ({"redirect_uris": ["http://evil.example/cb"]}, {"redirect_uris": []},
                {"token_endpoint_auth_method": "client_secret_basic"}, {"redirect_uris": ["https://x/cb#frag"]}):
        r = client.post("/api/v1/auth/register", json={"client_name": "x", "redirect_uris": [REDIRECT], **bad})
        assert r.status_code == 400 and r.json["error"] in ("invalid_redirect_uri", "invalid_client_metadata"), bad


def test_registered_client_names_lose_invisible_characters_and_the_consent_page_shows_what_is_stored(
        operator_client, app):
    browser, _ = operator_client("admin")
    agent = app.test_client()
    # U+202E would show "Desk Agent" reversed around a hidden word; the tag characters spell text nobody sees
    sent = "\u200bDesk\u202e Agent\u202c\U000e0041\U000e0042\ufe0f\u2060 "
    body = register(agent, client_name=sent)
    assert body["client_name"] == "Desk Agent"
    verifier, challenge = pkce()
    response, html = consent(browser, authorize_query(body["client_id"], challenge))
    assert '<span id="client-name">Desk Agent</span>' in html
    for invisible in ("\u200b", "\u202e", "\u202c", "\U000e0041", "\ufe0f", "\u2060"):
        assert invisible not in html
    redirect_params(response)
    assert "Desk Agent" in browser.get("/console/grants").get_data(as_text=True)


@pytest.mark.parametrize("name,problem", [
    ("\u200b\u202e\u202c", "visible"),  # nothing visible: refused, never stored as an empty name
    (" \ufe0f \U000e0041 ", "visible"),
    ("Desk\u0007Agent", "control"),
    ("Desk\tAgent", "control"),
    ("Desk\u007fAgent", "control"),
    (5, "string"),
    ("x" * 201, "string"),
])
def test_client_names_with_control_characters_or_nothing_visible_are_refused(client, name, problem):
    r = client.post("/api/v1/auth/register",
                    json={"client_name": name, "redirect_uris": [REDIRECT], "token_endpoint_auth_method": "none"})
    assert r.status_code == 400 and r.json["error"] == "invalid_client_metadata", r.json
    assert "client_name" in r.json["error_description"] and problem in r.json["error_description"]


@pytest.mark.parametrize("extra", [{}, {"client_name": ""}, {"client_name": None}])
def test_a_registration_without_a_name_is_an_unnamed_client(client, extra):
    r = client.post("/api/v1/auth/register",
                    json={"redirect_uris": [REDIRECT], "token_endpoint_auth_method": "none", **extra})
    assert r.status_code == 201 and r.json["client_name"] == "Unnamed client", r.json


def test_discovery_names_the_authorization_code_endpoints(client):
    document = client.get("/.well-known/oauth-authorization-server").json
    assert document["authorization_endpoint"] == "http://localhost/api/v1/auth/authorize"
    assert document["registration_endpoint"] == "http://localhost/api/v1/auth/register"
    assert document["code_challenge_methods_supported"] == ["S256"]
    assert "authorization_code" in document["grant_types_supported"]
    assert "refresh_token" in document["grant_types_supported"]


def test_full_flow_with_refresh_rotation_and_reuse_detection(operator_client, app):
    browser, email = operator_client("admin")
    agent = app.test_client()
    client_id = register(agent)["client_id"]
    verifier, challenge = pkce()
    # a different loopback port matches a registered loopback redirect URI (RFC 8252 §7.3)
    query = authorize_query(client_id, challenge, redirect_uri="http://127.0.0.1:50123/callback")
    response, html = consent(browser, query)
    assert "Desk Agent" in html and "device:command" in html and "http://localhost/api/v1/mcp" in html
    params = redirect_params(response)
    assert params["state"] == "st-1" and params["code"]

    r = exchange(agent, client_id, params["code"], verifier, "http://127.0.0.1:50123/callback",
                 resource="http://localhost/api/v1/mcp")
    assert r.status_code == 200, r.json
    tokens = r.json
    claims = jwt.decode(tokens["access_token"], options={"verify_signature": False})
    assert claims["sub"] == email and claims["client_id"] == client_id
    assert claims["aud"] == "http://localhost/api/v1/mcp" and tokens["scope"] == "device:read device:command"
    # the code works once
    again = exchange(agent, client_id, params["code"], verifier, "http://127.0.0.1:50123/callback")
    assert again.status_code == 400 and again.json["error"] == "invalid_grant"


def test_refresh_rotates_and_a_reused_refresh_token_revokes_the_grant(operator_client, app, make_device):
    browser, _ = operator_client("admin")
    agent = app.test_client()
    client_id = register(agent)["client_id"]
    verifier, challenge = pkce()
    params = redirect_params(consent(browser, authorize_query(client_id, challenge, resource=None))[0])
    first = exchange(agent, client_id, params["code"], verifier)
    assert first.status_code == 200, first.json
    device = make_device()
    rest = f"/api/v1/devices/{device['device_id']}"
    assert agent.get(rest, headers={"Authorization": f"Bearer {first.json['access_token']}"}).status_code == 200

    rotated = agent.post("/api/v1/auth/token", data={"grant_type": "refresh_token", "client_id": client_id,
                                                      "refresh_token": first.json["refresh_token"]})
    assert rotated.status_code == 200 and rotated.json["refresh_token"] != first.json["refresh_token"]
    new_access = rotated.json["access_token"]
    assert agent.get(rest, headers={"Authorization": f"Bearer {new_access}"}).status_code == 200

    reused = agent.post("/api/v1/auth/token", data={"grant_type": "refresh_token", "client_id": client_id,
                                                     "refresh_token": first.json["refresh_token"]})
    assert reused.status_code == 400 and reused.json["error"] == "invalid_grant"
    # every token of the grant is dead: both access tokens and the newest refresh token
    for access in (first.json["access_token"], new_access):
        assert agent.get(rest, headers={"Authorization": f"Bearer {access}"}).status_code == 401
    latest = agent.post("/api/v1/auth/token", data={"grant_type": "refresh_token", "client_id": client_id,
                                                     "refresh_token": rotated.json["refresh_token"]})
    assert latest.status_code == 400 and latest.json["error"] == "invalid_grant"


def test_viewer_grant_is_narrowed_to_read_scopes(operator_client, app):
    browser, email = operator_client("viewer")
    agent = app.test_client()
    client_id = register(agent)["client_id"]
    verifier, challenge = pkce()
    query = authorize_query(client_id, challenge, scope="device:read device:write device:command message:read admin")
    params = redirect_params(consent(browser, query)[0])
    r = exchange(agent, client_id, params["code"], verifier)
    assert r.status_code == 200 and r.json["scope"] == "device:read message:read"


def test_denial_plain_pkce_and_unregistered_redirects(operator_client, app):
    browser, _ = operator_client("admin")
    client_id = register(app.test_client())["client_id"]
    _, challenge = pkce()
    denied = redirect_params(consent(browser, authorize_query(client_id, challenge), decision="deny")[0])
    assert denied["error"] == "access_denied" and denied["state"] == "st-1" and "code" not in denied

    for method in ("plain", None):
        r = browser.get(f"/api/v1/auth/authorize?{authorize_query(client_id, challenge, code_challenge_method=method)}")
        params = redirect_params(r)
        assert params["error"] == "invalid_request" and "code" not in params
    r = browser.get(f"/api/v1/auth/authorize?{authorize_query(client_id, None)}")
    assert "code" not in redirect_params(r)
    # an unregistered redirect URI or client is shown, never redirected to
    r = browser.get(f"/api/v1/auth/authorize?{authorize_query(client_id, challenge, redirect_uri='https://evil.example/cb')}")
    assert r.status_code == 400 and "Location" not in r.headers
    r = browser.get(f"/api/v1/auth/authorize?{authorize_query('pub_unknown', challenge)}")
    assert r.status_code == 400
    # a loopback URI with another path does not match
    r = browser.get(f"/api/v1/auth/authorize?{authorize_query(client_id, challenge, redirect_uri='http://127.0.0.1:9/other')}")
    assert r.status_code == 400


def test_authorize_without_a_session_goes_to_sign_in_and_back(app, db):
    browser = app.test_client()
    client_id = register(browser)["client_id"]
    _, challenge = pkce()
    r = browser.get(f"/api/v1/auth/authorize?{authorize_query(client_id, challenge)}")
    assert r.status_code == 302 and r.headers["Location"].startswith("/console/signin?next=")
    email, password = new_operator(db, "admin")
    page = browser.get(r.headers["Location"])
    html = page.get_data(as_text=True)
    next_url = dict(_hidden_fields(html))["next"]
    back = browser.post("/console/signin", data={"email": email, "password": password, "next": next_url,
                                                 "csrf_token": csrf_from(html)})
    assert back.status_code == 303 and back.headers["Location"].startswith("/api/v1/auth/authorize?")
    assert browser.get(back.headers["Location"]).status_code == 200


def test_wrong_verifier_and_expired_or_foreign_codes_are_invalid_grant(operator_client, app):
    browser, _ = operator_client("admin")
    agent = app.test_client()
    client_id = register(agent)["client_id"]
    other_id = register(agent)["client_id"]
    verifier, challenge = pkce()
    params = redirect_params(consent(browser, authorize_query(client_id, challenge))[0])
    assert exchange(agent, other_id, params["code"], verifier).json["error"] == "invalid_grant"
    assert exchange(agent, client_id, params["code"], pkce()[0]).json["error"] == "invalid_grant"


def test_grant_revoked_in_the_console_ends_its_tokens(operator_client, app, make_device):
    browser, _ = operator_client("viewer")
    agent = app.test_client()
    client_id = register(agent)["client_id"]
    verifier, challenge = pkce()
    params = redirect_params(consent(browser, authorize_query(client_id, challenge, resource=None))[0])
    tokens = exchange(agent, client_id, params["code"], verifier).json
    device = make_device()
    headers = {"Authorization": f"Bearer {tokens['access_token']}"}
    assert agent.get(f"/api/v1/devices/{device['device_id']}", headers=headers).status_code == 200
    page = browser.get("/console/grants").get_data(as_text=True)
    assert "Desk Agent" in page
    import re

    action = re.search(r'action="(/console/grants/[^"]+/revoke)"', page).group(1)
    assert browser.post(action, data={"csrf_token": csrf_from(page)}).status_code == 303
    assert agent.get(f"/api/v1/devices/{device['device_id']}", headers=headers).status_code == 401


def test_unused_registrations_expire_after_a_day_used_ones_stay(operator_client, app, db):
    browser, _ = operator_client("admin")
    agent = app.test_client()
    unused, used = register(agent)["client_id"], register(agent)["client_id"]
    verifier, challenge = pkce()
    redirect_params(consent(browser, authorize_query(used, challenge))[0])
    db.transaction(lambda cur: cur.execute(
        "UPDATE oauth_public_clients SET created_at = now() - interval '25 hours' WHERE client_id IN (%s, %s)",
        (unused, used)))
    assert browser.get(f"/api/v1/auth/authorize?{authorize_query(unused, challenge)}").status_code == 400
    assert browser.get(f"/api/v1/auth/authorize?{authorize_query(used, challenge)}").status_code == 200


def test_a_code_older_than_60_seconds_is_invalid_grant(operator_client, app, db):
    browser, _ = operator_client("admin")
    agent = app.test_client()
    client_id = register(agent)["client_id"]
    verifier, challenge = pkce()
    params = redirect_params(consent(browser, authorize_query(client_id, challenge, resource=None))[0])
    db.transaction(lambda cur: cur.execute(
        "UPDATE oauth_codes SET expires_at = now() - interval '1 second' WHERE grant_id IN "
        "(SELECT grant_id FROM oauth_grants WHERE client_id = %s)", (client_id,)))
    r = exchange(agent, client_id, params["code"], verifier)
    assert r.status_code == 400 and r.json["error"] == "invalid_grant"
