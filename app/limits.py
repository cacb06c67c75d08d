"""Per-client rate limits (CONTRACT.md §6, DESIGN.md decision 4): flask-limiter, moving window, on Redis.

One application-wide limit per client, `"{RATE_LIMIT_PER_MINUTE}/minute;{RATE_LIMIT_BURST}/12 seconds"`, counted
in Redis by an atomic Lua script, so every worker of every pod shares the same counters. The bucket is
`client:<client_id>` for a valid bearer token, `client:device:<device_id>` for device credentials this process has
already accepted, else `ip:<peer address>` (ProxyFix decides the address, see app/pipeline.py).

Redis down: flask-limiter switches to per-process memory (one warning per outage), probes Redis again with
exponential back-off (1 s … 32 s) and switches back by itself. Socket timeouts and a single retry bound the cost
of a dead Redis. REDIS_URL unset: memory only.
"""

from __future__ import annotations

from flask import Flask, g, request
from flask_limiter import Limiter, RequestLimit
from flask_limiter.errors import RateLimitExceeded
from redis.backoff import NoBackoff
from redis.retry import Retry

from app import cache, metrics
from app.errors import HTTP_CODES, error_response
from app.limit_storage import SCHEME_PREFIX, WindowReadingRedisStorage
from app.security import recognised_device, token_principal

STRATEGY = "moving-window"
BURST_WINDOW_SECONDS = 12
# Never limited: probes, scrapes, the API description and the OAuth discovery documents (paths, and everything
# below them).
EXEMPT_PATHS = ("/api/v1/system/health", "/metrics", "/api/v1/openapi.json", "/.well-known")


def limit_string(per_minute: int, burst: int) -> str:
    return f"{per_minute}/minute;{burst}/{BURST_WINDOW_SECONDS} seconds"


def limit_key() -> str:
    """The bucket of this request; a client can only select a bucket it holds credentials for."""
    principal = token_principal()
    if principal is not None:
        return f"client:{principal.subject}"
    device_id = recognised_device()
    if device_id is not None:
        return f"client:device:{device_id}"
    return f"ip:{request.remote_addr or 'unknown'}"


def is_exempt() -> bool:
    if request.method == "OPTIONS":  # CORS preflights carry no credentials; they would drain the IP bucket
        return True
    path = request.path
    return any(path == prefix or path.startswith(prefix + "/") for prefix in EXEMPT_PATHS)


def storage_settings(redis_url: str | None, key_prefix: str) -> tuple[str, dict]:
    """Storage URI and options: Redis with the hub's key prefix and bounded timeouts, or memory."""
    if not redis_url:
        return "memory://", {}
    # WindowReadingRedisStorage (app/limit_storage.py): limits' Redis storage, one round trip fewer per request.
    return SCHEME_PREFIX + redis_url, {
        # The strategy is part of the prefix: keys of another strategy would give WRONGTYPE errors.
        "key_prefix": f"{key_prefix}:limits:{STRATEGY}",
        "socket_timeout": cache.SOCKET_TIMEOUT_SECONDS,
        "socket_connect_timeout": cache.CONNECT_TIMEOUT_SECONDS,
        # One immediate retry replaces a pooled connection that died with a Redis restart; no back-off sleeps.
        "retry": Retry(NoBackoff(), 1),
    }


def _count_breach(_limit: RequestLimit) -> None:
    metrics.rate_limited_total.inc()


def _rate_limited(exc: RateLimitExceeded):
    code, message = HTTP_CODES[429]
    return error_response(429, code, message, {"limit": str(exc.limit.limit)})


def _remember_retry_after(response):
    g.own_retry_after = response.headers.get("Retry-After")
    return response


def _restore_retry_after(response):
    """flask-limiter puts Retry-After on every limited response; keep it on 429 only, and keep a view's own
    (e.g. 503's) untouched."""
    if response.status_code != 429:
        own = g.get("own_retry_after")
        if own is None:
            response.headers.pop("Retry-After", None)
        else:
            response.headers["Retry-After"] = own
    return response


def _forget_windows(limiter: Limiter) -> None:
    if isinstance(limiter.storage, WindowReadingRedisStorage):
        limiter.storage.forget_windows()


def init_app(app: Flask) -> None:
    settings = app.config["SETTINGS"]
    storage_uri, storage_options = storage_settings(settings.redis_url, settings.redis_key_prefix)
    limiter = Limiter(
        key_func=limit_key,
        application_limits=[limit_string(settings.rate_limit_per_minute, settings.rate_limit_burst)],
        strategy=STRATEGY,
        storage_uri=storage_uri,
        storage_options=storage_options,
        headers_enabled=True,
        in_memory_fallback_enabled=True,  # the same limits, counted in this process's memory
        swallow_errors=True,  # any other limiter failure lets the request through rather than answer 500
        on_breach=_count_breach,
        # Unknown routes (404/405) are limited too: the default identifier would skip requests without an endpoint.
        request_identifier=lambda: request.endpoint or "unrouted",
    )
    limiter.request_filter(is_exempt)
    app.before_request(lambda: _forget_windows(limiter))  # before flask-limiter's own check, registered below
    # after_request hooks run in reverse order: _restore runs after flask-limiter's header hook, _remember before.
    app.after_request(_restore_retry_after)
    limiter.init_app(app)
    app.after_request(_remember_retry_after)
    app.register_error_handler(RateLimitExceeded, _rate_limited)
    app.extensions["uaip.limiter"] = limiter


def get_limiter(app: Flask) -> Limiter:
    return app.extensions["uaip.limiter"]
