"""The WSGI apps the benchmarks serve, as gunicorn factories (`bench.apps:NAME()`).

They run in the runtime-only venv, so this module imports nothing but the app's own dependencies.

- `bare_device_list()`: the baseline for the device-list benchmark — the simplest correct code a developer would
  write with Flask and psycopg2 to answer `GET /api/v1/devices?limit=&offset=` with the hub's document: every
  device field, the effective status (a silent `online`/`error` device reads `offline`), timestamps as RFC 3339
  UTC milliseconds, the total, limit and offset. No auth, no validation, no pipeline, and nothing borrowed from
  the hub's code: a dict cursor, the page and a count in one transaction, `jsonify`. Its only settings are the
  ones that make the document the hub's, byte for byte (field order, UTF-8 text);
  tests/integration/test_bench_apps.py compares the two documents.
- `tuned_device_list()`: the same document, written the way a performance-minded developer would without the
  hub's pipeline: the hub's single statement (page and total together), tuple rows, timestamps sliced from
  PostgreSQL's text instead of datetimes, orjson. The hub must reach 0.8× of it: the whole pipeline (token, rate
  limit, request id, access line, metrics) may cost at most a fifth of the throughput.
- `ping_full()` / `ping_bare()`: one tiny view behind the hub's whole pipeline (create_app: request id, JSON
  access log, Redis rate-limit check, metrics, security headers) or behind nothing, for the pipeline overhead.
- `ping_checked()` / `ping_unchecked()`: the whole pipeline plus `GET /api/v1/bench/ping-auth`, a tiny view behind
  `require_scope` (bearer token verified, then the revocation check); `ping_unchecked()` answers the revocation
  check with "not revoked" without asking Redis, so the two differ by that check alone (bench/revocation.py).
"""

from __future__ import annotations

import datetime as dt
import json
import os

import orjson
import psycopg2.extensions
import psycopg2.extras
import psycopg2.pool
from flask import Blueprint, Flask, Response, jsonify, request

PING = "/api/v1/bench/ping"
PING_AUTH = "/api/v1/bench/ping-auth"

BARE_DEVICE_PAGE = (
    "SELECT device_id, name, device_type, "
    "CASE WHEN status IN ('online', 'error') AND last_seen < now() - make_interval(secs => %(timeout)s) "
    "THEN 'offline' ELSE status END AS status, "
    "capabilities, location, metadata, last_seen, registered_at, updated_at, version "
    "FROM devices ORDER BY registered_at, device_id LIMIT %(limit)s OFFSET %(offset)s"
)


