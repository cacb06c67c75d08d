"""Where the test services are, and a fresh PostgreSQL database per test run (CTFd-style)."""

from __future__ import annotations

import functools
import os
import socket
import time
import uuid
from collections.abc import Callable
from typing import TypeVar
from urllib.parse import urlsplit, urlunsplit

import psycopg2

T = TypeVar("T")

POSTGRES_ADMIN_URL = os.environ.get("UAIP_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_BASE_URL = os.environ.get("UAIP_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
NATS_URL = os.environ.get("UAIP_TEST_NATS_URL", "nats://127.0.0.1:4222")


def postgres_answers(url: str) -> bool:
    """A real session. An open port is not enough: while it starts (or recovers after a restart) PostgreSQL
    accepts connections only to refuse them with "FATAL: the database system is starting up"."""
    psycopg2.connect(url, connect_timeout=2).close()
    return True


def redis_answers(url: str) -> bool:
    """PING answered (not LOADING or an error)."""
    import redis

    client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    try:
        return bool(client.ping())
    finally:
        client.close()


def nats_answers(url: str) -> bool:
    """The NATS protocol's own check: the server's INFO, then our CONNECT and PING answered with PONG."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 4222), timeout=2) as sock:
        stream = sock.makefile("rwb")
        if not stream.readline().startswith(b"INFO "):
            return False
        stream.write(b'CONNECT {"verbose":false,"pedantic":false}\r\nPING\r\n')
        stream.flush()
        return stream.readline().strip() == b"PONG"


def wait_for_services(timeout: float = 60.0) -> None:
    """Wait until the shared PostgreSQL, Redis and NATS answer real requests (a fresh machine may still be
    starting them when the test session begins)."""
    for name, answers, url in (("PostgreSQL", postgres_answers, POSTGRES_ADMIN_URL),
                               ("Redis", redis_answers, REDIS_BASE_URL), ("NATS", nats_answers, NATS_URL)):
        wait_for(functools.partial(answers, url), timeout=timeout, interval=0.2, message=f"{name} at {url} to answer")


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


def create_database(prefix: str = "uaip_test") -> tuple[str, str]:
    """Create an empty uniquely named database; returns (name, url)."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    conn = psycopg2.connect(POSTGRES_ADMIN_URL)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    conn.close()
    return name, with_database(POSTGRES_ADMIN_URL, name)


def drop_database(name: str) -> None:
    conn = psycopg2.connect(POSTGRES_ADMIN_URL)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    conn.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(check: Callable[[], T], timeout: float = 10.0, interval: float = 0.05, message: str = "condition") -> T:
    """Poll `check` until it returns a truthy value (returned) or the deadline passes (AssertionError).

    Other exceptions count as "not yet"; an AssertionError from `check` is final and propagates at once."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except AssertionError:
            raise
        except Exception as exc:  # noqa: BLE001 - polling tolerates transient failures
            last_error = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message}"
                         + (f" (last error: {last_error!r})" if last_error else ""))
