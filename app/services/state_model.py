"""The device state document, as pure functions: merge patches, delta, size limits and the per-property
timestamp rule (docs/state.md). No SQL and no I/O here: app/services/state.py reads the row, calls these under the
row lock, and writes the result.

A state is two JSON objects, `reported` and `desired`, with metadata per top-level member (`reported`: when the
device said it; `desired`: when and by which client it was set) and one `version` for the whole document that
grows by 1 with every request or report that changes a value. The delta is what desired asks for and reported
does not show yet: every desired member whose value differs from the reported one (JSON equality on whole
values, so 1 == 1.0 but true != 1, and key order never matters).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from typing import Any

from app.schemas.validation import canonical

MAX_STATE_DEPTH = 16
FUTURE_TOLERANCE = dt.timedelta(seconds=5)


def json_equal(a: Any, b: Any) -> bool:
    return canonical(a) == canonical(b)


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396: `patch` applied to `target` (neither is modified). A non-object patch replaces the target; in an
    object patch `null` removes the member and objects merge recursively."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def delta(desired: dict[str, Any], reported: dict[str, Any]) -> dict[str, Any]:
    """The desired members the device has not reported yet (absent, or another value)."""
    return {name: value for name, value in desired.items()
            if name not in reported or not json_equal(reported[name], value)}


def json_size(value: Any) -> int:
    """Bytes of `value` as compact UTF-8 JSON (how the size limit counts)."""
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))


def json_depth(value: Any) -> int:
    """Nesting of a JSON value: a scalar is 0, an object or array one more than its deepest member (so the side
    object itself is level 1). Iterative: hostile nesting cannot exhaust the stack."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            deepest = max(deepest, level)
            stack.extend((child, level + 1) for child in item.values())
        elif isinstance(item, list):
            deepest = max(deepest, level)
            stack.extend((child, level + 1) for child in item)
    return deepest


def size_problem(side: str, document: dict[str, Any], max_bytes: int) -> dict[str, Any] | None:
    """Why `document` (one whole side) is too large, as error details; None when it fits."""
    depth = json_depth(document)
    if depth > MAX_STATE_DEPTH:
        return {"side": side, "depth": depth, "max_depth": MAX_STATE_DEPTH}
    size = json_size(document)
    if size > max_bytes:
        return {"side": side, "bytes": size, "max_bytes": max_bytes}
    return None


@dataclasses.dataclass
class Side:
    """One side of a state: its members and their metadata (name → {"timestamp", ...})."""

    values: dict[str, Any]
    metadata: dict[str, dict[str, Any]]


@dataclasses.dataclass
class Outcome:
    """What one write did: the side after it, the members whose value changed (removed ones as None), the
    members it refreshed without a change, and the members it ignored (older than what is stored)."""

    side: Side
    changed: dict[str, Any]
    refreshed: list[str]
    ignored: list[str]


def parse_timestamp(text: str) -> dt.datetime:
    parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    if parsed.tzinfo is None:
        raise ValueError("a timestamp needs a UTC offset")
    return parsed.astimezone(dt.UTC)


def effective_time(sent: dt.datetime | None, received: dt.datetime) -> dt.datetime:
    """The time a report counts at: the device's timestamp, or the receive time when it sent none or one more
    than FUTURE_TOLERANCE ahead of the hub's clock."""
    if sent is None or sent > received + FUTURE_TOLERANCE:
        return received
    return sent


def apply_report(current: Side, patch: dict[str, Any], at: dt.datetime, stamp: str) -> Outcome:
    """A report's members merged into `reported`, member by member: a member whose stored timestamp is newer than
    `at` is ignored (an equal one applies), `null` removes the member and its metadata, a repeated value only
    refreshes its timestamp. `stamp` is `at` as stored (RFC 3339)."""
    values, metadata = dict(current.values), dict(current.metadata)
    changed: dict[str, Any] = {}
    refreshed: list[str] = []
    ignored: list[str] = []
    for name, value in patch.items():
        stored_at = metadata.get(name, {}).get("timestamp")
        if stored_at is not None and parse_timestamp(stored_at) > at:
            ignored.append(name)
            continue
        if value is None:
            metadata.pop(name, None)
            if name in values:
                del values[name]
                changed[name] = None
            continue
        new = merge_patch(values.get(name), value)
        metadata[name] = {"timestamp": stamp}
        if name in values and json_equal(values[name], new):
            refreshed.append(name)
        else:
            values[name] = new
            changed[name] = new
    return Outcome(Side(values, metadata), changed, refreshed, ignored)


def apply_desired(current: Side, patch: dict[str, Any], stamp: str, client_id: str | None) -> Outcome:
    """A merge patch applied to `desired`; each member it sets gets {"timestamp", "client_id"} metadata."""
    values, metadata = dict(current.values), dict(current.metadata)
    changed: dict[str, Any] = {}
    refreshed: list[str] = []
    for name, value in patch.items():
        if value is None:
            metadata.pop(name, None)
            if name in values:
                del values[name]
                changed[name] = None
            continue
        new = merge_patch(values.get(name), value)
        metadata[name] = {"timestamp": stamp, "client_id": client_id}
        if name in values and json_equal(values[name], new):
            refreshed.append(name)
        else:
            values[name] = new
            changed[name] = new
    return Outcome(Side(values, metadata), changed, refreshed, [])