def _rfc3339(value: dt.datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def bare_device_list() -> Flask:
    app = Flask(__name__)
    app.json.sort_keys = False  # fields in the hub's order
    app.json.ensure_ascii = False  # non-ASCII text as UTF-8, as the hub writes it
    pool = psycopg2.pool.ThreadedConnectionPool(8, 8, os.environ["DATABASE_URL"], options="-c timezone=UTC")
    timeout = int(os.environ.get("HEARTBEAT_TIMEOUT_SECONDS", "90"))

    @app.get("/api/v1/devices")
    def devices():
        limit = int(request.args.get("limit", 100))
        offset = int(request.args.get("offset", 0))
        conn = pool.getconn()
        try:
            with conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
                cur.execute(BARE_DEVICE_PAGE, {"limit": limit, "offset": offset, "timeout": timeout})
                rows = cur.fetchall()
                cur.execute("SELECT count(*) AS total FROM devices")
                total = cur.fetchone()["total"]
            conn.commit()
        finally:
            pool.putconn(conn)
        page = [
            {**row, "last_seen": _rfc3339(row["last_seen"]), "registered_at": _rfc3339(row["registered_at"]),
             "updated_at": _rfc3339(row["updated_at"])}
            for row in rows
        ]
        return jsonify({"devices": page, "total": total, "limit": limit, "offset": offset})

    return app


TUNED_DEVICE_PAGE = (
    "SELECT device_id, name, device_type, "
    "CASE WHEN status IN ('online', 'error') AND last_seen < now() - make_interval(secs => %(timeout)s) "
    "THEN 'offline' ELSE status END AS status, "
    "capabilities, location, metadata, last_seen, registered_at, updated_at, version, "
    "(SELECT count(*) FROM devices) AS total "
    "FROM devices ORDER BY registered_at, device_id LIMIT %(limit)s OFFSET %(offset)s"
)
TUNED_FIELDS = ("device_id", "name", "device_type", "status", "capabilities", "location", "metadata", "last_seen",
                "registered_at", "updated_at")


def _text_timestamp(text: str | None, _cursor) -> str | None:
    """RFC 3339 with milliseconds from PostgreSQL's own text (`2026-11-26 18:24:20.933123+00` in a UTC session)."""
    if text is None:
        return None
    fraction = text[19:-3] or "."
    return f"{text[:10]}T{text[11:19]}{fraction.ljust(4, '0')[:4]}Z"


TEXT_TIMESTAMPTZ = psycopg2.extensions.new_type((1184,), "BENCH_TEXT_TIMESTAMPTZ", _text_timestamp)


def tuned_device_list() -> Flask:
    app = Flask(__name__)
    pool = psycopg2.pool.ThreadedConnectionPool(8, 8, os.environ["DATABASE_URL"], options="-c timezone=UTC")
    timeout = int(os.environ.get("HEARTBEAT_TIMEOUT_SECONDS", "90"))

    @app.get("/api/v1/devices")
    def devices():
        limit = int(request.args.get("limit", 100))
        offset = int(request.args.get("offset", 0))
        conn = pool.getconn()
        try:
            conn.autocommit = True  # one statement: no BEGIN/COMMIT round trips
            with conn.cursor() as cur:
                psycopg2.extensions.register_type(TEXT_TIMESTAMPTZ, cur)
                cur.execute(TUNED_DEVICE_PAGE, {"limit": limit, "offset": offset, "timeout": timeout})
                rows = cur.fetchall()
                if rows or offset == 0:
                    total = rows[0][-1] if rows else 0
                else:  # paged past the end: no row carries the total
                    cur.execute("SELECT count(*) FROM devices")
                    total = cur.fetchone()[0]
        finally:
            pool.putconn(conn)
        page = [{**dict(zip(TUNED_FIELDS, row[:10], strict=True)), "version": row[10]} for row in rows]
        document = {"devices": page, "total": total, "limit": limit, "offset": offset}
        try:
            body = orjson.dumps(document)
        except TypeError:  # integers beyond 64 bits: the standard library, same bytes otherwise
            body = json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        return Response(body + b"\n", mimetype="application/json")  # the newline Flask's jsonify adds

    return app


def _ping_blueprint() -> Blueprint:
    blueprint = Blueprint("bench", __name__)
    blueprint.add_url_rule("/bench/ping", "ping", lambda: jsonify({"ok": True}))
    return blueprint


def ping_full() -> Flask:
    from app import create_app
    from app.api import API_PREFIX

    app = create_app()
    app.register_blueprint(_ping_blueprint(), url_prefix=API_PREFIX)
    return app


def ping_bare() -> Flask:
    from app.api import API_PREFIX

    app = Flask(__name__)
    app.register_blueprint(_ping_blueprint(), url_prefix=API_PREFIX)
    return app


def _ping_auth_app() -> Flask:
    from app.api import API_PREFIX
    from app.web.authz import require_scope

    app = ping_full()
    blueprint = Blueprint("bench_auth", __name__)
    blueprint.add_url_rule("/bench/ping-auth", "ping_auth", require_scope("device:read")(lambda: jsonify({"ok": True})))
    app.register_blueprint(blueprint, url_prefix=API_PREFIX)
    return app


def ping_checked() -> Flask:
    return _ping_auth_app()


def ping_unchecked() -> Flask:
    from app.ratelimit import hooks
    from app.web import authz

    # This process only: the revocation check answered without Redis, and its keys not read by the limiter.
    authz._revoked = lambda principal: False
    hooks.revocation_keys_to_read = lambda: None
    return _ping_auth_app()
