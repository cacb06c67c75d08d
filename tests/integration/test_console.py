"""The operator console through Flask's test client: sessions, CSRF, the sign-in throttle, roles, pages.

The same flows in a real browser are in tests/process/test_console_browser.py."""

from __future__ import annotations

import re

import pytest

from app.services.operators import list_operators
from tests.conftest import unique_id
from tests.support.console import csrf_from, new_operator, page_csrf, sign_in


@pytest.fixture()
def admin(db):
    return new_operator(db, "admin")


@pytest.fixture()
def viewer(db):
    return new_operator(db, "viewer")


def cookie_header(response, name: str) -> str:
    headers = [value for value in response.headers.getlist("Set-Cookie") if value.startswith(name + "=")]
    assert headers, f"no {name} cookie set"
    return headers[-1]


def test_pages_need_a_session(client):
    for path in ("/console", "/console/", "/console/devices"):
        r = client.get(path)
        assert r.status_code == 302 and "/console/signin" in r.headers["Location"], path
    assert client.post("/console/clients", data={"name": "x"}).status_code == 403


def test_sign_in_sets_a_strict_session_cookie_and_sign_out_ends_it_on_the_server(app, admin):
    client = app.test_client()
    r = sign_in(client, *admin)
    assert r.status_code == 303
    cookie = cookie_header(r, "uaip_console")
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie  # http public URL
    value = re.match(r"uaip_console=([^;]+)", cookie).group(1)
    page = client.get("/console/")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    for link in ("Overview", "Devices", "Commands", "Clients", "Operators", "Audit"):
        assert f">{link}</a>" in html
    csp = page.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp

    assert client.post("/console/signout", data={"csrf_token": csrf_from(html)}).status_code == 303
    replay = app.test_client()
    replay.set_cookie("uaip_console", value)
    assert replay.get("/console/").status_code == 302  # the old cookie no longer works


def test_secure_cookie_when_the_public_url_is_https(hub_env, db):
    from app import create_app

    app = create_app({**hub_env, "UAIP_PUBLIC_URL": "https://hub.example.test"})
    email, password = new_operator(db, "viewer")
    r = sign_in(app.test_client(), email, password)
    assert r.status_code == 303
    assert "Secure" in cookie_header(r, "uaip_console")


def test_wrong_password_is_refused(client, admin):
    r = sign_in(client, admin[0], "not-the-password")
    assert r.status_code == 401
    assert "uaip_console=" not in " ".join(r.headers.getlist("Set-Cookie"))
    assert client.get("/console/").status_code == 302


def test_post_without_csrf_token_is_refused_and_changes_nothing(client, admin, db):
    sign_in(client, *admin)
    email = f"new-{unique_id()}@example.test"
    r = client.post("/console/operators", data={"email": email, "role": "viewer"})
    assert r.status_code == 403
    r = client.post("/console/operators", data={"email": email, "role": "viewer", "csrf_token": "0" * 64})
    assert r.status_code == 403
    assert email not in [operator.email for operator in list_operators(db)]
    # and the sign-in form itself needs its token
    assert client.post("/console/signin", data={"email": admin[0], "password": admin[1]}).status_code == 403


def test_sign_in_throttle_per_email(app, db):
    target, password = new_operator(db, "viewer")
    other = new_operator(db, "viewer")
    client = app.test_client()
    for _ in range(5):
        assert sign_in(client, target, "wrong-password").status_code == 401
    assert sign_in(client, target, "wrong-password").status_code == 429
    throttled = sign_in(client, target, password)  # the right password, still inside the window
    assert throttled.status_code == 429 and "Retry-After" in throttled.headers
    assert sign_in(app.test_client(), *other).status_code == 303  # other operators are unaffected


def test_viewer_sees_but_cannot_change(client, viewer, db):
    sign_in(client, *viewer)
    for path in ("/console/", "/console/devices", "/console/commands", "/console/clients", "/console/grants"):
        assert client.get(path).status_code == 200, path
    clients_page = client.get("/console/clients").get_data(as_text=True)
    assert "Create client" not in clients_page and "Rotate secret" not in clients_page
    assert client.get("/console/operators").status_code == 403
    assert client.get("/console/audit").status_code == 403
    token = page_csrf(client)
    r = client.post("/console/clients", data={"name": "viewer-made", "scopes": "device:read", "csrf_token": token})
    assert r.status_code == 403
    r = client.post("/console/operators", data={"email": "x@example.test", "role": "admin", "csrf_token": token})
    assert r.status_code == 403
    assert "x@example.test" not in [operator.email for operator in list_operators(db)]


