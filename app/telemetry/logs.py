"""Logging: stdlib `logging`, configured once per process, one line per record on stdout (docs/operations.md, "Logs").

`LOG_FORMAT=json` writes one JSON object per line (`timestamp`, `level`, `logger`, `message`, `request_id`, then any
`extra={...}` fields, then `exception` with the traceback); `text` writes the same facts for humans. The request id
of the request a record is logged in is added automatically, so application code never passes it; so are
`trace_id` and `span_id` (after `request_id`) while tracing is on and a span is active (app/telemetry/tracing.py).

The same handler serves the app (`create_app`), the `uaip-hub` CLI and relay (they build the app too) and gunicorn's
own error log (`gunicorn_logconfig()` is `logconfig_dict` in gunicorn.conf.py), so a deployment has one format.
Gunicorn's own access line stays off (`GunicornLogger`): the app writes exactly one access line per request.

One record is one line, whatever the logged text holds, so a request cannot forge log lines: the JSON format
escapes every control character and the Unicode line separators; the text format escapes control characters,
line separators and bidirectional controls (as `\n`, `\x1b`, `\u2028`, ...) in every field, and indents each
line of a traceback by four spaces, so only a record's first line starts at column 0.

Secrets never reach a line, by three defensive layers applied to every field, including tracebacks:
1. fields whose *name* looks secret (`client_secret`, `password`, `token`, `authorization`, ...) are replaced;
2. patterns that look like credentials (`Bearer …`, `Basic …`, JWTs, `secret=…`, `"password": "…"`,
   `scheme://user:password@`) are masked;
3. the exact credential values carried by the current request (Authorization header, its token or Basic password,
   secret-named body fields) and the process's configured secrets are masked wherever they appear.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import functools
import json
import logging
import re
import sys
import traceback
from collections.abc import Iterable
from typing import Any, TextIO

from flask import g, has_request_context, request
from gunicorn.glogging import Logger as _GunicornBaseLogger

from app.telemetry import tracing

REDACTED = "[REDACTED]"

SECRET_NAME = re.compile(r"secret|passw|pwd|token|authoriz|api[_-]?key|cookie|credential", re.IGNORECASE)
_SECRET_KEYS = (r"(?:client_secret|device_secret|secret|password|passwd|pwd|access_token|refresh_token|token"
                r"|api[_-]?key|authorization)")
SECRET_PATTERNS = (
    # Authorization schemes with their credential: "Bearer eyJ...", "Basic dXNlcjpwYXNz"
    (re.compile(r"\b(Bearer|Basic)\s+[A-Za-z0-9._~+/=-]{4,}", re.IGNORECASE), r"\1 " + REDACTED),
    # JWTs anywhere (header.payload.signature, header and payload are base64url JSON starting with '{"')
    (re.compile(r"eyJ[A-Za-z0-9_-]{2,}\.eyJ[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]*"), REDACTED),
    # key=value, key: value, "key": "value" for secret-looking keys (form bodies, JSON, repr() of dicts)
    (re.compile(r"(?i)(\b" + _SECRET_KEYS + r"""['"]?\s*[:=]\s*['"]?)([^'"&\s,;}]+)"""), r"\1" + REDACTED),
    # credentials in URLs: postgresql://user:password@host
    (re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]+:)([^@/\s]+)@"), r"\1" + REDACTED + "@"),
)
# Every SECRET_PATTERNS match contains one of these: text without any of them skips the substitutions (the
# common case: paths, routes, addresses, user agents), which keeps the access line cheap.
MAYBE_SECRET = re.compile(r"bearer|basic|eyJ|secret|passw|pwd|token|api[_-]?key|authoriz|://", re.IGNORECASE)
# Values shorter than this are not masked by exact match (they would mangle ordinary text); patterns still apply.
MIN_SECRET_VALUE_LENGTH = 6
MAX_FIELD_LENGTH = 8192

# Attributes every LogRecord has; anything else on a record came from `extra={...}`.
_RECORD_ATTRIBUTES = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__
) | {"message", "asctime", "taskName"}

_static_secrets: set[str] = set()
_static_secrets_longest_first: tuple[str, ...] = ()


def register_secrets(values: Iterable[str | None]) -> None:
    """Secrets this process holds (JWT secret, bootstrap secret): masked wherever they would appear."""
    global _static_secrets_longest_first
    _static_secrets.update(v for v in values if v and len(v) >= MIN_SECRET_VALUE_LENGTH)
    _static_secrets_longest_first = tuple(sorted(_static_secrets, key=len, reverse=True))


def _collect_body_secrets(value: Any, found: set[str], depth: int = 0) -> None:
    if depth > 8:
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, str) and SECRET_NAME.search(str(key)):
                found.add(item)
            else:
                _collect_body_secrets(item, found, depth + 1)
    elif isinstance(value, list):
        for item in value[:100]:
            _collect_body_secrets(item, found, depth + 1)


def _request_secrets() -> set[str]:
    """Credential values carried by the current request, computed once per request and only when needed."""
    if "log_secrets" in g:
        return g.log_secrets
    found: set[str] = set()
    header = request.headers.get("Authorization", "")
    if header:
        found.add(header)
        scheme, _, credential = header.partition(" ")
        credential = credential.strip()
        found.add(credential)
        if scheme.lower() == "basic":
            try:
                decoded = base64.b64decode(credential, validate=True).decode("utf-8", "replace")
            except (binascii.Error, ValueError):
                decoded = ""
            found.add(decoded)
            found.add(decoded.partition(":")[2])
    try:
        # Only a body the app already read (so logging never consumes a stream a view still needs).
        if request.__dict__.get("_cached_data") is not None or "form" in request.__dict__:
            if request.is_json:
                _collect_body_secrets(json.loads(request.get_data(cache=True) or b"null"), found)
            else:
                _collect_body_secrets(request.form.to_dict(), found)
    except Exception:  # noqa: BLE001 - a malformed body must not break logging
        pass
    g.log_secrets = {value for value in found if len(value) >= MIN_SECRET_VALUE_LENGTH}
    return g.log_secrets


def redact(text: str, values: Iterable[str] = ()) -> str:
    """Mask known secret values (longest first) and credential-shaped substrings in `text`."""
    # Most fields come with no request secrets: the process's own, sorted once, then serve.
    known = sorted({*values, *_static_secrets}, key=len, reverse=True) if values else _static_secrets_longest_first
    for value in known:
        if value in text:
            text = text.replace(value, REDACTED)
    if MAYBE_SECRET.search(text):
        for pattern, replacement in SECRET_PATTERNS:
            text = pattern.sub(replacement, text)
    if len(text) > MAX_FIELD_LENGTH:
        text = text[:MAX_FIELD_LENGTH] + "…"
    return text


def _clean(value: Any, values: Iterable[str]) -> Any:
    if isinstance(value, str):
        return redact(value, values)
    if isinstance(value, (int, float, bool)) or value is None:
        return value
    if isinstance(value, dict):
        return {str(k): (REDACTED if SECRET_NAME.search(str(k)) else _clean(v, values)) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_clean(item, values) for item in value]
    return redact(str(value), values)


@functools.lru_cache(maxsize=1024)
def _secret_named(field: str) -> bool:
    """SECRET_NAME for a record's field names: the same few names on every line, so the answers are kept."""
    return SECRET_NAME.search(field) is not None


