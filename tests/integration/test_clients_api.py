"""Client management over the REST API: list, create, read, change, delete, rotate secrets, revoke tokens."""

from __future__ import annotations

import time

import pytest

from tests.support.polling import wait_until

TOKEN = "/api/v1/auth/token"


def _token(client, client_id: str, secret: str, **extra):
    return client.post(TOKEN, data={"grant_type": "client_credentials", "client_id": client_id,
                                    "client_secret": secret, **extra})


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _create(client, admin_auth, name="agent", scopes=("device:read",)) -> dict:
    r = client.post("/api/v1/clients", json={"name": name, "scopes": list(scopes)}, headers=admin_auth)
    assert r.status_code == 201, r.json
    return r.json


def _works(client, token: str) -> bool:
    status = client.get("/api/v1/devices?limit=1", headers=_bearer(token)).status_code
    assert status in (200, 401), status
    return status == 200


def _issue(client, created: dict, secret: str | None = None) -> str:
    r = _token(client, created["client_id"], secret or created["client_secret"])
    assert r.status_code == 200, r.json
    return r.json["access_token"]


def test_create_then_read_and_list_never_show_a_secret(client, admin_auth):
    created = _create(client, admin_auth, "robot arm", ["device:read", "device:command"])
    assert created["client_secret"] and created["client_id"]
    assert created["name"] == "robot arm"
    assert created["scopes"] == ["device:read", "device:command"]
    assert created["disabled"] is False
    assert len(created["secrets"]) == 1 and set(created["secrets"][0]) == {
        "secret_id", "created_at", "expires_at", "last_used_at"}

    r = client.get(f"/api/v1/clients/{created['client_id']}", headers=admin_auth)
    assert r.status_code == 200
    assert "client_secret" not in r.json and created["client_secret"] not in r.get_data(as_text=True)
    assert r.json["secrets"][0]["last_used_at"] is None

    _issue(client, created)
    r = client.get(f"/api/v1/clients/{created['client_id']}", headers=admin_auth)
    assert r.json["secrets"][0]["last_used_at"] is not None

    listed = client.get("/api/v1/clients?limit=1000", headers=admin_auth)
    assert listed.status_code == 200
    assert set(listed.json) == {"clients", "total", "limit", "offset"} and listed.json["limit"] == 1000
    assert listed.json["total"] >= len(listed.json["clients"]) >= 1
    ours = [c for c in listed.json["clients"] if c["client_id"] == created["client_id"]]
    assert ours and ours[0]["scopes"] == ["device:read", "device:command"]
    assert created["client_secret"] not in listed.get_data(as_text=True)


def test_scopes_as_a_space_separated_string(client, admin_auth):
    r = client.post("/api/v1/clients", json={"name": "s", "scopes": "device:read message:read"}, headers=admin_auth)
    assert r.status_code == 201 and r.json["scopes"] == ["device:read", "message:read"]


@pytest.mark.parametrize("body", [
    {"name": "x", "scopes": ["device:read", "root"]},
    {"name": "", "scopes": ["device:read"]},
    {"scopes": ["device:read"]},
    {"name": "x"},
    {"name": "x", "scopes": [1]},
    {"name": "x", "scopes": ["device:read"], "secret": "mine"},
    {"name": "a\u0000b", "scopes": ["device:read"]},
])
def test_bad_create_bodies_are_400_and_create_nothing(client, admin_auth, body):
    before = client.get("/api/v1/clients?limit=1", headers=admin_auth).json["total"]
    r = client.post("/api/v1/clients", json=body, headers=admin_auth)
    assert r.status_code == 400 and r.json["code"] in ("VALIDATION_ERROR", "INVALID_JSON")  # NUL: INVALID_JSON
    assert client.get("/api/v1/clients?limit=1", headers=admin_auth).json["total"] == before


@pytest.mark.parametrize("query", ["limit=0", "limit=1001", "offset=-1", "limit=x"])
def test_bad_list_queries(client, admin_auth, query):
    assert client.get(f"/api/v1/clients?{query}", headers=admin_auth).status_code == 400


def test_admin_scope_needed(client, auth):
    assert client.get("/api/v1/clients", headers=auth).status_code == 403
    assert client.post("/api/v1/clients", json={"name": "x", "scopes": []}, headers=auth).status_code == 403
    assert client.get("/api/v1/clients").status_code == 401


@pytest.mark.parametrize("method,suffix", [("GET", ""), ("PATCH", ""), ("DELETE", ""), ("POST", "/secrets"),
                                           ("POST", "/revoke-tokens")])