def test_admin_creates_a_client_and_sees_the_secret_once(client, admin):
    sign_in(client, *admin)
    token = page_csrf(client, "/console/clients")
    r = client.post("/console/clients", data={"name": "console-made", "scopes": ["device:read", "message:read"],
                                              "csrf_token": token})
    assert r.status_code == 200
    html = r.get_data(as_text=True)
    client_id = re.search(r'id="shown-id">([^<]+)<', html).group(1)
    secret = re.search(r'id="shown-secret">([^<]+)<', html).group(1)
    listing = client.get("/console/clients").get_data(as_text=True)
    assert client_id in listing and secret not in listing
    issued = client.post("/api/v1/auth/token", data={"grant_type": "client_credentials", "client_id": client_id,
                                                     "client_secret": secret})
    assert issued.status_code == 200 and issued.json["scope"] == "device:read message:read"


def test_client_names_from_the_console_follow_the_apis_rule(client, admin, admin_auth):
    sign_in(client, *admin)
    token = page_csrf(client, "/console/clients")
    r = client.post("/console/clients", data={"name": "\u202econsole\u200b-made\u202c ", "scopes": ["device:read"],
                                              "csrf_token": token})
    assert r.status_code == 200
    client_id = re.search(r'id="shown-id">([^<]+)<', r.get_data(as_text=True)).group(1)
    assert client.get(f"/api/v1/clients/{client_id}", headers=admin_auth).json["name"] == "console-made"

    before = client.get("/api/v1/clients?limit=1", headers=admin_auth).json["total"]
    for name in ("\u200b\u2066\u2069", "a\u0007b"):
        token = page_csrf(client, "/console/clients")
        r = client.post("/console/clients", data={"name": name, "scopes": ["device:read"], "csrf_token": token})
        assert r.status_code == 400 and "client name" in r.get_data(as_text=True), name
    assert client.get("/api/v1/clients?limit=1", headers=admin_auth).json["total"] == before


def test_device_pages_list_and_show_a_device(client, admin, make_device):
    kind = f"console-{unique_id()}"  # its own type: the filtered page holds it whatever else the run registered
    device = make_device(device_type=kind)
    sign_in(client, *admin)
    listing = client.get(f"/console/devices?status=pending&type={kind}")
    assert listing.status_code == 200 and device["device_id"] in listing.get_data(as_text=True)
    page = client.get(f"/console/devices/{device['device_id']}")
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    assert "Thing Description" in html and "Recent commands" in html
    assert client.get("/console/devices/no-such-device").status_code == 404


def test_admin_sends_a_free_form_command_from_the_device_page(client, admin, make_device, auth):
    device = make_device()
    sign_in(client, *admin)
    token = page_csrf(client, f"/console/devices/{device['device_id']}")
    r = client.post(f"/console/devices/{device['device_id']}/commands",
                    data={"command": "blink", "params": '{"times": 2}', "csrf_token": token})
    assert r.status_code == 303
    listed = client.get(f"/api/v1/devices/{device['device_id']}/commands", headers=auth).json["commands"]
    assert [(c["command"], c["params"]) for c in listed] == [("blink", {"times": 2})]


def test_admin_manages_operators(client, admin, db):
    sign_in(client, *admin)
    token = page_csrf(client, "/console/operators")
    email = f"made-{unique_id()}@example.test"
    r = client.post("/console/operators", data={"email": email, "role": "viewer", "csrf_token": token})
    assert r.status_code == 200
    password = re.search(r'id="shown-secret">([^<]+)<', r.get_data(as_text=True)).group(1)
    r = client.post(f"/console/operators/{email}", data={"disabled": "true", "csrf_token": token})
    assert r.status_code == 303
    assert [o.disabled for o in list_operators(db) if o.email == email] == [True]
    assert sign_in(client.application.test_client(), email, password).status_code == 401


def test_an_operator_email_with_invisible_characters_is_refused(client, admin, db):
    sign_in(client, *admin)
    before = len(list_operators(db, limit=10_000))
    for hidden in ("\u200b", "\u202e", "\U000e0041", "\ufe0f"):
        token = page_csrf(client, "/console/operators")
        email = f"made-{unique_id()}{hidden}@example.test"
        r = client.post("/console/operators", data={"email": email, "role": "viewer", "csrf_token": token})
        assert r.status_code == 400 and "invisible characters" in r.get_data(as_text=True), hidden
    assert len(list_operators(db, limit=10_000)) == before


def test_failures_older_than_the_window_no_longer_count(app, db):
    email, password = new_operator(db, "viewer")
    client = app.test_client()
    for _ in range(5):
        assert sign_in(client, email, "wrong-password").status_code == 401
    db.transaction(lambda cur: cur.execute(
        "UPDATE operator_signin_failures SET at = now() - interval '16 minutes' WHERE email = %s", (email,)))
    assert sign_in(client, email, password).status_code == 303