def _timestamp(record: logging.LogRecord) -> str:
    moment = dt.datetime.fromtimestamp(record.created, dt.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def record_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The ordered, redacted fields of one record (shared by the JSON and text formats)."""
    in_request = has_request_context()
    # Access lines carry only structured, non-secret fields: skip the per-request scan for them.
    values = _request_secrets() if in_request and record.name != ACCESS_LOGGER else ()
    fields: dict[str, Any] = {
        "timestamp": _timestamp(record),
        "level": record.levelname.lower(),
        "logger": record.name,
        "message": redact(record.getMessage(), values),
        "request_id": getattr(record, "request_id", None) or (g.get("request_id") if in_request else None),
    }
    if tracing.active:  # tracing off: this check is all it costs
        trace_ids = tracing.log_ids()
        if trace_ids is not None:
            fields["trace_id"], fields["span_id"] = trace_ids
    for key, value in record.__dict__.items():
        if key in _RECORD_ATTRIBUTES or key in fields or key.startswith("_"):
            continue
        fields[key] = REDACTED if _secret_named(key) else _clean(value, values)
    if record.exc_info and record.exc_info[0] is not None:
        fields["exception"] = redact("".join(traceback.format_exception(*record.exc_info)).rstrip(), values)
    elif record.exc_text:
        fields["exception"] = redact(record.exc_text, values)
    if record.stack_info:
        fields["stack"] = redact(record.stack_info, values)
    return fields


# json.dumps escapes C0 controls but not these, which many readers (Python's splitlines, older JavaScript) take
# for line breaks.
_JSON_LINE_BREAKS = re.compile("[\x85\u2028\u2029]")
# What must not reach a text line raw: C0 and C1 controls and DEL (newlines, carriage returns, terminal escapes),
# the Unicode line and paragraph separators, and the bidirectional controls that reorder text on screen.
_TEXT_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_SHORT_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
TRACEBACK_INDENT = "    "


def _escape_character(match: re.Match) -> str:
    char = match.group()
    code = ord(char)
    return _SHORT_ESCAPES.get(char) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


def escape_controls(text: str) -> str:
    """`text` with every character _TEXT_UNSAFE matches written as a visible escape (`\n`, `\x1b`, `\u202e`)."""
    return _TEXT_UNSAFE.sub(_escape_character, text) if _TEXT_UNSAFE.search(text) else text


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        line = json.dumps(record_fields(record), ensure_ascii=False, default=str, separators=(",", ":"))
        if _JSON_LINE_BREAKS.search(line):
            line = _JSON_LINE_BREAKS.sub(lambda match: f"\\u{ord(match.group()):04x}", line)
        return line


class TextFormatter(logging.Formatter):
    """`2025-01-01T12:00:00.000Z INFO  uaip.access [request-id] message key=value ...`, then the traceback (if
    any) with each of its lines indented. Control characters in any field are escaped (see the module docstring)."""

    def format(self, record: logging.LogRecord) -> str:
        fields = record_fields(record)
        head = f"{fields.pop('timestamp')} {fields.pop('level').upper():<7} {fields.pop('logger')}"
        request_id = fields.pop("request_id")
        message = fields.pop("message")
        exception = fields.pop("exception", None)
        extras = " ".join(f"{key}={value}" for key, value in fields.items())
        line = escape_controls(f"{head} [{request_id or '-'}] {message}" + (f" {extras}" if extras else ""))
        if exception:
            line += "".join(f"\n{TRACEBACK_INDENT}{escape_controls(part)}" for part in exception.split("\n"))
        return line


FORMATTERS = {"json": JsonFormatter, "text": TextFormatter}


class HubHandler(logging.StreamHandler):
    """The hub's stdout handler; its class marks it so reconfiguring replaces it instead of adding a second one."""

    def __init__(self, stream: TextIO | None = None, log_format: str = "json") -> None:
        super().__init__(stream if stream is not None else sys.stdout)
        self.setFormatter(FORMATTERS[log_format]())


def configure_logging(level: str = "info", log_format: str = "json", stream: TextIO | None = None) -> None:
    """Route every logger through one HubHandler on the root logger (idempotent: safe to call per create_app)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, HubHandler):
            root.removeHandler(handler)
    root.addHandler(HubHandler(stream, log_format))
    root.setLevel(level.upper())


def gunicorn_logconfig(level: str = "info", log_format: str = "json") -> dict[str, Any]:
    """`logconfig_dict` for gunicorn: its error log goes through the same handler and format as the app's; its
    access logger writes nowhere (the app's access line is the one line per request)."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {},
        "handlers": {"hub": {"()": HubHandler, "log_format": log_format}, "discard": {"class": "logging.NullHandler"}},
        "root": {"level": level.upper(), "handlers": ["hub"]},
        "loggers": {
            "gunicorn.error": {"level": level.upper(), "handlers": [], "propagate": True},
            "gunicorn.access": {"level": "CRITICAL", "handlers": ["discard"], "propagate": False},
        },
    }


class GunicornLogger(_GunicornBaseLogger):
    """`logger_class` for gunicorn: its error log as configured, and no access line at all. A `logconfig_dict`
    alone turns gunicorn's access logging on (it then formats a line per request for the `gunicorn.access`
    logger), so the access step itself is switched off here, where it costs nothing."""

    access_log_enabled = False  # gunicorn ≥ 27 skips gathering the access data

    def access(self, resp, req, environ, request_time) -> None:
        return None


# --- access log ----------------------------------------------------------------------------------------

ACCESS_LOGGER = "uaip.access"
access_log = logging.getLogger(ACCESS_LOGGER)


def access_level(status: int) -> int:
    if status >= 500:
        return logging.ERROR
    if status >= 400:
        return logging.WARNING
    return logging.INFO


def _short(value: str | None, limit: int = 512) -> str | None:
    return value if value is None or len(value) <= limit else value[:limit] + "…"


def log_access(response, duration_seconds: float, client_id: str | None) -> None:
    """The one access line per request, with every field docs/operations.md ("Logs") lists."""
    status = response.status_code
    level = access_level(status)
    if not access_log.isEnabledFor(level):
        return
    req = request._get_current_object()  # one context lookup instead of one per field
    path = _short(req.path)
    rule = req.url_rule.rule if req.url_rule is not None else None
    access_log.log(
        level,
        "%s %s %s",
        req.method,
        path,
        status,
        extra={
            "method": req.method,
            "path": path,
            "route": rule,
            "status": status,
            "duration_ms": round(duration_seconds * 1000, 3),
            "client_ip": req.remote_addr,
            "client_id": client_id,
            "user_agent": _short(req.headers.get("User-Agent")),
            "response_bytes": response.content_length or 0,
        },
    )


def init_app(app) -> None:
    settings = app.config["SETTINGS"]
    register_secrets([settings.jwt_secret, *settings.jwt_previous_secrets, settings.bootstrap_client_secret])
    configure_logging(settings.log_level, settings.log_format)
