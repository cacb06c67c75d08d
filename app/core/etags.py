"""Entity tags of versioned resources (device types, device state): `"<version>"`, and the If-Match /
If-None-Match headers read against them."""

from __future__ import annotations


def parse_if_match(header: str | None) -> str | frozenset[int] | None:
    """None = no header, "*" = any, else the versions listed (a tag this hub never issued matches nothing)."""
    if header is None:
        return None
    if header.strip() == "*":
        return "*"
    versions = set()
    for tag in header.split(","):
        tag = tag.strip().removeprefix("W/").strip('"')
        if tag.isdigit() and len(tag) < 19:  # a version fits a bigint; longer digits match nothing anyway
            versions.add(int(tag))
    return frozenset(versions)
