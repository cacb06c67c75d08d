"""Token revocation: is this access token still honoured? No Redis round trip of its own on a request.

Two kinds of revocation, both written to PostgreSQL first (the source of truth) and then to Redis:

- a client's cutoff ("revoked before"): every token of the client whose `iat` is before it is refused. Set when
  an admin revokes the client's tokens, removes a scope, disables or deletes the client. The cutoff is a whole
  second *after* the moment it is written (`new_cutoff`), and the writer only returns before that second begins,
  so every token issued before the revoking call returned is refused and every token issued a second or more
  after it is honoured (`iat` has one-second resolution);
- one token (RFC 7009): its `jti` is denied until the token's own expiry.

The per-request check reads three keys: the client's cutoff, the token's denylist entry and a marker saying that
Redis holds every revocation PostgreSQL has. On a request the rate limiter reads them in its own script, so
checking costs no round trip of its own (`keys_to_read`, `answer_from`); elsewhere `Revocations.is_revoked` reads
them with one `MGET`. A missing marker (Redis was
flushed or restarted empty) makes the process copy PostgreSQL's revocations back into Redis before answering.

While Redis is unreachable (or REDIS_URL is unset) no request waits for it: the process answers from its own copy
of PostgreSQL's revocations, read again when it is more than `SNAPSHOT_SECONDS` old, so a revocation still reaches
every process within about a second. Redis is tried again after 1 s (one caller at a time); the first success after
a failure copies PostgreSQL's revocations into Redis again, so one made while Redis was away is not lost.

No Flask here: the web layer gives the store its Redis client and a loader of PostgreSQL's state
(app/services/clients.py), and registers how to find the current app's store (`set_resolver`).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import redis

log = logging.getLogger(__name__)

SNAPSHOT_SECONDS = 1.0
RETRY_SECONDS = 1.0
# How long a client cutoff must be remembered: the longest a token of this hub can live (JWT_EXPIRY_SECONDS allows
# up to 7 days), with room for longer-lived tokens of other grants.
CUTOFF_TTL_SECONDS = 31 * 86_400
SLACK_SECONDS = 60

# SET the key to ARGV[1] unless it already holds a larger number: a cutoff never moves back.
_RAISE_SCRIPT = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) > current then
    redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
end
return 1
"""


@dataclass(frozen=True)
class RevocationState:
    """What PostgreSQL holds: client id -> cutoff (Unix seconds), and revoked token id -> its expiry."""

    cutoffs: dict[str, int] = field(default_factory=dict)
    tokens: dict[str, int] = field(default_factory=dict)

    def refuses(self, client_id: str, token_id: str | None, issued_at: int) -> bool:
        cutoff = self.cutoffs.get(client_id)
        return (cutoff is not None and issued_at < cutoff) or (token_id is not None and token_id in self.tokens)


def new_cutoff(now: float | None = None) -> int:
    """The cutoff for a revocation made now: the next whole second (see the module docstring)."""
    return math.floor(time.time() if now is None else now) + 1


