"""Thing Descriptions through the API: valid W3C TD 1.1 documents whose forms work when followed."""

import time
import uuid
from urllib.parse import urlsplit

import pytest

from app import create_app
from tests.conftest import basic, unique_id
from tests.integration.test_device_types import THERMOSTAT
from tests.integration.test_typed_commands import stored_commands
from tests.support.things import expand, td_errors

TYPES = "/api/v1/device-types"


@pytest.fixture()
def thermostat(client, admin_auth, make_device):
    name = f"thermo-{uuid.uuid4().hex[:8]}"
    assert client.put(f"{TYPES}/{name}", json=THERMOSTAT, headers=admin_auth).status_code == 201
    return make_device(device_type=name, name="Hall thermostat")


def td_of(client, auth, device_id):
    response = client.get(f"/api/v1/devices/{device_id}/thing-description", headers=auth)
    assert response.status_code == 200, response.json
    assert response.mimetype == "application/td+json"
    document = response.get_json(force=True)
    assert td_errors(document) == []
    return document


def path_of(href, **uri_variables):
    """The local part (path and query) of a form's href with its URI variables filled."""
    parts = urlsplit(expand(href, **uri_variables))
    assert parts.scheme in ("http", "https") and parts.netloc, href
    return parts.path + (f"?{parts.query}" if parts.query else "")


def test_typed_device_td_validates_and_its_forms_work(client, auth, thermostat):
    device_id = thermostat["device_id"]
    td = td_of(client, auth, device_id)
    assert td["id"] == f"urn:uaip:device:{device_id}" and td["title"] == "Hall thermostat"
    assert td["securityDefinitions"]["oauth2_sc"]["token"] == "http://localhost/api/v1/auth/token"
    assert set(td["actions"]) == {"set_temperature", "read"}
    assert td["actions"]["read"]["safe"] is True and td["actions"]["set_temperature"]["idempotent"] is True
    assert td["actions"]["set_temperature"]["input"]["properties"]["value"]["maximum"] == 35

    status_form = td["properties"]["status"]["forms"][0]
    assert client.get(path_of(status_form["href"]), headers=auth).get_json() == "pending"
    assert client.get(path_of(td["properties"]["last_seen"]["forms"][0]["href"]), headers=auth).get_json() is None
    client.post(f"/api/v1/devices/{device_id}/heartbeat", headers=basic(device_id, thermostat["device_secret"]))
    assert client.get(path_of(status_form["href"]), headers=auth).get_json() == "online"
    seen = client.get(path_of(td["properties"]["last_seen"]["forms"][0]["href"]), headers=auth).get_json()
    assert isinstance(seen, str) and seen.endswith("Z")

    action, query = td["actions"]["set_temperature"]["forms"]
    assert action["op"] == "invokeaction" and action["contentType"] == "application/json"
    accepted = client.post(path_of(action["href"]), json={"value": 22}, headers=auth)
    assert accepted.status_code == 202
    refused = client.post(path_of(action["href"]), json={"value": 99}, headers=auth)
    assert refused.status_code == 422 and refused.json["details"]["errors"][0]["pointer"] == "/value"
    # The queryaction form follows an accepted invocation.
    assert query["op"] == "queryaction" and query["htv:methodName"] == "GET"
    followed = client.get(path_of(query["href"], message_id=accepted.json["message_id"]), headers=auth)
    assert followed.status_code == 200 and followed.json["params"] == {"value": 22}
    assert followed.json["message_id"] == accepted.json["message_id"]


def test_the_wait_uri_variable_of_an_action_form_waits(client, auth, thermostat):
    """`{?wait}` expands to the route's `wait` query parameter: an answer after the wait, still 202 while the
    device has not answered."""
    td = td_of(client, auth, thermostat["device_id"])
    href = td["actions"]["set_temperature"]["forms"][0]["href"]
    assert path_of(href, wait=1).endswith("/commands/set_temperature?wait=1")
    started = time.monotonic()
    r = client.post(path_of(href, wait=1), json={"value": 21}, headers=auth)
    assert r.status_code == 202 and time.monotonic() - started >= 0.9


@pytest.mark.parametrize("headers, body, status", [
    ({}, b'{"value": 23}', 202),  # node-wot sends the form's JSON without a Content-Type
    ({"Content-Type": "application/json"}, b'{"value": 23}', 202),
    ({"Content-Type": "text/plain"}, b'{"value": 23}', 415),
    ({}, b"{not json", 400),
    ({}, b"[1]", 400),
])
def test_an_action_body_without_content_type_is_json(client, auth, thermostat, db, headers, body, status):
    device_id = thermostat["device_id"]
    before = stored_commands(db, device_id)
    r = client.post(f"/api/v1/devices/{device_id}/commands/set_temperature", data=body,
                    headers={**auth, **headers})
    assert r.status_code == status, r.json
    assert stored_commands(db, device_id) == before + (1 if status == 202 else 0)
    if status == 202:
        assert r.json["status"] in ("queued", "sent")


def test_undeclared_type_gets_a_td_without_actions(client, auth, make_device):
    device = make_device(device_type=f"undeclared-{uuid.uuid4().hex[:6]}")
    td = td_of(client, auth, device["device_id"])
    assert "actions" not in td and set(td["properties"]) == {"status", "last_seen"}


def test_hrefs_use_the_public_url_when_configured(hub_env, auth, thermostat):
    client = create_app({**hub_env, "UAIP_PUBLIC_URL": "https://hub.example.com:8443"}).test_client()
    td = td_of(client, auth, thermostat["device_id"])
    assert td["securityDefinitions"]["oauth2_sc"]["token"] == "https://hub.example.com:8443/api/v1/auth/token"
    forms = [form for group in ("properties", "actions") for affordance in td[group].values()
             for form in affordance["forms"]]
    assert forms and all(form["href"].startswith("https://hub.example.com:8443/api/v1/") for form in forms)


def test_errors_and_scopes(client, auth, token_for, thermostat):
    device_id = thermostat["device_id"]
    unknown = client.get(f"/api/v1/devices/{unique_id()}/thing-description", headers=auth)
    assert unknown.json["code"] == "DEVICE_NOT_FOUND"
    missing = client.get(f"/api/v1/devices/{device_id}/properties/temperature", headers=auth)
    assert missing.status_code == 404 and missing.json["code"] == "PROPERTY_NOT_FOUND"
    assert missing.json["details"]["properties"] == ["status", "last_seen"]
    assert client.get(f"/api/v1/devices/{unique_id()}/properties/status", headers=auth).status_code == 404
    commander = {"Authorization": f"Bearer {token_for('device:command')}"}
    assert client.get(f"/api/v1/devices/{device_id}/thing-description", headers=commander).status_code == 403
    assert client.get(f"/api/v1/devices/{device_id}/properties/status", headers=commander).status_code == 403
    reader = {"Authorization": f"Bearer {token_for('device:read')}"}
    assert client.post(f"/api/v1/devices/{device_id}/commands/read", headers=reader).status_code == 403
