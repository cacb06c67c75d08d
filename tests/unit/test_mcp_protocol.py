"""Pure pieces of the MCP endpoint: message framing, the scrubbing of its results and the Mcp-Name header codec."""

import pytest

from app.core.text import scrub
from app.mcp.jsonrpc import INVALID_PARAMS, INVALID_REQUEST, PARSE_ERROR, RpcError, parse
from app.mcp.server import decode_header_value


def test_requests_and_notifications():
    message = parse(b'{"jsonrpc": "2.0", "id": "a", "method": "tools/list"}')
    assert (message.method, message.params, message.id, message.is_notification) == ("tools/list", {}, "a", False)
    note = parse(b'{"jsonrpc": "2.0", "method": "notifications/initialized"}')
    assert note.is_notification and note.id is None
    assert parse(b'{"jsonrpc": "2.0", "id": 0, "method": "ping", "params": null}').id == 0


@pytest.mark.parametrize("body, code", [
    (b"nope", PARSE_ERROR),
    (b'{"jsonrpc": "2.0", "id": 1, "method": "ping", "params": {"x": Infinity}}', PARSE_ERROR),
    (b'{"jsonrpc": "2.0", "id": 1, "method": "ping", "params": {"x": "\\u0000"}}', PARSE_ERROR),
    (b"[]", INVALID_REQUEST),
    (b'{"jsonrpc": "2.0", "method": "tools/call"}', INVALID_REQUEST),
    (b'{"jsonrpc": "2.0", "id": [1], "method": "ping"}', INVALID_REQUEST),
    (b'{"jsonrpc": "2.0", "id": 1, "method": ""}', INVALID_REQUEST),
    (b'{"jsonrpc": "2.0", "id": 1, "method": "ping", "params": [1]}', INVALID_PARAMS),
])
def test_what_cannot_be_one_message(body, code):
    with pytest.raises(RpcError) as raised:
        parse(body)
    assert raised.value.code == code
    assert raised.value.request_id == (1 if code == INVALID_PARAMS else None)


def test_scrub_removes_control_and_bidi_characters_everywhere():
    dirty = {"na\u202eme\x00": ["a\tb\nc\r\nd", "\x7f\x85\x9f", "\u061c\u200e\u200f\u202a\u202b\u202c\u202d"],
             "ok": "\u2066\u2067\u2068\u2069x", "n": 1.5, "b": True, "z": None}
    # Tabs and line breaks become a space, every other control character disappears.
    assert scrub(dirty) == {"name": ["a b c d", "", ""], "ok": "x", "n": 1.5, "b": True, "z": None}
    assert scrub("Grüße, 温度 ✓") == "Grüße, 温度 ✓"  # everything else stays


@pytest.mark.parametrize("header, value", [
    ("list_devices", "list_devices"),
    ("=?base64?bGlzdF9kZXZpY2Vz?=", "list_devices"),
    ("=?base64?5rip5bqm?=", "温度"),
    ("=?base64?not base64?=", None),
    (None, None),
])
def test_mcp_name_header_decoding(header, value):
    assert decode_header_value(header) == value
