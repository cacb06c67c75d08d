"""Text that clients and devices wrote, made safe to show to a person or a model in a document the hub serves.

What is removed (`invisible`): every character of the Unicode categories Cc (C0, DEL, C1 controls), Cf (format:
the bidirectional controls, zero-width space/joiners, soft hyphen, the tag characters U+E0000-U+E007F), Co
(private use), Cs (lone surrogates), Zl and Zp (U+2028 LINE SEPARATOR, U+2029 PARAGRAPH SEPARATOR), and the
variation selectors U+FE00-U+FE0F and U+E0100-U+E01EF. Such characters either do not show at all or change how
the text around them reads, so a name can carry instructions a person reviewing it never sees. Tabs and line
breaks become one space first, so words they separated stay apart.

Where the rule applies (docs/mcp.md, "Text written by devices and clients"): everything the MCP tools return and
every Thing Description is scrubbed on the way out; REST input of names, device types, capabilities and locations
is scrubbed on the way in (app/api/models.py), and so are the names of API clients and OAuth clients
(`visible_name`), so what is stored is what everyone sees; bodies with two keys of one object that would read the
same once scrubbed (metadata, command params, results) are refused (400
VALIDATION_ERROR), at REST and in send_command. Output keys that still collide (data that reached the hub another
way, e.g. a NATS ack) are kept distinct, never merged (`scrub`).
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf", "Co", "Cs", "Zl", "Zp"})
VARIATION_SELECTORS = ((0xFE00, 0xFE0F), (0xE0100, 0xE01EF))
# Planes 15 and 16 are private use (Co) from end to end, bar their last two noncharacters each: named as ranges
# instead of being walked one code point at a time at import.
PRIVATE_USE_PLANES = ((0xF0000, 0xFFFFD), (0x100000, 0x10FFFD))
_WALKED = ((0, 0x2FFFF), (0xE0000, 0xE0FFF))  # every other code point of these categories lies here


def _invisible_ranges() -> list[tuple[int, int]]:
    points = [
        code for low, high in _WALKED for code in range(low, high + 1)
        if unicodedata.category(chr(code)) in INVISIBLE_CATEGORIES
    ]
    points += [code for low, high in VARIATION_SELECTORS for code in range(low, high + 1)]
    ranges: list[tuple[int, int]] = []
    for code in sorted(set(points)):
        if ranges and ranges[-1][1] == code - 1:
            ranges[-1] = (ranges[-1][0], code)
        else:
            ranges.append((code, code))
    return ranges + list(PRIVATE_USE_PLANES)


def _character_class(ranges: list[tuple[int, int]]) -> str:
    def char(code: int) -> str:
        return f"\\U{code:08x}"

    return "[" + "".join(char(low) if low == high else f"{char(low)}-{char(high)}" for low, high in ranges) + "]"


WHITESPACE_CONTROLS = re.compile("[\t\n\r\u2028\u2029]+")
INVISIBLE = re.compile(_character_class(_invisible_ranges()))


def without_controls(text: str) -> str:
    """`text` with every invisible character removed (tabs and line breaks become one space first)."""
    return INVISIBLE.sub("", WHITESPACE_CONTROLS.sub(" ", text))


def has_invisible(text: str) -> bool:
    """Whether `text` holds a character `without_controls` would remove."""
    return INVISIBLE.search(text) is not None


CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")


class NotAName(ValueError):
    """A name that cannot be stored: control characters, or nothing visible once scrubbed (the message says which)."""


def visible_name(value: str) -> str:
    """A name a person reads to decide something (an API client's name, an OAuth client's `client_name` on the
    consent page): the rule of device names, invisible characters removed (`without_controls`), then trimmed.
    C0 control characters and DEL are refused, as is a name with nothing visible left (NotAName), so what is
    stored is exactly what is shown and nothing can hide in it."""
    if CONTROL_CHARACTERS.search(value):
        raise NotAName("must not contain control characters")
    clean = without_controls(value).strip()
    if not clean:
        raise NotAName("must contain visible characters")
    return clean


def colliding_keys(value: Any) -> list[str] | None:
    """The first group of object keys in decoded JSON `value` (nested objects and lists included) that differ but
    read the same once scrubbed, e.g. "ab" and "a\\u200bb"; None when every object's keys stay distinct.
    Iterative, so hostile nesting cannot exhaust the stack."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            seen: dict[str, str] = {}
            for key in item:
                clean = without_controls(key)
                if clean in seen:
                    return [seen[clean], key]
                seen[clean] = key
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return None


def escaped(key: str) -> str:
    """`key` with its invisible characters written out visibly (`\\u200b`, backslashes doubled): what `scrub` shows
    for a key that would collide, and how error messages name such keys."""
    def escape(match: re.Match) -> str:
        code = ord(match.group())
        return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"

    return INVISIBLE.sub(escape, key.replace("\\", "\\\\"))


def _scrub_object(value: dict) -> dict:
    out: dict[str, Any] = {}
    pending = []  # keys whose scrubbed form was taken by another key
    for key, item in value.items():
        clean = without_controls(key) if isinstance(key, str) else key
        if clean in out:
            pending.append((key, item))
        else:
            out[clean] = scrub(item)
    for key, item in pending:
        name = escaped(key)
        suffix = 2
        candidate = name
        while candidate in out:
            candidate = f"{name}~{suffix}"
            suffix += 1
        out[candidate] = scrub(item)
    return out


def scrub(value: Any) -> Any:
    """Decoded JSON with every string, keys included, passed through `without_controls`; other values unchanged.
    Two keys of one object that read the same once scrubbed are never merged: the later one is written with its
    invisible characters escaped (`a\\u200bb`), so an agent sees both values and that the key was unusual.
    What the MCP tools return to agents (app/mcp/tools.py)."""
    if isinstance(value, str):
        return without_controls(value)
    if isinstance(value, dict):
        return _scrub_object(value)
    if isinstance(value, list):
        return [scrub(item) for item in value]
    return value
