"""The W3C TD 1.1 JSON Schema as a validator, with the format checks it names (uri, date-time, iri-reference)."""

from __future__ import annotations

import json
from pathlib import Path

from jsonschema import Draft7Validator

TD_SCHEMA = json.loads((Path(__file__).resolve().parents[1] / "schemas" / "td-json-schema-validation.json").read_text())
TD_VALIDATOR = Draft7Validator(TD_SCHEMA, format_checker=Draft7Validator.FORMAT_CHECKER)


def td_errors(document: dict) -> list[str]:
    """Every way `document` breaks the W3C schema, as readable lines (empty: it validates)."""
    return [f"{'/'.join(map(str, error.absolute_path))}: {error.message}"
            for error in TD_VALIDATOR.iter_errors(document)]