def test_unknown_client_is_404(client, admin_auth, method, suffix):
    r = client.open(f"/api/v1/clients/client_nope{suffix}", method=method, json={} if method != "GET" else None,
                    headers=admin_auth)
    assert r.status_code == 404 and r.json["code"] == "CLIENT_NOT_FOUND"


def test_rename_and_add_scope_revoke_nothing(client, admin_auth):
    created = _create(client, admin_auth)
    token = _issue(client, created)
    r = client.patch(f"/api/v1/clients/{created['client_id']}", json={"name": "renamed",
                     "scopes": ["device:read", "message:read"]}, headers=admin_auth)
    assert r.status_code == 200
    assert r.json["name"] == "renamed" and r.json["scopes"] == ["device:read", "message:read"]
    assert _works(client, token)


def test_removing_a_scope_revokes_the_clients_tokens(client, admin_auth):
    created = _create(client, admin_auth, scopes=["device:read", "message:read"])
    token = _issue(client, created)
    assert _works(client, token)
    r = client.patch(f"/api/v1/clients/{created['client_id']}", json={"scopes": "device:read"}, headers=admin_auth)
    assert r.status_code == 200 and r.json["scopes"] == ["device:read"]
    assert not _works(client, token)
    # A token issued a second later works again.
    time.sleep(1.05)
    assert _works(client, _issue(client, created))


def test_disable_refuses_tokens_and_the_token_endpoint_enable_restores(client, admin_auth):
    created = _create(client, admin_auth)
    token = _issue(client, created)
    r = client.patch(f"/api/v1/clients/{created['client_id']}", json={"disabled": True}, headers=admin_auth)
    assert r.status_code == 200 and r.json["disabled"] is True
    assert not _works(client, token)
    refused = _token(client, created["client_id"], created["client_secret"])
    assert refused.status_code == 401 and refused.json["error"] == "invalid_client"

    r = client.patch(f"/api/v1/clients/{created['client_id']}", json={"disabled": False}, headers=admin_auth)
    assert r.status_code == 200 and r.json["disabled"] is False
    assert not _works(client, token)  # re-enabling does not bring revoked tokens back
    time.sleep(1.05)
    assert _works(client, _issue(client, created))


def test_bad_patch_bodies(client, admin_auth):
    created = _create(client, admin_auth)
    path = f"/api/v1/clients/{created['client_id']}"
    for body in ({"disabled": "yes"}, {"scopes": ["nope"]}, {"client_id": "other"}, {"name": ""}):
        r = client.patch(path, json=body, headers=admin_auth)
        assert r.status_code == 400, body
    assert client.get(path, headers=admin_auth).json == {**{k: v for k, v in created.items()
                                                           if k != "client_secret"}}


@pytest.mark.parametrize("sent,stored", [
    ("robot\u200b arm", "robot arm"),  # zero-width space
    ("\u202eknil\u202c agent", "knil agent"),  # bidirectional override that would show "agent link"
    ("tag\U000e0041\U000e0042s", "tags"),  # tag characters
    ("lamp\ufe0f\ue000", "lamp"),  # variation selector, private use
    ("one\u2028two", "one two"),  # line separator: a space, as in device names
    ("  \u200bpadded\u200b  ", "padded"),  # trimmed after scrubbing
])
def test_invisible_characters_are_removed_from_client_names(client, admin_auth, sent, stored):
    created = _create(client, admin_auth, sent)
    assert created["name"] == stored
    path = f"/api/v1/clients/{created['client_id']}"
    assert client.get(path, headers=admin_auth).json["name"] == stored
    renamed = client.patch(path, json={"name": "re\u200dnamed\u2066"}, headers=admin_auth)
    assert renamed.status_code == 200 and renamed.json["name"] == "renamed"
    assert client.get(path, headers=admin_auth).json["name"] == "renamed"


@pytest.mark.parametrize("name", ["\u200b", "\u202e\u202c", " \u200b \ufe0f ", "\U000e0041", "a\u0007b", "tab\tname",
                                  "a\u007fb"])
def test_client_names_with_nothing_visible_or_control_characters_are_400(client, admin_auth, name):
    before = client.get("/api/v1/clients?limit=1", headers=admin_auth).json["total"]
    r = client.post("/api/v1/clients", json={"name": name, "scopes": ["device:read"]}, headers=admin_auth)
    assert r.status_code == 400 and r.json["code"] == "VALIDATION_ERROR", r.json
    assert "name" in str(r.json["details"])
    assert client.get("/api/v1/clients?limit=1", headers=admin_auth).json["total"] == before
    created = _create(client, admin_auth, "kept")
    path = f"/api/v1/clients/{created['client_id']}"
    r = client.patch(path, json={"name": name}, headers=admin_auth)
    assert r.status_code == 400 and r.json["code"] == "VALIDATION_ERROR", r.json
    assert client.get(path, headers=admin_auth).json["name"] == "kept"