class Revocations:
    """One per app: the Redis keys under the app's key prefix, this process's fallback copy and retry state."""

    def __init__(self, cache, load: Callable[[], RevocationState], clock: Callable[[], float] = time.monotonic):
        self.cache = cache  # app/infra/redis_client.Cache or None
        self.load = load
        self.clock = clock
        self._snapshot: RevocationState | None = None
        self._snapshot_at = -math.inf
        self._redis_failed = cache is None
        self._retry_at = 0.0
        self._lock = threading.Lock()

    # -- keys -----------------------------------------------------------------------------------------------

    def cutoff_key(self, client_id: str) -> str:
        return self.cache.key("revoked-before", client_id)

    def token_key(self, token_id: str) -> str:
        return self.cache.key("revoked-token", token_id)

    def synced_key(self) -> str:
        return self.cache.key("revocations-synced")

    # -- the per-request check ------------------------------------------------------------------------------

    def is_revoked(self, client_id: str, token_id: str | None, issued_at: int) -> bool:
        """True if the token (`jti` token_id, `iat` issued_at) of `client_id` was revoked."""
        if self._use_redis():
            try:
                values = self.cache.client.mget(self._keys(client_id, token_id))
            except redis.RedisError as exc:
                self._failed(exc)
            else:
                answer = self.answer_from(values, token_id, issued_at)
                if answer is None:
                    return self._resync().refuses(client_id, token_id, issued_at)
                return answer
        return self._local().refuses(client_id, token_id, issued_at)

    # -- the check inside another round trip ------------------------------------------------------------------
    # The rate limiter reads a request's bucket with one Lua script before the view runs; it reads these keys in
    # the same script, so an authenticated request pays one Redis round trip for both (app/ratelimit/hooks.py).

    def keys_to_read(self, client_id: str, token_id: str | None) -> list[str] | None:
        """The keys `answer_from` judges, for a caller that reads them in a round trip of its own; None when
        the check must take its own way (no Redis, or Redis failed and this process answers from its copy)."""
        if self.cache is None or self._redis_failed:
            return None
        return self._keys(client_id, token_id)

    def answer_from(self, values: list, token_id: str | None, issued_at: int) -> bool | None:
        """The answer from the values of `keys_to_read`, or None when Redis cannot give it (the marker is missing:
        Redis lost what PostgreSQL holds; or this process is recovering from an outage): `is_revoked` then copies
        PostgreSQL's revocations back first."""
        cutoff, denied, synced = values
        if synced is None or self._redis_failed:
            return None
        return (cutoff is not None and issued_at < int(cutoff)) or (token_id is not None and denied is not None)

    def _keys(self, client_id: str, token_id: str | None) -> list[str]:
        return [self.cutoff_key(client_id), self.token_key(token_id or "-"), self.synced_key()]

    def _use_redis(self) -> bool:
        if self.cache is None:
            return False
        if not self._redis_failed:
            return True
        with self._lock:  # one caller tries again per RETRY_SECONDS; the others use the local copy
            if self.clock() < self._retry_at:
                return False
            self._retry_at = self.clock() + RETRY_SECONDS
            return True

    def _failed(self, exc: Exception) -> None:
        if not self._redis_failed:
            log.warning("revocation checks use this process's copy while Redis is unreachable",
                        extra={"error": exc.__class__.__name__})
        with self._lock:
            self._redis_failed = True
            self._retry_at = self.clock() + RETRY_SECONDS

    def _local(self) -> RevocationState:
        """PostgreSQL's revocations as this process read them at most SNAPSHOT_SECONDS ago (or the last good read
        while PostgreSQL fails too)."""
        if self.clock() - self._snapshot_at >= SNAPSHOT_SECONDS:
            with self._lock:
                if self.clock() - self._snapshot_at >= SNAPSHOT_SECONDS:
                    try:
                        self._snapshot = self.load()
                    except Exception:  # noqa: BLE001 - the database's own errors reach the caller elsewhere
                        log.warning("could not read revocations from PostgreSQL; keeping the last copy", exc_info=True)
                    self._snapshot_at = self.clock()
        return self._snapshot or RevocationState()

    def _resync(self) -> RevocationState:
        """Copy PostgreSQL's revocations into Redis and set the marker; return them (they answer this request)."""
        state = self.load()
        self._snapshot, self._snapshot_at = state, self.clock()
        try:
            self._write(state.cutoffs, state.tokens, mark_synced=True)
        except redis.RedisError as exc:
            self._failed(exc)
            return state
        if self._redis_failed:
            log.info("revocation checks use Redis again")
        self._redis_failed = False
        return state

    # -- writes ---------------------------------------------------------------------------------------------

    def publish(self, cutoffs: dict[str, int] | None = None, tokens: dict[str, int] | None = None) -> None:
        """After PostgreSQL committed them: make revocations visible to every process (Redis). Without Redis they
        reach other processes through their local copies within SNAPSHOT_SECONDS; this process's copy is
        dropped at once."""
        self._snapshot_at = -math.inf
        if self.cache is None:
            return
        try:
            self._write(cutoffs or {}, tokens or {}, mark_synced=False)
        except redis.RedisError as exc:
            self._failed(exc)

    def _write(self, cutoffs: dict[str, int], tokens: dict[str, int], mark_synced: bool) -> None:
        now = time.time()
        pipe = self.cache.client.pipeline(transaction=False)
        for client_id, cutoff in cutoffs.items():
            ttl = int(cutoff - now) + CUTOFF_TTL_SECONDS
            if ttl > 0:
                pipe.eval(_RAISE_SCRIPT, 1, self.cutoff_key(client_id), cutoff, ttl)
        for token_id, expires in tokens.items():
            ttl = int(expires - now) + SLACK_SECONDS
            if ttl > 0:
                pipe.set(self.token_key(token_id), "1", ex=ttl)
        if mark_synced:
            pipe.set(self.synced_key(), "1")
        pipe.execute()


_resolver: Callable[[], Revocations] | None = None


def set_resolver(resolver: Callable[[], Revocations]) -> None:
    """How `is_revoked` finds the running app's store (set once by the web layer)."""
    global _resolver
    _resolver = resolver


def current() -> Revocations:
    if _resolver is None:
        raise RuntimeError("revocation store not configured (create_app sets it)")
    return _resolver()


def is_revoked(principal) -> bool:
    """Is this token principal's token revoked (or its client disabled or deleted)? Devices never are.
    Needs the app's context (a request, or `with app.app_context()`)."""
    if principal.kind != "client" or principal.issued_at is None:
        return False
    return current().is_revoked(principal.client_id, principal.token_id, principal.issued_at)


def publish(cutoffs: dict[str, int] | None = None, tokens: dict[str, int] | None = None) -> None:
    current().publish(cutoffs, tokens)


def token_items(items: Iterable[tuple[str, int]]) -> dict[str, int]:
    return {token_id: int(expires) for token_id, expires in items}
