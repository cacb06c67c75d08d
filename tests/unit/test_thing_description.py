"""Thing Descriptions built from a device and its type (app/schemas/thing_description.py), checked against the W3C TD
1.1
JSON Schema; integration tests fetch them through the API."""

from urllib.parse import urlsplit

import pytest

from app.schemas.rules import check_schema
from app.schemas.thing_description import data_schema, thing_description
from tests.support.things import td_errors

DEVICE = {
    "device_id": "thermo.1", "name": "Living \u202eroom\x07 thermostat", "device_type": "thermostat",
    "status": "online", "capabilities": [], "location": None, "metadata": {},
    "last_seen": "2026-01-02T03:04:05.000Z", "registered_at": "2026-01-01T00:00:00.000Z",
    "updated_at": "2026-01-01T00:00:00.000Z", "version": 1,
}
TRICKY = {
    "type": "object",
    "$defs": {"point": {"type": "object", "properties": {"x": {"type": "integer"}, "y": {"type": "integer"}},
                        "required": ["x"]}},
    "properties": {
        "points": {"type": "array", "items": {"$ref": "#/$defs/point"}, "minItems": 1},
        "maybe": {"type": ["string", "null"], "maxLength": 5},
        "either": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
        "pair": {"type": "array", "prefixItems": [{"type": "number"}, {"type": "number"}], "items": False},
        "mode": {"enum": ["eco", "eco", "comfort"], "description": "Mode\n(line two)"},
        "merged": {"allOf": [{"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]},
                             {"properties": {"b": {"type": "string"}}, "required": ["b"]}]},
        "gone": False,
        "odd": {"not": {"type": "null"}, "if": {"type": "string"}, "then": {"minLength": 1}, "uniqueItems": True},
    },
    "additionalProperties": False,
    "patternProperties": {"^x-": {"type": "string"}},
}
TYPE = {
    "device_type": "thermostat", "description": "A thermostat\u2066", "version": 3,
    "created_at": "2026-01-01T00:00:00.000Z", "updated_at": "2026-01-01T00:00:00.000Z",
    "commands": {
        "set_temperature": {"description": "Set it", "params": {"type": "object", "properties": {"value": {
            "type": "number", "minimum": 5, "maximum": 35}}, "required": ["value"], "additionalProperties": False},
            "result": {"type": "object", "properties": {"target": {"type": "number"}}},
            "safe": False, "idempotent": True},
        "tricky": {"description": "", "params": TRICKY, "safe": True, "idempotent": False},
        "odd/name": {"description": "", "params": {"type": "object"}, "safe": False, "idempotent": False},
    },
}
BASE = "https://hub.example.com"


def hrefs(document):
    for group in ("properties", "actions"):
        for affordance in document.get(group, {}).values():
            for form in affordance["forms"]:
                yield form["href"]


def test_the_translated_example_schema_is_itself_acceptable():
    check_schema(TRICKY)


def test_json_schema_becomes_a_td_data_schema():
    translated = data_schema(TRICKY)
    properties = translated["properties"]
    assert "$defs" not in translated and "additionalProperties" not in translated
    assert "patternProperties" not in translated
    assert properties["points"]["items"] == {
        "type": "object", "properties": {"x": {"type": "integer"}, "y": {"type": "integer"}}, "required": ["x"]}
    assert properties["maybe"] == {"maxLength": 5, "oneOf": [{"type": "string"}, {"type": "null"}]}
    assert properties["either"] == {"oneOf": [{"type": "string"}, {"type": "integer"}]}
    assert properties["pair"] == {"type": "array", "items": [{"type": "number"}, {"type": "number"}], "maxItems": 2}
    assert properties["mode"] == {"enum": ["eco", "comfort"], "description": "Mode (line two)"}
    assert properties["merged"] == {"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "string"}},
                                    "required": ["a", "b"]}
    assert "gone" not in properties
    assert properties["odd"] == {}


def test_the_td_of_a_typed_device_validates_and_describes_its_commands():
    td = thing_description(DEVICE, TYPE, BASE)
    assert td_errors(td) == []
    assert td["@context"] == "https://www.w3.org/2022/wot/td/v1.1"
    assert td["id"] == "urn:uaip:device:thermo.1"
    assert td["title"] == "Living room thermostat"  # bidi override and BEL removed
    assert "\u2066" not in td["description"]
    assert td["version"] == {"instance": "3"}
    assert td["securityDefinitions"]["oauth2_sc"] == {
        "scheme": "oauth2", "flow": "client", "token": f"{BASE}/api/v1/auth/token",
        "scopes": ["device:read", "device:command", "message:read"]}
    assert td["security"] == ["oauth2_sc"]
    assert set(td["properties"]) == {"status", "last_seen"}
    action = td["actions"]["set_temperature"]
    assert action["synchronous"] is False and action["safe"] is False and action["idempotent"] is True
    assert action["input"]["properties"]["value"] == {"type": "number", "minimum": 5, "maximum": 35}
    assert action["output"] == {"type": "object", "properties": {"target": {"type": "number"}}}
    invoke, query = action["forms"]
    # URI templates (RFC 6570): `wait` fills a query parameter, `message_id` the queried message's path.
    assert invoke["href"] == f"{BASE}/api/v1/devices/thermo.1/commands/set_temperature{{?wait}}"
    assert invoke["op"] == "invokeaction" and invoke["scopes"] == ["device:command"]
    assert query == {"href": f"{BASE}/api/v1/messages/{{message_id}}", "op": "queryaction",
                     "contentType": "application/json", "scopes": ["message:read"], "htv:methodName": "GET"}
    assert action["uriVariables"]["wait"] == {
        "type": "integer", "minimum": 0, "maximum": 30, "description": action["uriVariables"]["wait"]["description"]}
    assert action["uriVariables"]["message_id"]["type"] == "string"
    assert "output" not in td["actions"]["tricky"]
    assert td["actions"]["odd/name"]["forms"][0]["href"].endswith("/commands/odd%2Fname{?wait}")
    for href in hrefs(td):
        parts = urlsplit(href)
        assert parts.scheme == "https" and parts.netloc == "hub.example.com", href


@pytest.mark.parametrize("name", ["", "\x85\u202e\u2069"])
def test_the_td_of_an_undeclared_type_has_properties_and_no_actions(name):
    td = thing_description({**DEVICE, "name": name, "device_type": "no such type"}, None, BASE)
    assert td_errors(td) == []
    assert "actions" not in td and set(td["properties"]) == {"status", "last_seen"}
    assert td["title"] == "thermo.1"  # a name with nothing printable left falls back to the id
