"""The baseline for the device-list benchmark: bare Flask + psycopg2 running the hub's list query.

No auth, no validation, no pipeline: only what any Flask app must do to answer the same question
(pool checkout, the same SQL, JSON encoding). Run under the same gunicorn settings as the hub.
"""

import os

import psycopg2.extras
import psycopg2.pool
from flask import Flask, jsonify, request

from app.services.registry import DEVICE_COLUMNS, device_view

app = Flask(__name__)
_pool = None


def pool():
    global _pool
    if _pool is None:
        _pool = psycopg2.pool.ThreadedConnectionPool(8, 8, os.environ["DATABASE_URL"], options="-c timezone=UTC")
    return _pool


@app.get("/api/v1/devices")
def devices():
    limit = int(request.args.get("limit", 100))
    conn = pool().getconn()
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
        pool().putconn(conn)
    return jsonify({"devices": [device_view(r) for r in rows], "total": total,
                    "limit": limit, "offset": 0})
