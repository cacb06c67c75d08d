"""What the relay accepts from devices on NATS (app/cli/relay_input.py): every body is size- and depth-checked
before it is parsed, and every bad one becomes `Dropped` with its reason, never another exception."""

import uuid

import pytest

from app.cli.relay_input import (
    INVALID,
    INVALID_JSON,
    TOO_DEEP,
    TOO_LARGE,
    UNKNOWN_MESSAGE,
    Dropped,
    nesting_exceeds,
    parse_ack,
    parse_heartbeat,
)

MAX = 65_536
MESSAGE_ID = str(uuid.uuid4())


def reason(parse, data: bytes) -> str:
    with pytest.raises(Dropped) as caught:
        parse(data)
    return caught.value.reason


def ack(data: bytes):
    return parse_ack("d1", data, MAX)


def heartbeat(data: bytes):
    return parse_heartbeat(data, MAX)


def test_the_heartbeat_that_ended_the_relay_is_dropped_as_too_deep():
    """3 KB of `[`x1500 `]`x1500 once raised RecursionError out of the heartbeat parser."""
    body = b"[" * 1500 + b"]" * 1500
    assert reason(heartbeat, body) == TOO_DEEP
    assert reason(ack, body) == TOO_DEEP


def test_deep_bodies_of_every_shape_are_dropped_without_a_recursion_error():
    for body in (b"[" * 60_000, b'{"a":' * 5000 + b"1" + b"}" * 5000, b"[1," * 5000 + b"]" * 5000,
                 b"[ \n" * 3000 + b"]" * 3000, b"[" * 33 + b"]" * 33):
        assert reason(heartbeat, body) in (TOO_DEEP, INVALID_JSON)
        assert reason(ack, body) in (TOO_DEEP, INVALID_JSON)


def test_nesting_prescan_counts_brackets_outside_strings_only():
    assert nesting_exceeds(b"[" * 33) and not nesting_exceeds(b"[" * 32 + b"]" * 32)
    assert not nesting_exceeds(b'{"note": "' + b"[" * 100 + b'"}')
    assert not nesting_exceeds(b'{"note": "a \\" ' + b"[" * 100 + b'"}')
    assert not nesting_exceeds(b"[1]," * 10_000)


def test_size_invalid_utf8_and_invalid_json_are_dropped_with_their_reason():
    assert reason(ack, b'{"message_id": "' + b"x" * MAX + b'"}') == TOO_LARGE
    assert reason(heartbeat, b"\xff\xfe\xfa{}") == INVALID_JSON
    assert reason(ack, b'{"message_id": "\xc3\x28", "status": "completed"}') == INVALID_JSON
    assert reason(ack, b"{not json") == INVALID_JSON
    assert reason(ack, b'{"message_id": "%s", "status": "completed", "result": NaN}' % MESSAGE_ID.encode()) \
        == INVALID_JSON


def test_wrong_shapes_are_dropped_as_invalid():
    for body in (b"[]", b"5", b'"text"', b"null", b'{"status": "completed"}', b'{"message_id": 5}',
                 b'{"message_id": "%s", "status": "done"}' % MESSAGE_ID.encode(),
                 b'{"message_id": "%s", "status": "failed", "error": 7}' % MESSAGE_ID.encode()):
        assert reason(ack, body) == INVALID, body
    for body in (b"[]", b"5", b'"online"', b'{"status": "asleep"}', b'{"status": 1}'):
        assert reason(heartbeat, body) == INVALID, body


def test_an_ack_for_an_id_that_is_no_message_id_is_dropped_before_the_database():
    assert reason(ack, b'{"message_id": "not-a-uuid", "status": "completed"}') == UNKNOWN_MESSAGE


def test_good_bodies_parse():
    parsed = ack(b'{"message_id": "%s", "status": "completed", "result": {"ok": [1]}, "extra": 1}'
                 % MESSAGE_ID.encode())
    assert (parsed.device_id, parsed.message_id, parsed.status, parsed.result) == ("d1", MESSAGE_ID, "completed",
                                                                                   {"ok": [1]})
    assert heartbeat(b"") == "online" and heartbeat(b"  ") == "online" and heartbeat(b"{}") == "online"
    assert heartbeat(b'{"status": "error", "battery": 3}') == "error"
    assert heartbeat(b'{"status": "online", "note": "' + b"[" * 40 + b'"}') == "online"
