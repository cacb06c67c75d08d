"""One JSON error envelope for every failure: `{"error", "code", "details", "request_id"}` (docs/api.md, "Errors").

All error responses are built here, so a route, a decorator, werkzeug's routing and an unexpected exception all
look the same to a client. 4xx are logged as warnings by the access log; unexpected exceptions are logged here
with their traceback, which never reaches the response.
"""

from __future__ import annotations

import logging

import psycopg2.errors
from flask import Flask, g, jsonify
from werkzeug.exceptions import HTTPException

from app.core.errors import APIError
from app.infra.db import DatabaseUnavailable

log = logging.getLogger(__name__)


# Codes for errors raised by werkzeug/Flask themselves (unknown route, wrong method, body too large, ...).
HTTP_CODES = {
    400: ("BAD_REQUEST", "The request could not be understood."),
    401: ("UNAUTHORIZED", "Authentication is required."),
    403: ("FORBIDDEN", "You are not allowed to do this."),
    404: ("NOT_FOUND", "No such resource."),
    405: ("METHOD_NOT_ALLOWED", "This method is not allowed on this resource."),
    406: ("NOT_ACCEPTABLE", "The requested representation is not available."),
    409: ("CONFLICT", "The request conflicts with the current state."),
    412: ("PRECONDITION_FAILED", "The resource has changed since you read it."),
    413: ("PAYLOAD_TOO_LARGE", "The request body is too large."),
    414: ("URI_TOO_LONG", "The request URI is too long."),
    415: ("UNSUPPORTED_MEDIA_TYPE", "The request body must be JSON (Content-Type: application/json)."),
    428: ("PRECONDITION_REQUIRED", "This request must be conditional."),
    429: ("RATE_LIMITED", "Too many requests; slow down."),
    431: ("REQUEST_HEADER_FIELDS_TOO_LARGE", "Request headers are too large."),
    500: ("INTERNAL_ERROR", "An internal error occurred."),
    503: ("SERVICE_UNAVAILABLE", "The service is temporarily unavailable."),
}


def error_response(status: int, code: str, message: str, details: dict | None = None, headers=None):
    body = {
        "error": message,
        "code": code,
        "details": details or {},
        "request_id": g.get("request_id"),
    }
    response = jsonify(body)
    response.status_code = status
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def _handle_api_error(exc: APIError):
    return error_response(exc.status, exc.code, exc.message, exc.details, exc.headers)


def _handle_http_exception(exc: HTTPException):
    status = exc.code or 500
    code, message = HTTP_CODES.get(status, ("HTTP_ERROR", exc.name))
    details = {}
    if status == 405 and exc.valid_methods:
        details["allowed_methods"] = sorted(exc.valid_methods)
    response = error_response(status, code, message, details)
    # Keep the headers werkzeug computed (Allow on 405, Retry-After on 429, ...).
    for name, value in exc.get_headers():
        if name.lower() != "content-type":
            response.headers[name] = value
    return response


def _handle_database_unavailable(exc: DatabaseUnavailable):
    log.warning("database unavailable: %s", exc)
    return error_response(
        503, "SERVICE_UNAVAILABLE", "The database is temporarily unavailable; retry shortly.",
        headers={"Retry-After": "5"},
    )


def _handle_statement_timeout(exc: psycopg2.errors.QueryCanceled):
    # A statement that hit statement_timeout (a held lock, an overloaded server) is transient, like an outage:
    # 503 with Retry-After, not a 500.
    log.warning("database statement timed out: %s", str(exc).strip())
    return error_response(
        503, "SERVICE_UNAVAILABLE", "The database did not answer in time; retry shortly.",
        headers={"Retry-After": "5"},
    )


def _handle_unexpected(exc: Exception):
    if isinstance(exc, HTTPException):
        return _handle_http_exception(exc)
    log.exception("unhandled error")
    code, message = HTTP_CODES[500]
    return error_response(500, code, message)


def init_app(app: Flask) -> None:
    app.register_error_handler(APIError, _handle_api_error)
    app.register_error_handler(HTTPException, _handle_http_exception)
    app.register_error_handler(DatabaseUnavailable, _handle_database_unavailable)
    app.register_error_handler(psycopg2.errors.QueryCanceled, _handle_statement_timeout)
    app.register_error_handler(Exception, _handle_unexpected)
