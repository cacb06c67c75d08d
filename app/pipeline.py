"""Before/after-request hooks every request passes through: correlation id and security headers."""

from __future__ import annotations

import uuid

from flask import Flask, g, request

from app.validation import is_identifier

REQUEST_ID_HEADER = "X-Request-ID"


def assign_request_id() -> None:
    """Keep the caller's X-Request-ID when it is 1–128 of [A-Za-z0-9._:-]; otherwise make a new UUID."""
    supplied = request.headers.get(REQUEST_ID_HEADER, "")
    g.request_id = supplied if is_identifier(supplied) else str(uuid.uuid4())


def add_response_headers(response):
    response.headers[REQUEST_ID_HEADER] = g.get("request_id") or str(uuid.uuid4())
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    return response


def init_app(app: Flask) -> None:
    app.before_request(assign_request_id)
    app.after_request(add_response_headers)
