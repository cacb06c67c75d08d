"""What devices publish on NATS, checked before it is parsed: the relay's side of docs/api.md, "NATS subjects".

Without the auth callout anyone who can reach NATS can publish anything on a device subject, so a body is hostile
until proven otherwise, and one body must never stop the relay. Every body is checked in this order, each step
cheap and bounded before the next:

1. size: at most MAX_MESSAGE_SIZE_BYTES (the REST limit);
2. nesting: a pre-scan of the raw bytes (`nesting_exceeds`), so a body of 1,500 `[` never reaches a parser;
3. JSON: `decode_json`, the hub's one parser (refuses NaN, NUL, unpaired surrogates, invalid UTF-8, …);
4. shape: the fields each subject's body must have.

A body that fails raises `Dropped` with a short `reason` (the `reason` label of
`uaip_nats_messages_dropped_total`) and a sentence for the log. The relay drops that message alone.
"""

from __future__ import annotations

import re
from typing import Any

import pydantic

from app.api.models import AckBody
from app.core.json_input import MAX_JSON_DEPTH, InvalidJSON, decode_json
from app.services.commands.acks import Ack
from app.services.commands.messages import parse_message_id
from app.web.parsing import validation_details

# `reason` labels of uaip_nats_messages_dropped_total
TOO_LARGE = "too_large"
TOO_DEEP = "too_deep"
INVALID_JSON = "invalid_json"
INVALID = "invalid"  # JSON, but not the body this subject carries
UNKNOWN_MESSAGE = "unknown_message"  # an ack whose message_id cannot name a command (not a UUID)

HEARTBEAT_STATUSES = ("online", "error")

# More opening brackets in a row (whitespace aside) than MAX_JSON_DEPTH allows.
_RUNAWAY = re.compile(rb"[\\[{]{%d}" % (MAX_JSON_DEPTH + 1))
_WHITESPACE = b" \t\r\n"
# A JSON string, escapes included: brackets inside one are text, not nesting.
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)


class Dropped(Exception):
    """A NATS body the relay does not apply; `reason` is the metric label, `message` the log sentence."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def nesting_exceeds(data: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """A pre-scan of the raw bytes, before any parser sees them: True when `data` opens more than `limit` arrays
    or objects in a row (the shape of a stack-exhausting body such as 1,500 `[`). Skipped, at the cost of two
    counts, when the body holds too few brackets to be that deep. Subtler deep bodies (`[1,[1,[1,…`) are left to
    `decode_json`, whose parser stops at the interpreter's recursion limit and whose iterative check enforces
    `limit`; both are bounded by the size check that comes first."""
    if data.count(b"[") + data.count(b"{") <= limit:
        return False
    pattern = _RUNAWAY if limit == MAX_JSON_DEPTH else re.compile(rb"[\\[{]{%d}" % (limit + 1))
    data = data.translate(None, _WHITESPACE)
    if pattern.search(data) is None:
        return False
    # Only now the strings are cut out (a string of brackets is not nesting): rare, and bounded by the size.
    return b'"' not in data or pattern.search(_STRING.sub(b'""', data)) is not None


def decode_body(data: bytes, max_bytes: int) -> Any:
    """Steps 1-3 of the module docstring: the decoded JSON, or Dropped."""
    if len(data) > max_bytes:
        raise Dropped(TOO_LARGE, f"The body is larger than {max_bytes} bytes.")
    if nesting_exceeds(data):
        raise Dropped(TOO_DEEP, f"The body is nested deeper than {MAX_JSON_DEPTH} levels.")
    try:
        return decode_json(data)
    except InvalidJSON as exc:
        reason = TOO_DEEP if "nested deeper" in exc.message else INVALID_JSON
        raise Dropped(reason, exc.message) from None


def parse_ack(device_id: str, data: bytes, max_bytes: int) -> Ack:
    """An ack on `uaip.devices.{id}.acks`, validated like the REST body (unknown fields ignored)."""
    raw = decode_body(data, max_bytes)
    if not isinstance(raw, dict) or not isinstance(raw.get("message_id"), str):
        raise Dropped(INVALID, "An ack must be a JSON object with a string message_id.")
    try:
        body = AckBody.model_validate({key: raw[key] for key in ("status", "result", "error") if key in raw})
    except pydantic.ValidationError as exc:
        problems = "; ".join(f"{field}: {text}" for field, text in validation_details(exc).items())
        raise Dropped(INVALID, f"The ack is invalid ({problems}).") from None
    if parse_message_id(raw["message_id"]) is None:
        # No command has such an id: dropped here, without a database round trip.
        raise Dropped(UNKNOWN_MESSAGE, "The ack's message_id is not a message id (a UUID).")
    return Ack(device_id, raw["message_id"], body.status, body.result, body.error)


def parse_heartbeat(data: bytes, max_bytes: int) -> str:
    """The status a heartbeat reports: `{"status": "online"|"error", ...}`, or an empty body (online)."""
    if not data.strip():
        return "online"
    body = decode_body(data, max_bytes)
    if not isinstance(body, dict):
        raise Dropped(INVALID, "A heartbeat must be empty or a JSON object.")
    status = body.get("status", "online")
    if status not in HEARTBEAT_STATUSES:
        raise Dropped(INVALID, 'A heartbeat\'s status must be "online" or "error".')
    return status
