"""How the hub writes JSON responses: orjson behind Flask's JSON provider interface (`jsonify`, `app.json`).

Encoding is a large share of a list request's Python time: for a page of 50 devices orjson takes ~6 µs where
the standard library takes ~85 µs (docs/performance.md). The document is the one Flask's default provider
would write with `sort_keys=False` and `ensure_ascii=False`: keys in insertion order, compact separators,
non-ASCII text as UTF-8, a trailing newline. Values orjson does not write itself go through Flask's own
`default` (dates as HTTP dates, dataclasses, decimals, `__html__`), as before.

Whatever orjson refuses — integers beyond 64 bits, non-string keys, nesting deeper than 254 — is written by the
standard library with the same settings; text holding lone surrogates (which UTF-8 cannot carry) as Flask's
default provider always wrote it, escaped (`ensure_ascii`). So everything encodable before still is. The one
visible difference from the standard library is how floats with small exponents are spelled (`1e-7` and
`0.00001` where it writes `1e-07` and `1e-05`): the same numbers.
"""

from __future__ import annotations

import json
from typing import Any

import orjson
from flask.json.provider import DefaultJSONProvider

# Dates and dataclasses go to Flask's `default`, so they read as they always did (orjson's own formats differ).
ORJSON_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


class HubJSONProvider(DefaultJSONProvider):
    """`app.json`: orjson for responses and `dumps`, the standard library where orjson cannot."""

    sort_keys = False
    ensure_ascii = False

    def encode(self, obj: Any) -> bytes:
        """The compact UTF-8 document, as bytes."""
        try:
            return orjson.dumps(obj, default=self.default, option=ORJSON_OPTIONS)
        except TypeError:  # orjson.JSONEncodeError is a TypeError
            pass
        text = json.dumps(obj, default=self.default, ensure_ascii=False, sort_keys=False, separators=(",", ":"))
        try:
            return text.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate
            return json.dumps(obj, default=self.default, sort_keys=False, separators=(",", ":")).encode("ascii")

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        if kwargs:  # explicit json.dumps options (indent, ...): the standard library honours them
            return super().dumps(obj, **kwargs)
        return self.encode(obj).decode("utf-8")

    def response(self, *args: Any, **kwargs: Any):
        if (self.compact is None and self._app.debug) or self.compact is False:
            return super().response(*args, **kwargs)  # indented, for humans
        obj = self._prepare_response_obj(args, kwargs)
        return self._app.response_class(self.encode(obj) + b"\n", mimetype=self.mimetype)
