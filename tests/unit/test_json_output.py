"""Responses written by orjson are the documents Flask's own provider writes (app/web/json_output.py)."""

import dataclasses
import datetime as dt
import decimal
import json
import uuid

import pytest
from flask import Flask

from app.web.json_output import HubJSONProvider


@dataclasses.dataclass
class Point:
    x: int
    label: str


def _apps():
    hub = Flask("hub")
    hub.json = HubJSONProvider(hub)
    reference = Flask("reference")  # Flask's standard-library provider, set to the hub's document style
    reference.json.sort_keys = False
    reference.json.ensure_ascii = False
    return hub, reference


@pytest.mark.parametrize("value", [
    {"b": 1, "a": [1, 2.5, -0.0, 1e21, None, True, False], "nested": {"z": {}, "y": []}},
    {"text": "Küche ☃ 🌡️ \u2028 \x7f \x00\x01\x1f \n\t\"\\/"},
    {"big": 2**64 - 1, "bigger": 2**70, "negative": -(2**63)},  # beyond 64 bits: the standard library writes it
    {1: "non-string key", "k": "v"},
    {"when": dt.datetime(2020, 1, 2, 3, 4, 5, tzinfo=dt.UTC), "day": dt.date(2020, 1, 2)},
    {"id": uuid.UUID(int=5), "amount": decimal.Decimal("1.50"), "point": Point(1, "p")},
    ["a", 1], "plain", 7, None,
])
def test_documents_match_flasks_own_provider_byte_for_byte(value):
    hub, reference = _apps()
    with hub.app_context(), reference.app_context():
        written = hub.json.response(value)
        assert written.get_data() == reference.json.response(value).get_data()
        assert written.mimetype == "application/json"
        assert hub.json.dumps(value) == reference.json.dumps(value, separators=(",", ":"))


def test_floats_keep_their_value_though_not_always_their_spelling():
    hub, _ = _apps()
    with hub.app_context():
        values = [1e-7, 0.00001, 2.5e-300, 123456789.125, 5e-324]
        assert json.loads(hub.json.response(values).get_data()) == values


def test_lone_surrogates_are_escaped_as_before():
    hub, _ = _apps()
    with hub.app_context():
        assert hub.json.response({"s": "a\ud800"}).get_data() == b'{"s":"a\\ud800"}\n'


def test_unserialisable_values_still_fail_loudly():
    hub, _ = _apps()
    with hub.app_context(), pytest.raises(TypeError):
        hub.json.response({"set": {1, 2}})


def test_debug_mode_keeps_flasks_indented_output():
    hub, reference = _apps()
    hub.debug = reference.debug = True
    with hub.app_context(), reference.app_context():
        assert hub.json.response({"a": [1]}).get_data() == reference.json.response({"a": [1]}).get_data()
