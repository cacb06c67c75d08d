"""The WSGI apps the benchmarks serve, as gunicorn factories (`bench.apps:NAME()`).

They run in the runtime-only venv, so this module imports nothing but the app's own dependencies.

- `bare_device_list()`: the baseline for the device-list benchmark — bare Flask + psycopg2 running the hub's
  two list statements. No auth, no validation, no pipeline: only what any Flask app must do to answer the same
  question (pool checkout, the same SQL, the same JSON).
- `ping_full()` / `ping_bare()`: one tiny view behind the hub's whole pipeline (create_app: request id, JSON
  access log, Redis limit check, metrics, security headers) or behind nothing, for the pipeline overhead.
"""

from __future__ import annotations

import os

import psycopg2.extras
import psycopg2.pool
from flask import Blueprint, Flask, jsonify, request

from app.services.registry import DEVICE_COLUMNS, device_view

PING = "/api/v1/bench/ping"


def bare_device_list() -> Flask:
    app = Flask(__name__)
    pool = psycopg2.pool.ThreadedConnectionPool(8, 8, os.environ["DATABASE_URL"], options="-c timezone=UTC")

    @app.get("/api/v1/devices")
    def devices():
        limit = int(request.args.get("limit", 100))
        conn = pool.getconn()
        try:
            with conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
                cur.execute(
                    f"SELECT {DEVICE_COLUMNS} FROM devices ORDER BY registered_at, device_id LIMIT %(limit)s OFFSET 0",
                    {"limit": limit, "timeout": 90},
                )
                rows = cur.fetchall()
                cur.execute("SELECT count(*) AS total FROM devices")
                total = cur.fetchone()["total"]
            conn.commit()
        finally:
            pool.putconn(conn)
        return jsonify({"devices": [device_view(r) for r in rows], "total": total, "limit": limit, "offset": 0})

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