def test_delete_revokes_and_forgets(client, admin_auth):
    created = _create(client, admin_auth)
    token = _issue(client, created)
    r = client.delete(f"/api/v1/clients/{created['client_id']}", headers=admin_auth)
    assert r.status_code == 204
    assert not _works(client, token)
    assert _token(client, created["client_id"], created["client_secret"]).status_code == 401
    assert client.get(f"/api/v1/clients/{created['client_id']}", headers=admin_auth).status_code == 404
    assert client.delete(f"/api/v1/clients/{created['client_id']}", headers=admin_auth).status_code == 404


def test_revoke_tokens_refuses_earlier_tokens_and_later_ones_work(client, admin_auth):
    created = _create(client, admin_auth)
    tokens = [_issue(client, created) for _ in range(2)]
    r = client.post(f"/api/v1/clients/{created['client_id']}/revoke-tokens", headers=admin_auth)
    assert r.status_code == 204
    assert not any(_works(client, token) for token in tokens)
    time.sleep(1.05)
    later = _issue(client, created)
    assert _works(client, later)
    assert not _works(client, tokens[0])


def test_rotation_overlap_and_expiry(client, admin_auth):
    created = _create(client, admin_auth)
    client_id, first = created["client_id"], created["client_secret"]
    old_token = _issue(client, created)

    r = client.post(f"/api/v1/clients/{client_id}/secrets", json={"previous_secret_expires_in": 2},
                    headers=admin_auth)
    assert r.status_code == 201 and set(r.json) == {"secret_id", "client_secret"}
    second = r.json["client_secret"]
    assert _token(client, client_id, first).status_code == 200  # overlap
    assert _token(client, client_id, second).status_code == 200
    shown = client.get(f"/api/v1/clients/{client_id}", headers=admin_auth).json["secrets"]
    assert len(shown) == 2 and shown[0]["expires_at"] is not None and shown[1]["expires_at"] is None

    wait_until(lambda: _token(client, client_id, first).status_code == 401, timeout=5,
               what="the previous secret to expire")
    assert _token(client, client_id, second).status_code == 200
    assert _works(client, old_token)  # tokens issued with an expired secret live on
    assert len(client.get(f"/api/v1/clients/{client_id}", headers=admin_auth).json["secrets"]) == 1


def test_at_most_two_live_secrets_and_rotation_always_succeeds(client, admin_auth):
    created = _create(client, admin_auth)
    client_id = created["client_id"]
    secrets = [created["client_secret"]]
    for _ in range(3):
        r = client.post(f"/api/v1/clients/{client_id}/secrets", headers=admin_auth)  # default: one day
        assert r.status_code == 201
        secrets.append(r.json["client_secret"])
    live = client.get(f"/api/v1/clients/{client_id}", headers=admin_auth).json["secrets"]
    assert len(live) == 2
    statuses = [_token(client, client_id, secret).status_code for secret in secrets]
    assert statuses == [401, 401, 200, 200]


def test_rotation_with_no_overlap_ends_the_previous_secret_at_once(client, admin_auth):
    created = _create(client, admin_auth)
    r = client.post(f"/api/v1/clients/{created['client_id']}/secrets", json={"previous_secret_expires_in": 0},
                    headers=admin_auth)
    assert r.status_code == 201
    assert _token(client, created["client_id"], created["client_secret"]).status_code == 401
    assert _token(client, created["client_id"], r.json["client_secret"]).status_code == 200


@pytest.mark.parametrize("body", [{"previous_secret_expires_in": -1}, {"previous_secret_expires_in": 604801},
                                  {"previous_secret_expires_in": "60"}, {"other": 1}])
def test_bad_rotation_bodies(client, admin_auth, body):
    created = _create(client, admin_auth)
    r = client.post(f"/api/v1/clients/{created['client_id']}/secrets", json=body, headers=admin_auth)
    assert r.status_code == 400
    assert _token(client, created["client_id"], created["client_secret"]).status_code == 200
    assert len(client.get(f"/api/v1/clients/{created['client_id']}", headers=admin_auth).json["secrets"]) == 1


def test_requested_scopes_not_held_are_dropped(client, admin_auth):
    created = _create(client, admin_auth, scopes=["device:read"])
    r = _token(client, created["client_id"], created["client_secret"], scope="device:read device:write bogus")
    assert r.status_code == 200 and r.json["scope"] == "device:read"
    r = _token(client, created["client_id"], created["client_secret"], scope="device:write bogus")
    assert r.status_code == 400 and r.json["error"] == "invalid_scope"
