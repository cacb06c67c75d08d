"""Per-client rate limits on every request: the bucket, the exemptions, the headers and the 429.

One budget per client across all routes: at most RATE_LIMIT_BURST in a 12 s burst window and
RATE_LIMIT_PER_MINUTE per minute (the rule: app/ratelimit/rule.py; for users: docs/rate-limits.md). It is checked
before the view with one Redis round trip (app/ratelimit/storage.py), shared by every worker of every pod; Redis
down or REDIS_URL unset: the same rule in this process's memory. For a bearer token the same round trip reads the
token's revocation keys (app/auth/revocation.py), so an authenticated request pays one Redis round trip in all.

The bucket is `client:<client_id>` for a valid bearer token, `client:device:<device_id>` for device credentials
this process has already accepted, `client:<client_id>` at the token endpoint for client credentials this
process's token endpoint has already accepted (app/web/authz.py: one HMAC, no database), else `ip:<peer address>`
(ProxyFix decides the address, see app/web/pipeline.py), so a client can only spend a budget it holds credentials
for. Anonymous traffic therefore never blocks a device or client whose credentials were verified recently.

Credentials not verified yet (a new device, another worker's cache) are charged to the address's bucket first;
once anonymous traffic has emptied that, they get a second one of the same size, `ip-credentials:<address>`, so
their first request still reaches the view (which checks them, and remembers them when right). Requests that
present no credentials never touch it; wrong credentials can empty it, and then only it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from flask import Flask, g, request

from app.infra.redis_client import Cache
from app.ratelimit.rule import Decision, Rules, decide
from app.ratelimit.storage import FallbackLimitStore, LimitStore, MemoryLimitStore, RedisLimitStore
from app.telemetry import metrics
from app.web.authz import (
    presents_credentials,
    recognised_client,
    recognised_device,
    revocation_keys_to_read,
    settle_revocation,
    token_principal,
)
from app.web.errors import HTTP_CODES, error_response

log = logging.getLogger(__name__)

# Part of every Redis key: a change of the stored layout needs a new name, or old keys would be misread.
STRATEGY = "burst-bucket"
# Never limited: probes, scrapes, the API description and discovery documents (paths, and everything below them).
EXEMPT_PATHS = ("/api/v1/system/health", "/metrics", "/api/v1/openapi.json", "/.well-known")

IP_PREFIX = "ip:"

LIMIT_HEADER, REMAINING_HEADER, RESET_HEADER = "X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset"


def limit_key() -> str:
    """The bucket of this request; a client can only select a bucket it holds credentials for."""
    principal = token_principal()
    if principal is not None:
        return f"client:{principal.subject}"
    device_id = recognised_device()
    if device_id is not None:
        return f"client:device:{device_id}"
    client_id = recognised_client()
    if client_id is not None:
        return f"client:{client_id}"
    return f"{IP_PREFIX}{request.remote_addr or 'unknown'}"


def second_chance_key(key: str) -> str | None:
    """The bucket that may still admit a request its address's bucket refused: only for unverified credentials."""
    if key.startswith(IP_PREFIX) and presents_credentials():
        return "ip-credentials:" + key.removeprefix(IP_PREFIX)
    return None


def is_exempt() -> bool:
    if request.method == "OPTIONS":  # CORS preflights carry no credentials; they would drain the IP bucket
        return True
    path = request.path
    return any(path == prefix or path.startswith(prefix + "/") for prefix in EXEMPT_PATHS)


def make_store(cache: Cache | None, rules: Rules) -> LimitStore:
    """Redis (the process's one client) with per-process memory while it is down; memory alone without Redis."""
    memory = MemoryLimitStore(rules)
    if cache is None:
        return memory
    return FallbackLimitStore(RedisLimitStore(cache, cache.key("limits", STRATEGY), rules), memory)


class RateLimiter:
    """The app's limiter: applies the rule to each request's bucket and answers for it (its two methods are the
    app's before- and after-request hooks)."""

    def __init__(self, rules: Rules, store: LimitStore) -> None:
        self.rules = rules
        self.store = store
        self.free_of_charge: list[Callable[[], bool]] = []  # see not_charged()

    def _free(self) -> bool:
        try:
            return any(free() for free in self.free_of_charge)
        except Exception:  # noqa: BLE001 - a broken exemption charges the request rather than failing it
            log.exception("rate limit exemption failed; request charged")
            return False

    def check(self) -> Decision | None:
        """Count this request; None when it is exempt or the limiter itself failed (the request goes through)."""
        if is_exempt() or self._free():
            return None
        try:
            key = limit_key()
            revocation_keys = revocation_keys_to_read()
            admitted, state, values = self.store.hit(key, revocation_keys or ())
            second = None if admitted else second_chance_key(key)
            if second is not None:
                admitted, state, _ = self.store.hit(second)
        except Exception:  # noqa: BLE001 - a limiter fault must never turn a request into a 500
            log.exception("rate limit check failed; request let through")
            return None
        if revocation_keys and values is not None:
            settle_revocation(values)
        return decide(admitted, state, self.rules)

    def limit_request(self):
        """before_request: count the request; a refused one gets the 429 envelope and never reaches its view."""
        decision = g.rate_limit = self.check()
        if decision is None or decision.admitted:
            return None
        metrics.rate_limited_total.inc()
        code, message = HTTP_CODES[429]
        return error_response(429, code, message, {"limit": decision.description},
                              headers={"Retry-After": str(decision.retry_after)})

    @staticmethod
    def add_headers(response):
        """after_request: every response of a limited request says where its client stands."""
        decision = g.get("rate_limit")
        if decision is not None:
            response.headers[LIMIT_HEADER] = str(decision.limit)
            response.headers[REMAINING_HEADER] = str(decision.remaining)
            response.headers[RESET_HEADER] = str(decision.reset_at)
        return response

    def close(self) -> None:
        """Close this process's Redis connections (lifecycle.close_extensions at worker exit)."""
        self.store.close()


def not_charged(app: Flask, predicate: Callable[[], bool]) -> None:
    """Let a blueprint exempt some of its own requests: `predicate` runs before the request is charged (before its
    view), so it decides from the request alone and cheaply. The MCP endpoint uses it for notifications."""
    app.extensions["uaip.limiter"].free_of_charge.append(predicate)


def init_app(app: Flask) -> None:
    settings = app.config["SETTINGS"]
    rules = Rules(per_minute=settings.rate_limit_per_minute, burst=settings.rate_limit_burst)
    limiter = RateLimiter(rules, make_store(app.extensions["uaip.cache"], rules))
    app.before_request(limiter.limit_request)
    app.after_request(limiter.add_headers)
    app.extensions["uaip.limiter"] = limiter
