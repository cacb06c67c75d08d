"""Pure parts of the console and the desktop-agent grant: form fields from JSON Schemas, the history chart, redirect
URI matching (RFC 8252 §7.3), PKCE S256 and scope narrowing."""

from __future__ import annotations

import base64
import hashlib

import pytest

from app.console.chart import line_chart
from app.console.forms import FormValueError, fields_for_object, parse_fields, parse_json_object
from app.services.oauth import PublicClient, granted_scopes, pkce_matches, redirect_uri_allowed


def test_fields_follow_the_schema_and_parse_back_to_json_values():
    schema = {"type": "object", "required": ["level"], "properties": {
        "level": {"type": "integer", "minimum": 0, "maximum": 10},
        "ratio": {"type": "number"},
        "mode": {"type": "string", "enum": ["eco", "boost"]},
        "on": {"type": "boolean"},
        "label": {"type": "string"},
        "extra": {"type": "object"},
    }}
    fields = fields_for_object(schema)
    assert [(f.name, f.kind, f.required) for f in fields] == [
        ("level", "integer", True), ("ratio", "number", False), ("mode", "enum", False), ("on", "boolean", False),
        ("label", "text", False), ("extra", "json", False)]
    assert fields[0].maximum == 10 and fields[2].choices == ("eco", "boost")
    form = {"p.level": "7", "p.ratio": "0.5", "p.mode": "eco", "p.on": "on", "p.label": "", "p.extra": '{"a": 1}'}
    assert parse_fields(fields, form, "p.") == {"level": 7, "ratio": 0.5, "mode": "eco", "on": True,
                                                "extra": {"a": 1}}
    with pytest.raises(FormValueError, match="level"):
        parse_fields(fields, {"p.level": "seven"}, "p.")
    # what the form cannot express field by field becomes one JSON text field
    assert fields_for_object({"type": "object", "oneOf": [{"required": ["a"]}]}) is None
    assert fields_for_object({"type": "object"}) is None
    assert fields_for_object({"type": "object", "additionalProperties": False}) == []
    assert fields_for_object({"type": "array"}) is None


def test_json_object_fields():
    assert parse_json_object('{"x": 1}', "params") == {"x": 1}
    assert parse_json_object("", "params") == {}
    for bad in ("[1]", "{nope"):
        with pytest.raises(FormValueError):
            parse_json_object(bad, "params")


def test_chart_scales_numbers_into_the_box():
    chart = line_chart([{"timestamp": "t1", "value": 10}, {"timestamp": "t2", "value": "n/a"},
                        {"timestamp": "t3", "value": 20}])
    assert chart.count == 2 and (chart.minimum, chart.maximum) == (10, 20)
    assert chart.points == "30.0,170.0 610.0,30.0"
    assert line_chart([{"timestamp": "t", "value": 1}]) is None
    assert line_chart([{"timestamp": "t", "value": True}, {"timestamp": "u", "value": False}]) is None


@pytest.mark.parametrize("given, allowed", [
    ("http://127.0.0.1:8000/cb", True),
    ("http://127.0.0.1:51234/cb", True),        # loopback: any port
    ("http://127.0.0.1/cb", True),
    ("http://127.0.0.1:51234/cb/other", False),  # exact path
    ("http://127.0.0.1:51234/cb?x=1", False),
    ("http://localhost:9/cb", False),           # another host than registered
    ("https://app.example/cb", True),
    ("https://app.example:444/cb", False),      # non-loopback: exactly as registered
    ("https://app.example/cb/", False),
    ("http://evil@127.0.0.1:1/cb", False),
])
def test_redirect_uri_matching(given, allowed):
    assert redirect_uri_allowed(("http://127.0.0.1:8000/cb", "https://app.example/cb"), given) is allowed


def test_pkce_s256():
    verifier = "a" * 50
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
    assert pkce_matches(verifier, challenge)
    assert not pkce_matches("b" * 50, challenge)
    assert not pkce_matches(verifier, verifier)  # "plain" is not accepted


def test_scopes_are_narrowed_to_the_role():
    client = PublicClient("pub_x", "x", ("https://a/cb",), None)
    everything = "device:read device:write device:command message:read admin"
    assert granted_scopes(everything, "viewer", client) == ["device:read", "message:read"]
    assert granted_scopes("admin", "viewer", client) == ["device:read", "message:read"]
    assert granted_scopes("device:write", "viewer", client) == []
    assert granted_scopes(None, "viewer", client) == ["device:read", "message:read"]
    assert granted_scopes("device:command", "admin", client) == ["device:command"]
    assert "admin" in granted_scopes(everything, "admin", client)
