"""What every request passes through before and after its view (docs/architecture.md, "The path of a request").

In order: the client address (werkzeug ProxyFix, only with TRUSTED_PROXY_HOPS > 0), the correlation id and start
time (first before-request hook), then — registered by their own modules in create_app — metrics and the rate
limiter; on the way out CORS and security headers, and last of all the access log line. The request object
itself (`HubRequest`) enforces MAX_MESSAGE_SIZE_BYTES on every body, chunked ones included.
"""

from __future__ import annotations

import time
import uuid
from typing import IO

from flask import Flask, current_app, g, request
from flask import Request as FlaskRequest
from flask_cors import CORS
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.utils import cached_property
from werkzeug.wsgi import LimitedStream

from app.core import audit_context
from app.core.json_input import is_identifier
from app.telemetry.logs import log_access

REQUEST_ID_HEADER = "X-Request-ID"

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    # A JSON API is never framed and loads nothing.
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
}

# MCP clients running in a browser send the protocol's own headers and read the Bearer challenge.
MCP_HEADERS = ["MCP-Protocol-Version", "Mcp-Method", "Mcp-Name"]
CORS_ALLOW_HEADERS = [
    "Authorization", "Content-Type", "If-Match", "If-None-Match", "Idempotency-Key", REQUEST_ID_HEADER, *MCP_HEADERS,
]
CORS_EXPOSE_HEADERS = [
    REQUEST_ID_HEADER, "ETag", "Location", "Retry-After", "WWW-Authenticate",
    "X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset",
]
CORS_MAX_AGE_SECONDS = 600


class _AtMost(LimitedStream):
    """A body stream that may hold `limit` bytes: reading a byte more raises 413 (RequestEntityTooLarge)."""

    def __init__(self, stream: IO[bytes], limit: int) -> None:
        super().__init__(stream, limit + 1, is_max=True)  # one byte of look-ahead tells "exactly full" from "more"
        self.allowed = limit

    def readinto(self, buffer) -> int | None:  # type: ignore[override]
        size = super().readinto(buffer)
        if self.tell() > self.allowed:
            raise RequestEntityTooLarge()
        return size


class HubRequest(FlaskRequest):
    """Flask's request, with the body limit enforced on bodies that declare no length (chunked uploads).

    With a Content-Length over MAX_CONTENT_LENGTH werkzeug answers 413 before reading. A chunked body has no
    length; werkzeug then reads up to the limit and stops *quietly*, so a view saw the first 64 KiB as if they
    were the whole body (truncated JSON: 400 INVALID_JSON; a truncated token form: 401). Here such a body is
    read one byte past the limit, and that byte means 413, the same answer as with a Content-Length."""

    @cached_property
    def stream(self) -> IO[bytes]:
        limit = self.max_content_length
        if limit is None or self.content_length is not None or not self.environ.get("wsgi.input_terminated"):
            return super().stream
        return _AtMost(self.environ["wsgi.input"], limit)


def assign_request_id() -> None:
    """Keep the caller's X-Request-ID when it is 1–128 of [A-Za-z0-9._:-]; otherwise make a new UUID."""
    g.request_started = time.perf_counter()
    supplied = request.headers.get(REQUEST_ID_HEADER, "")
    g.request_id = supplied if is_identifier(supplied) else str(uuid.uuid4())
    audit_context.begin(g.request_id)  # no actor until authenticated (app/web/authz.py)


def add_response_headers(response):
    response.headers[REQUEST_ID_HEADER] = g.get("request_id") or str(uuid.uuid4())
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def mark_request_urls(response):
    """With UAIP_PUBLIC_URL unset the hub names itself after the request's Host (and, behind trusted proxies, the
    forwarded scheme and host): an answer carrying such a URL must not be stored by a shared cache, or one
    client's Host header would be served to the next. Marked: discovery documents, Thing Descriptions (and
    anything else built with `published_base_url`), every challenge (`WWW-Authenticate`) and every `Location`."""
    settings = current_app.config["SETTINGS"]
    if settings.public_url:
        return response
    derived = (g.get("urls_from_request") or "WWW-Authenticate" in response.headers or "Location" in response.headers
               or request.path == "/.well-known" or request.path.startswith("/.well-known/"))
    if derived:
        response.headers["Cache-Control"] = "no-store"
        response.vary.add("Host")
        if settings.trusted_proxy_hops > 0:
            response.vary.update(("X-Forwarded-Host", "X-Forwarded-Proto"))
    return response


def client_id() -> str | None:
    """Who called, for the access log: set by the auth decorators, else the token the limiter already decoded."""
    if g.get("client_id"):
        return g.client_id
    principal = g.get("token_principal")
    return principal.subject if principal is not None else None


def write_access_log(response):
    started = g.get("request_started")
    log_access(response, time.perf_counter() - started if started is not None else 0.0, client_id())
    return response


def init_app(app: Flask) -> None:
    settings = app.config["SETTINGS"]
    app.request_class = HubRequest
    if settings.trusted_proxy_hops > 0:
        # Only the proxies' own entries are trusted: the N-th X-Forwarded-For value from the right, and the scheme and
        # host the same proxies forwarded (the public base URL, app/web/urls.py, when UAIP_PUBLIC_URL is unset).
        hops = settings.trusted_proxy_hops
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops, x_port=0, x_prefix=0)
    app.before_request(assign_request_id)
    # after_request hooks run in reverse order of registration: the access line is written last.
    app.after_request(write_access_log)
    app.after_request(add_response_headers)
    app.after_request(mark_request_urls)
    if settings.cors_origins:
        CORS(
            app,
            resources={r"/api/*": {}, r"/.well-known/*": {}},  # the API, and the OAuth discovery documents
            origins=list(settings.cors_origins),
            allow_headers=CORS_ALLOW_HEADERS,
            expose_headers=CORS_EXPOSE_HEADERS,
            max_age=CORS_MAX_AGE_SECONDS,
            supports_credentials=False,
        )
