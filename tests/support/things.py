"""The W3C TD 1.1 JSON Schema as a validator, with the format checks it names (uri, date-time, iri-reference)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import quote, urlencode

from jsonschema import Draft7Validator

TD_SCHEMA = json.loads((Path(__file__).resolve().parents[1] / "schemas" / "td-json-schema-validation.json").read_text())
TD_VALIDATOR = Draft7Validator(TD_SCHEMA, format_checker=Draft7Validator.FORMAT_CHECKER)


def td_errors(document: dict) -> list[str]:
    """Every way `document` breaks the W3C schema, as readable lines (empty: it validates)."""
    return [f"{'/'.join(map(str, error.absolute_path))}: {error.message}"
            for error in TD_VALIDATOR.iter_errors(document)]


def expand(href: str, **values) -> str:
    """A form's href with its URI template variables filled (RFC 6570 `{name}` and `{?a,b}`, the forms a Thing
    Description of the hub uses); a variable given no value is left out."""
    def fill(match: re.Match) -> str:
        operator, names = match.group(1), match.group(2).split(",")
        if operator == "?":
            given = {name: values[name] for name in names if values.get(name) is not None}
            return "?" + urlencode(given) if given else ""
        return quote(str(values[names[0]]), safe="")

    return re.sub(r"\{(\??)([^}]+)\}", fill, href)
