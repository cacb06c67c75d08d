"""Text that clients and devices wrote, made safe to show to a person or a model in a document the hub serves.

Control characters (Unicode category Cc: C0, DEL, C1) and the bidirectional controls that can make text read
differently from what it is (ALM, LRM, RLM, the embeddings and overrides U+202A–U+202E, the isolates
U+2066–U+2069) are removed; tabs and line breaks become spaces.
"""

from __future__ import annotations

import re

WHITESPACE_CONTROLS = re.compile("[\t\n\r]+")
UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def without_controls(text: str) -> str:
    return UNSAFE.sub("", WHITESPACE_CONTROLS.sub(" ", text))
