"""Text that clients and devices wrote, made safe to show to a person or a model in a document the hub serves.

Control characters (Unicode category Cc: C0, DEL, C1) and the bidirectional controls that can make text read
differently from what it is (ALM, LRM, RLM, the embeddings and overrides U+202A–U+202E, the isolates
U+2066–U+2069) are removed; tabs and line breaks become spaces.
"""

from __future__ import annotations

import re
from typing import Any

WHITESPACE_CONTROLS = re.compile("[\t\n\r]+")
UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def without_controls(text: str) -> str:
    return UNSAFE.sub("", WHITESPACE_CONTROLS.sub(" ", text))


def scrub(value: Any) -> Any:
    """Decoded JSON with every string, keys included, passed through `without_controls`; other values unchanged.
    What the MCP tools return to agents (app/mcp/tools.py)."""
    if isinstance(value, str):
        return without_controls(value)
    if isinstance(value, dict):
        return {scrub(key): scrub(item) for key, item in value.items()}
    if isinstance(value, list):
        return [scrub(item) for item in value]
    return value
