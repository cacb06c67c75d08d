"""RFC 7009 revocation and RFC 7662 introspection, driven by Authlib as a real OAuth client over HTTP, and signing
key rotation (JWT_SECRET / JWT_PREVIOUS_SECRETS, `kid`) across two hubs."""

from __future__ import annotations

import secrets
import time

import jwt
import pytest
from authlib.integrations.requests_client import OAuth2Session

from app import create_app
from app.auth.tokens import key_id
from tests.support.wsgi_server import serving

PROBE = "/api/v1/devices?limit=1"


@pytest.fixture(scope="module")
def hub(hub_env):
    """One app over real HTTP for the module (Authlib speaks HTTP)."""
    app = create_app({**hub_env, "LOG_LEVEL": "warning"})
    with serving(app) as url:
        yield app, url


def _session(url: str, api_client_factory, scopes: str = "device:read", method: str = "client_secret_basic"):
    client_id, secret = api_client_factory(scopes)
    session = OAuth2Session(client_id, secret, token_endpoint_auth_method=method,
                            revocation_endpoint_auth_method=method)
    session.fetch_token(f"{url}/api/v1/auth/token", grant_type="client_credentials")
    return session


def _works(url: str, token: str) -> bool:
    import requests

    status = requests.get(url + PROBE, headers={"Authorization": f"Bearer {token}"}, timeout=10).status_code
    assert status in (200, 401)
    return status == 200


@pytest.mark.parametrize("method", ["client_secret_basic", "client_secret_post"])
def test_introspect_then_revoke_own_token(hub, api_client_factory, method):
    app, url = hub
    session = _session(url, api_client_factory, method=method)
    token = session.token["access_token"]

    answer = session.introspect_token(f"{url}/api/v1/auth/introspect", token=token)
    assert answer.status_code == 200 and answer.headers["Cache-Control"] == "no-store"
    body = answer.json()
    claims = jwt.decode(token, options={"verify_signature": False})
    assert body == {"active": True, "scope": "device:read", "client_id": session.client_id,
                    "sub": session.client_id, "exp": claims["exp"], "iat": claims["iat"], "jti": claims["jti"],
                    "token_type": "Bearer"}  # no aud: the token has none

    revoked = session.revoke_token(f"{url}/api/v1/auth/revoke", token=token, token_type_hint="access_token")
    assert revoked.status_code == 200
    assert not _works(url, token)
    assert session.introspect_token(f"{url}/api/v1/auth/introspect", token=token).json() == {"active": False}


def test_aud_is_reported_when_present(hub, api_client_factory):
    app, url = hub
    client_id, secret = api_client_factory("device:read")
    session = OAuth2Session(client_id, secret)
    session.fetch_token(f"{url}/api/v1/auth/token", grant_type="client_credentials", resource=url + "/api/v1/mcp")
    body = session.introspect_token(f"{url}/api/v1/auth/introspect", token=session.token["access_token"]).json()
    assert body["active"] is True and body["aud"] == url + "/api/v1/mcp"


def test_unknown_and_garbage_tokens(hub, api_client_factory):
    app, url = hub
    session = _session(url, api_client_factory)
    forged = jwt.encode({"iss": "uaip-hub", "sub": session.client_id, "iat": int(time.time()),
                         "exp": int(time.time()) + 60, "jti": "x"}, "not-the-secret-" * 3, algorithm="HS256")
    for token in ("garbage", "a.b.c", forged):
        assert session.revoke_token(f"{url}/api/v1/auth/revoke", token=token).status_code == 200
        assert session.introspect_token(f"{url}/api/v1/auth/introspect", token=token).json() == {"active": False}


def test_another_clients_token_cannot_be_revoked_or_seen_without_admin(hub, api_client_factory):
    app, url = hub
    owner, other = _session(url, api_client_factory), _session(url, api_client_factory)
    token = owner.token["access_token"]
    refused = other.revoke_token(f"{url}/api/v1/auth/revoke", token=token)
    assert refused.status_code == 400 and refused.json()["error"] == "unauthorized_client"
    assert _works(url, token)
    assert other.introspect_token(f"{url}/api/v1/auth/introspect", token=token).json() == {"active": False}

    admin = _session(url, api_client_factory, "admin")
    seen = admin.introspect_token(f"{url}/api/v1/auth/introspect", token=token).json()
    assert seen["active"] is True and seen["client_id"] == owner.client_id
    assert admin.revoke_token(f"{url}/api/v1/auth/revoke", token=token).status_code == 200
    assert not _works(url, token)


