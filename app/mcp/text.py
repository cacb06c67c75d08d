"""Text that devices and clients wrote (names, metadata, params, results), made safe to put in front of a model.

Everything a tool returns passes through `scrub`: every string, keys included, loses its control characters
(Unicode category Cc: C0, DEL and C1) and the bidirectional controls that can make text read differently from
what it is (ALM, LRM, RLM, the embeddings and overrides U+202A–U+202E, the isolates U+2066–U+2069). Tool names,
descriptions and schemas are the hub's own fixed text and never contain device data.
"""

from __future__ import annotations

import re
from typing import Any

UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def scrub(value: Any) -> Any:
    """`value` (decoded JSON) with every string cleaned; numbers, booleans and null unchanged."""
    if isinstance(value, str):
        return UNSAFE.sub("", value)
    if isinstance(value, dict):
        return {scrub(key): scrub(item) for key, item in value.items()}
    if isinstance(value, list):
        return [scrub(item) for item in value]
    return value
