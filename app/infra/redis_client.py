"""The one Redis client of a process: timeouts always set (redis-py has none by default, and a dead Redis must not
hang a request), created lazily per process (after gunicorn forks). Health, the rate limiter and revocation share it:
one pool per process, one place for its settings. `None` when REDIS_URL is unset: the hub then runs without Redis."""

from __future__ import annotations

import os
import threading

import redis
from flask import Flask, current_app
from redis.backoff import NoBackoff
from redis.retry import Retry

SOCKET_TIMEOUT_SECONDS = 0.5
CONNECT_TIMEOUT_SECONDS = 0.5


class Cache:
    def __init__(self, url: str, key_prefix: str) -> None:
        self.url = url
        self.key_prefix = key_prefix
        self._client: redis.Redis | None = None
        self._pid: int | None = None
        self._lock = threading.Lock()

    @property
    def client(self) -> redis.Redis:
        if self._client is None or self._pid != os.getpid():
            with self._lock:
                if self._client is None or self._pid != os.getpid():
                    self._client = redis.Redis.from_url(
                        self.url,
                        socket_timeout=SOCKET_TIMEOUT_SECONDS,
                        socket_connect_timeout=CONNECT_TIMEOUT_SECONDS,
                        health_check_interval=30,
                        decode_responses=True,
                        # One immediate retry replaces a pooled connection that died with a Redis restart; no
                        # back-off sleeps (redis-py's default would wait seconds while a request is waiting).
                        retry=Retry(NoBackoff(), 1),
                    )
                    self._pid = os.getpid()
        return self._client

    def key(self, *parts: str) -> str:
        return ":".join((self.key_prefix, *parts))

    def close(self) -> None:
        if self._client is not None and self._pid == os.getpid():
            self._client.close()
        self._client = None


def init_app(app: Flask) -> None:
    settings = app.config["SETTINGS"]
    # Every key the hub writes starts with UAIP_REDIS_KEY_PREFIX, so several hubs (or test runs) share one Redis.
    app.extensions["uaip.cache"] = Cache(settings.redis_url, settings.redis_key_prefix) if settings.redis_url else None


def get_cache() -> Cache | None:
    return current_app.extensions["uaip.cache"]