def test_client_authentication_is_required(hub, api_client_factory):
    import requests

    app, url = hub
    session = _session(url, api_client_factory)
    token = session.token["access_token"]
    for path in ("/api/v1/auth/revoke", "/api/v1/auth/introspect"):
        r = requests.post(url + path, data={"token": token}, timeout=10)
        assert r.status_code == 401 and r.json()["error"] == "invalid_client" and "WWW-Authenticate" in r.headers
        r = requests.post(url + path, data={"token": token}, auth=(session.client_id, "wrong"), timeout=10)
        assert r.status_code == 401 and r.json()["error"] == "invalid_client"
        r = requests.post(url + path, data={}, auth=(session.client_id, session.client_secret), timeout=10)
        assert r.status_code == 400 and r.json()["error"] == "invalid_request"
    assert _works(url, token)


def test_disabled_client_cannot_use_either_endpoint(hub, api_client_factory):
    import requests

    app, url = hub
    session = _session(url, api_client_factory)
    admin = _session(url, api_client_factory, "admin")
    r = requests.patch(f"{url}/api/v1/clients/{session.client_id}", json={"disabled": True},
                       headers={"Authorization": f"Bearer {admin.token['access_token']}"}, timeout=10)
    assert r.status_code == 200
    r = session.introspect_token(f"{url}/api/v1/auth/introspect", token=session.token["access_token"])
    assert r.status_code == 401


# --- signing keys ------------------------------------------------------------------------------------------


def _app(hub_env, **overrides):
    return create_app({**hub_env, **overrides})


def _token(test_client, api_client_factory) -> str:
    client_id, secret = api_client_factory("device:read")
    r = test_client.post("/api/v1/auth/token", data={"grant_type": "client_credentials", "client_id": client_id,
                                                     "client_secret": secret})
    assert r.status_code == 200
    return r.json["access_token"]


def _status(test_client, token: str) -> int:
    return test_client.get(PROBE, headers={"Authorization": f"Bearer {token}"}).status_code


def test_key_rotation_across_two_hubs(hub_env, api_client_factory):
    old_key, new_key = "old-" + secrets.token_hex(24), "new-" + secrets.token_hex(24)
    old = _app(hub_env, JWT_SECRET=old_key).test_client()
    rotated = _app(hub_env, JWT_SECRET=new_key, JWT_PREVIOUS_SECRETS=f"{old_key}, ").test_client()
    finished = _app(hub_env, JWT_SECRET=new_key).test_client()

    old_token, new_token = _token(old, api_client_factory), _token(rotated, api_client_factory)
    assert jwt.get_unverified_header(old_token)["kid"] == key_id(old_key)
    assert jwt.get_unverified_header(new_token)["kid"] == key_id(new_key) != key_id(old_key)

    assert _status(rotated, old_token) == 200  # the previous key still verifies
    assert _status(rotated, new_token) == 200
    assert _status(old, new_token) == 401  # a kid the old hub does not know
    assert _status(finished, old_token) == 401  # previous key removed: its tokens end
    assert _status(finished, new_token) == 200


def test_a_token_naming_an_unknown_kid_is_refused(app, api_client_factory):
    test_client = app.test_client()
    token = _token(test_client, api_client_factory)
    claims = jwt.decode(token, options={"verify_signature": False})
    secret = app.config["SETTINGS"].jwt_secret
    wrong_kid = jwt.encode(claims, secret, algorithm="HS256", headers={"kid": "0000000000000000"})
    no_kid = jwt.encode(claims, secret, algorithm="HS256")
    assert _status(test_client, wrong_kid) == 401
    assert _status(test_client, no_kid) == 200  # issued before keys had ids: checked against the current key


