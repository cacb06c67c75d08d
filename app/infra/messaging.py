"""The only module that knows the NATS client (nats-py; docs/decisions.md, "NATS client").

nats-py is asyncio; the hub is synchronous WSGI. Each process gets one event-loop thread, started lazily on
first use (so after gunicorn's fork), and sync code hands coroutines to it with
`asyncio.run_coroutine_threadsafe(...).result(timeout)`.

Connection policy (docs/decisions.md, "NATS publishes fail fast while disconnected"). With
`allow_reconnect=True` and unlimited attempts, nats-py's `connect()` does not return until a server answers: it
retries a failed *first* connection itself, every RECONNECT_WAIT_SECONDS, and reports each failed attempt to
`error_cb`. So the client object is kept from
the start and the connection attempt runs in the background on the loop; nobody waits for it. While the client is
not connected (first connection pending, or nats-py reconnecting), `publish` raises `MessagingUnavailable` at
once instead of buffering silently or waiting: the command service leaves the command `queued` in PostgreSQL (it
is re-sent later) rather than claim `sent` for a message that sits in a client-side buffer. Each outage logs one
warning (when it begins) and one info line (when NATS is back), however many attempts fail in between.
The connection state is the gauge `uaip_nats_connected` (1 connected, 0 connecting or reconnecting).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from flask import Flask, current_app
from nats.aio.client import Client as NATS

from app.infra.subjects import device_id_from_subject
from app.telemetry import tracing
from app.telemetry.metrics import nats_connected

log = logging.getLogger(__name__)
T = TypeVar("T")

CONNECT_TIMEOUT_SECONDS = 2
RECONNECT_WAIT_SECONDS = 1
FIRST_CONNECT_RETRY_SECONDS = 1
# A publish made while this process's very first connection attempt is still under way waits this long for it
# (a worker's first command right after start-up); every later publish fails fast while NATS is unreachable.
FIRST_ATTEMPT_WAIT_SECONDS = 0.5
DEFAULT_CALL_TIMEOUT = 2.0


def _describe(exc: BaseException) -> str:
    return str(exc) or exc.__class__.__name__


def encode(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _detached(coro: Awaitable[T], loop: asyncio.AbstractEventLoop) -> asyncio.Future[T]:
    """Schedule `coro` on the NATS loop in an empty context. The connection and subscriptions outlive the request
    that happened to start them: their tasks must not inherit its request id or trace context (log lines written
    on the NATS thread would name a finished request)."""
    return contextvars.Context().run(asyncio.run_coroutine_threadsafe, coro, loop)


class MessagingUnavailable(Exception):
    """NATS is not connected right now (down, or reconnecting)."""


# handler(subject, data), or handler(subject, data, headers) when subscribed with_headers: runs on the NATS loop
# thread, so it must return quickly (hand work to another thread).
Handler = Callable[..., None]


class _Subscription:
    def __init__(self, subject: str, queue: str, handler: Handler, with_headers: bool = False,
                 with_reply: bool = False) -> None:
        self.subject, self.queue, self.handler, self.with_headers = subject, queue, handler, with_headers
        self.with_reply = with_reply
        self.active: Any = None  # the nats-py Subscription once made
        self.pending = False


class Messaging:
    """A per-process NATS connection driven from a private event-loop thread."""

    def __init__(self, servers: list[str], name: str = "uaip-hub") -> None:
        self.servers = servers
        self.name = name
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._nc: NATS | None = None
        self._connector: asyncio.Future | None = None
        self._closing = False
        self._subscriptions: list[_Subscription] = []
        self._first_attempt = threading.Event()  # set once this process's first connection attempt ended
        self._unavailable = False  # an outage was reported and NATS is not back yet (touched on the loop thread)
        self._background: set[asyncio.Task] = set()  # publishes handed over with wait=False (loop thread only)
        self.on_reconnect: list[Callable[[], Awaitable[None]]] = []
        self._pools: list[ThreadPoolExecutor] = []  # request handlers' threads (serve)

    # -- event loop ------------------------------------------------------------------------------------

    def _ensure_started(self) -> asyncio.AbstractEventLoop:
        if self._loop is not None and self._pid == os.getpid():
            return self._loop
        with self._lock:
            if self._loop is None or self._pid != os.getpid():
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name="nats-loop", daemon=True)
                thread.start()
                self._loop, self._thread, self._pid, self._nc, self._closing = loop, thread, os.getpid(), None, False
                self._first_attempt, self._unavailable, self._background = threading.Event(), False, set()
                for entry in self._subscriptions:  # made again by this process's connection
                    entry.active, entry.pending = None, False
                self._connector = _detached(self._connect_until_connected(), loop)
        return self._loop

    def run(self, coro: Awaitable[T], timeout: float = DEFAULT_CALL_TIMEOUT) -> T:
        """Run a coroutine on the NATS loop from sync code and wait for its result."""
        loop = self._ensure_started()
        future = _detached(coro, loop)
        try:
            return future.result(timeout)
        except TimeoutError:
            future.cancel()
            raise

    def start(self) -> None:
        """Begin connecting in the background (idempotent); the first call in a process starts the loop."""
        self._ensure_started()

    # -- connection ------------------------------------------------------------------------------------

    async def _connect_until_connected(self) -> None:
        """Make this process's first connection. nats-py retries a refused first connection by itself (see the
        module docstring); this loop only covers a `connect()` that raises anyway (a bad URL, say)."""
        nats_connected.set(0)  # the series exists (as "not connected") from the first attempt on
        while not self._closing:
            nc = NATS()
            self._nc = nc  # not connected yet: publish fails fast instead of waiting for the connection
            try:
                await nc.connect(
                    servers=self.servers,
                    name=self.name,
                    connect_timeout=CONNECT_TIMEOUT_SECONDS,
                    reconnect_time_wait=RECONNECT_WAIT_SECONDS,
                    max_reconnect_attempts=-1,
                    allow_reconnect=True,
                    error_cb=self._on_error,
                    disconnected_cb=self._on_disconnected,
                    reconnected_cb=self._on_reconnected,
                )
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - any failure means "try again shortly"
                self._outage_began(_describe(exc))
                with contextlib.suppress(Exception):
                    await nc.close()
                await asyncio.sleep(FIRST_CONNECT_RETRY_SECONDS)
                continue
            self._outage_ended("connected to NATS")
            await self._make_subscriptions()
            await self._run_reconnect_callbacks()
            return

    def _outage_began(self, reason: str) -> None:
        """A connection attempt failed or the connection dropped: one warning per outage (loop thread only)."""
        nats_connected.set(0)
        self._first_attempt.set()
        if self._closing or self._unavailable:
            return
        self._unavailable = True
        log.warning(
            "NATS unavailable: publishing fails fast and commands stay queued until it is back; "
            "reconnecting in the background", extra={"error": reason, "pid": os.getpid()},
        )

    def _outage_ended(self, message: str) -> None:
        nats_connected.set(1)
        self._first_attempt.set()
        was_unavailable, self._unavailable = self._unavailable, False
        nc = self._nc
        url = nc.connected_url if nc is not None else None
        # Host and port only: a NATS URL may carry credentials.
        server = f"{url.hostname}:{url.port}" if url is not None and url.hostname else None
        log.info(message, extra={"nats_server": server, "after_outage": was_unavailable, "pid": os.getpid()})

    async def _on_error(self, exc: Exception) -> None:
        nc = self._nc
        if nc is None or not nc.is_connected:  # a (re)connection attempt failed
            self._outage_began(_describe(exc))
        else:
            log.debug("NATS client error: %s", _describe(exc))

    async def _on_disconnected(self) -> None:
        self._outage_began("disconnected")

    async def _on_reconnected(self) -> None:
        self._outage_ended("reconnected to NATS")
        await self._run_reconnect_callbacks()

    async def _run_reconnect_callbacks(self) -> None:
        for callback in list(self.on_reconnect):
            try:
                await callback()
            except Exception:  # noqa: BLE001
                log.exception("NATS reconnect callback failed")

    @property
    def client(self) -> NATS | None:
        return self._nc

    def is_connected(self) -> bool:
        return self._nc is not None and self._nc.is_connected

    def wait_connected(self, timeout: float) -> bool:
        """Start connecting if needed and wait up to `timeout` seconds for a live connection."""
        self._ensure_started()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.is_connected():
                return True
            time.sleep(0.02)
        return self.is_connected()

    # -- subscriptions ---------------------------------------------------------------------------------

    async def _make_subscriptions(self) -> None:
        """Subscribe every wanted subscription not made yet (nats-py re-subscribes by itself on reconnect)."""
        nc = self._nc
        if nc is None or not nc.is_connected:
            return
        for entry in self._subscriptions:
            if entry.active is not None or entry.pending:
                continue
            entry.pending = True

            async def deliver(msg, handler=entry.handler, with_headers=entry.with_headers,
                              with_reply=entry.with_reply) -> None:
                try:
                    if with_reply:
                        handler(msg.subject, msg.data, msg.headers, msg.reply)
                    elif with_headers:
                        handler(msg.subject, msg.data, msg.headers)
                    else:
                        handler(msg.subject, msg.data)
                except Exception:  # noqa: BLE001 - one bad message must not stop the subscription
                    log.exception("NATS message handler failed", extra={"subject": msg.subject})

            try:
                entry.active = await nc.subscribe(entry.subject, queue=entry.queue, cb=deliver)
            except Exception as exc:  # noqa: BLE001 - retried at the next (re)connect or subscribe call
                log.warning("NATS subscribe failed", extra={"subject": entry.subject, "error": str(exc)})
            finally:
                entry.pending = False

    def subscribe(self, subject: str, handler: Handler, queue: str = "", with_headers: bool = False,
                  with_reply: bool = False) -> None:
        """Subscribe `handler(subject, data)` to `subject` (optionally in a queue group), now if connected, else
        as soon as the connection is made; the subscription survives reconnects. The handler runs on the NATS
        loop thread: it must not block, nor call this object's sync methods (hand the work to another thread).
        `with_headers`: the handler is called as `handler(subject, data, headers)` (a dict, or None);
        `with_reply`: as `handler(subject, data, headers, reply)` (the reply subject, or "")."""
        entry = _Subscription(subject, queue, handler, with_headers, with_reply)

        async def add() -> None:
            self._subscriptions.append(entry)
            await self._make_subscriptions()

        self.run(add(), DEFAULT_CALL_TIMEOUT + CONNECT_TIMEOUT_SECONDS)

    def serve(self, subject: str, answer: Callable[[bytes, dict | None], bytes | None], queue: str = "",
              workers: int = 2, max_waiting: int = 64, on_busy: Callable[[], None] | None = None) -> None:
        """Answer requests on `subject`: `answer(data, headers)` runs on a pool of `workers` threads (it may block,
        e.g. on PostgreSQL), and what it returns is published to the request's reply subject (None: no answer).
        At most `max_waiting` requests wait for a thread; beyond that a request is left unanswered and `on_busy`
        is called (on the NATS thread), so a flood of requests costs bounded memory and never the NATS thread."""
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="nats-serve")
        slots = threading.BoundedSemaphore(max_waiting)
        self._pools.append(pool)

        def work(data: bytes, headers: dict | None, reply: str) -> None:
            try:
                body = answer(data, headers)
            except Exception:  # noqa: BLE001 - one request's failure is logged; the next ones are served
                log.exception("NATS request handler failed", extra={"subject": subject})
                body = None
            finally:
                slots.release()
            if body is not None and reply:
                try:
                    self.publish(reply, body)
                except MessagingUnavailable as exc:
                    log.warning("NATS reply not sent", extra={"subject": subject, "error": str(exc)})

        def receive(_subject: str, data: bytes, headers: dict | None, reply: str) -> None:
            if not slots.acquire(blocking=False):
                if on_busy is not None:
                    on_busy()
                return
            try:
                pool.submit(work, data, headers, reply)
            except RuntimeError:  # the pool was shut down (process exit)
                slots.release()

        self.subscribe(subject, receive, queue=queue, with_reply=True)

    def drain_subscriptions(self, timeout: float = 5.0) -> None:
        """Stop receiving: unsubscribe everything, after the messages already received were handed to their
        handlers (the relay's graceful stop). Messages published afterwards are not received by this process."""
        if self._loop is None or self._pid != os.getpid():
            return

        async def drain() -> None:
            for entry in self._subscriptions:
                sub, entry.active = entry.active, None
                if sub is not None:
                    try:
                        await sub.drain()
                    except Exception:  # noqa: BLE001 - not connected: nothing more can arrive anyway
                        pass
            self._subscriptions.clear()

        try:
            self.run(drain(), timeout)
        except Exception:  # noqa: BLE001
            log.warning("NATS subscriptions did not drain in time")

    # -- operations ------------------------------------------------------------------------------------

    def publish(self, subject: str, body: dict[str, Any] | bytes, headers: dict[str, str] | None = None,
                timeout: float = DEFAULT_CALL_TIMEOUT, *, wait: bool = True) -> None:
        """Hand one message to the connected client; raise MessagingUnavailable at once when NATS is not
        connected. Only a publish during the process's first connection attempt waits for it, briefly.
        Inside a trace (tracing on), the publish is a span and the headers carry its `traceparent`.

        `wait=False` hands the message to the NATS loop thread without waiting for the client to take it: ~7 µs
        of CPU instead of ~60 µs for the two thread hand-offs of a waited call, and no wait for the loop thread
        to be scheduled. The rare failure after the connection check (the connection drops in between) is
        logged; use it where a lost message is recovered anyway (a command left unacknowledged is re-sent by
        the relay, a waiter that misses its notice polls)."""
        self._ensure_started()
        if not self._first_attempt.is_set():
            self._first_attempt.wait(FIRST_ATTEMPT_WAIT_SECONDS)
        nc, loop = self._nc, self._loop
        if nc is None or not nc.is_connected or loop is None:
            raise MessagingUnavailable("NATS is not connected")
        payload = body if isinstance(body, bytes) else encode(body)
        with tracing.publish_span(subject, headers, len(payload), device_id_from_subject) as headers:
            if not wait:
                try:
                    loop.call_soon_threadsafe(self._publish_in_background, nc, subject, payload, headers)
                except RuntimeError as exc:  # the loop was closed meanwhile (process exit)
                    raise MessagingUnavailable(str(exc)) from exc
                return
            try:
                self.run(nc.publish(subject, payload, headers=headers), timeout)
            except Exception as exc:  # noqa: BLE001 - connection lost between the check and the publish
                raise MessagingUnavailable(str(exc) or exc.__class__.__name__) from exc

    def _publish_in_background(self, nc: NATS, subject: str, payload: bytes, headers: dict[str, str] | None) -> None:
        """On the loop thread: start the publish; its task is kept until done (asyncio holds tasks weakly)."""
        task = asyncio.ensure_future(nc.publish(subject, payload, headers=headers))
        self._background.add(task)
        task.add_done_callback(self._background_done)

    def _background_done(self, task: asyncio.Task) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("NATS publish failed after it was handed over", extra={"error": _describe(task.exception())})

    def flush(self, timeout: float = DEFAULT_CALL_TIMEOUT) -> None:
        """Wait until the server has everything published so far (a PING/PONG round trip)."""
        nc = self._nc
        if nc is None or not nc.is_connected:
            raise MessagingUnavailable("NATS is not connected")
        try:
            self.run(nc.flush(timeout=max(1, int(timeout))), timeout + 0.5)
        except Exception as exc:  # noqa: BLE001
            raise MessagingUnavailable(str(exc) or exc.__class__.__name__) from exc

    def round_trip_ms(self, timeout: float = 1.0) -> float:
        """Measured PING/PONG time to the server, for health checks."""
        started = time.perf_counter()
        self.flush(timeout)
        return (time.perf_counter() - started) * 1000

    def close(self, timeout: float = 5.0) -> None:
        """Flush what was published and close (worker exit). Safe to call more than once, or never started."""
        if self._loop is None or self._pid != os.getpid():
            return
        self._closing = True
        for pool in self._pools:
            pool.shutdown(wait=False, cancel_futures=True)
        loop, nc = self._loop, self._nc

        async def shutdown() -> None:
            if self._connector is not None:
                self._connector.cancel()
            if nc is not None and not nc.is_closed:
                try:
                    await asyncio.wait_for(nc.drain() if nc.is_connected else nc.close(), timeout)
                except Exception:  # noqa: BLE001
                    await nc.close()

        try:
            asyncio.run_coroutine_threadsafe(shutdown(), loop).result(timeout + 1)
        except Exception:  # noqa: BLE001 - best effort: commands are already durable in PostgreSQL
            log.warning("NATS did not close cleanly")
        finally:
            loop.call_soon_threadsafe(loop.stop)
            if self._thread is not None:
                self._thread.join(timeout=2)
            self._loop = self._thread = self._nc = None
            self._pid = None


def init_app(app: Flask) -> None:
    settings = app.config["SETTINGS"]
    servers = [url.strip() for url in settings.nats_url.split(",") if url.strip()]
    app.extensions["uaip.messaging"] = Messaging(servers)


def get_messaging() -> Messaging:
    return current_app.extensions["uaip.messaging"]