def test_previous_secrets_obey_the_production_strength_rule(hub_env):
    from app.core.config import ConfigError

    with pytest.raises(ConfigError, match="JWT_PREVIOUS_SECRETS"):
        _app(hub_env, JWT_PREVIOUS_SECRETS="changeme")
    with pytest.raises(ConfigError, match="JWT_PREVIOUS_SECRETS"):
        _app(hub_env, JWT_PREVIOUS_SECRETS=secrets.token_hex(24) + ",short")
    assert _app(hub_env, UAIP_ENV="development", JWT_PREVIOUS_SECRETS="short")


def test_introspecting_a_sign_in_token_names_operator_and_agent_and_follows_its_grant(app, db, api_client_factory):
    from app.services import oauth
    from tests.integration.test_oauth_code import authorize_query, consent, exchange, pkce, redirect_params, register
    from tests.support.console import new_operator, sign_in

    browser, agent = app.test_client(), app.test_client()
    email, password = new_operator(db, "admin")
    assert sign_in(browser, email, password).status_code == 303
    agent_id = register(agent)["client_id"]
    verifier, challenge = pkce()
    code = redirect_params(consent(browser, authorize_query(agent_id, challenge, resource=None))[0])["code"]
    access = exchange(agent, agent_id, code, verifier).json["access_token"]

    admin_id, admin_secret = api_client_factory("admin")
    auth = (admin_id, admin_secret)
    import base64

    headers = {"Authorization": "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()}
    body = app.test_client().post("/api/v1/auth/introspect", data={"token": access}, headers=headers).json
    assert body["active"] is True and body["sub"] == email and body["client_id"] == agent_id

    grant_id = jwt.decode(access, options={"verify_signature": False})["grant_id"]
    assert oauth.revoke_grant(db, grant_id, None)
    body = app.test_client().post("/api/v1/auth/introspect", data={"token": access}, headers=headers).json
    assert body == {"active": False}


def test_a_desktop_agent_revokes_its_refresh_token_and_so_its_grant(app, db, make_device):
    from tests.integration.test_oauth_code import authorize_query, consent, exchange, pkce, redirect_params, register
    from tests.support.console import new_operator, sign_in

    browser, agent = app.test_client(), app.test_client()
    email, password = new_operator(db, "admin")
    assert sign_in(browser, email, password).status_code == 303

    def sign_in_agent():
        agent_id = register(agent)["client_id"]
        verifier, challenge = pkce()
        code = redirect_params(consent(browser, authorize_query(agent_id, challenge, resource=None))[0])["code"]
        return agent_id, exchange(agent, agent_id, code, verifier).json

    agent_id, tokens = sign_in_agent()
    other_id, _ = sign_in_agent()
    device = make_device()
    headers = {"Authorization": f"Bearer {tokens['access_token']}"}
    assert agent.get(f"/api/v1/devices/{device['device_id']}", headers=headers).status_code == 200

    # Another agent cannot; an unknown client id is no client at all.
    r = agent.post("/api/v1/auth/revoke", data={"token": tokens["refresh_token"], "client_id": other_id})
    assert r.status_code == 400 and r.json["error"] == "unauthorized_client"
    r = agent.post("/api/v1/auth/revoke", data={"token": tokens["refresh_token"], "client_id": "nobody"})
    assert r.status_code == 401 and r.json["error"] == "invalid_client"
    assert agent.get(f"/api/v1/devices/{device['device_id']}", headers=headers).status_code == 200

    # The agent itself, by client_id alone (a public client, RFC 7009 §2.1).
    r = agent.post("/api/v1/auth/revoke", data={"token": tokens["refresh_token"], "client_id": agent_id,
                                                "token_type_hint": "refresh_token"})
    assert r.status_code == 200
    assert agent.get(f"/api/v1/devices/{device['device_id']}", headers=headers).status_code == 401
    r = agent.post("/api/v1/auth/token", data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"],
                                               "client_id": agent_id})
    assert r.status_code == 400 and r.json["error"] == "invalid_grant"
    # Revoking it again, or a token that never existed: 200, nothing to do.
    for token in (tokens["refresh_token"], "rt_unknown"):
        assert agent.post("/api/v1/auth/revoke", data={"token": token, "client_id": agent_id}).status_code == 200
