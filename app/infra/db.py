"""PostgreSQL access: one connection pool per process, created lazily, and a transaction helper.

The pool is created on first use *in the process that uses it*: gunicorn forks workers from the master, and a
pool inherited across fork is shared by several processes. Two kinds of failure are retried once by
`transaction()`, and only these:

- the connection is gone (a PostgreSQL restart kills every idle pooled connection; SQLSTATE class 08, the
  57P01–57P05 shutdowns, or a client-side failure with no SQLSTATE): the connection is discarded, its idle
  siblings retired with it, and the unit of work runs again on a fresh connection if the failure came before
  the commit could have happened;
- the server rolled the transaction back because of a conflict (deadlock 40P01, serialization failure 40001):
  nothing of it was applied, even when the error came at COMMIT, so it runs again at once on the same
  connection, which is healthy, and the pool is kept.

Any other server error is the caller's (a statement timeout is still QueryCanceled; other OperationalErrors,
and a second failure of the retry, become `DatabaseUnavailable`, a 503).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import re
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from typing import TypeVar

import psycopg2
import psycopg2.errors
import psycopg2.extensions
import psycopg2.extras
import psycopg2.pool
from flask import Flask, current_app

from app.core.timestamps import timestamp, timestamp_from_postgres_text
from app.telemetry import tracing

log = logging.getLogger(__name__)
T = TypeVar("T")

CONNECT_TIMEOUT_SECONDS = 3
STATEMENT_TIMEOUT_MS = 5_000
# psycopg2's pool raises at once when every connection is lent out; callers wait up to this long instead.
POOL_WAIT_SECONDS = 5
# The health probe's own connection: libpq's connect_timeout has a floor of 2 s; TCP keepalives and
# tcp_user_timeout bound a probe on a connection whose peer vanished without a reset.
PING_CONNECT_TIMEOUT_SECONDS = 2
PING_TCP_OPTIONS = {"keepalives": 1, "keepalives_idle": 2, "keepalives_interval": 1, "keepalives_count": 2,
                    "tcp_user_timeout": 2_000}


def _api_timestamp(text: str | None, cur) -> str | None:
    """psycopg2 typecaster: a timestamptz as the API writes it; text of another shape takes the datetime path."""
    if text is None:
        return None
    return timestamp_from_postgres_text(text) or timestamp(psycopg2.extensions.PYDATETIMETZ(text, cur))


# timestamptz (OID 1184) columns as API strings, for the cursors of `Database.read(api_timestamps=True)`.
API_TIMESTAMPTZ = psycopg2.extensions.new_type((1184,), "UAIP_API_TIMESTAMPTZ", _api_timestamp)


def _cursor(conn: psycopg2.extensions.connection, tuples: bool, api_timestamps: bool):
    """A cursor of the pool's own factory: dict rows, traced when tracing is on (app/telemetry/tracing.py). With
    `tuples`,
    the plain tuple cursor instead, unless the factory is a traced one: then its dict rows are handed over as
    tuples, so every statement stays traced. `api_timestamps`: see `Database.read`."""
    plain = tuples and conn.cursor_factory is psycopg2.extras.RealDictCursor
    cursor = conn.cursor(cursor_factory=psycopg2.extensions.cursor) if plain else conn.cursor()
    if api_timestamps:
        psycopg2.extensions.register_type(API_TIMESTAMPTZ, cursor)
    return _TupleRows(cursor) if tuples and not plain else cursor


class _TupleRows:
    """A dict-row cursor whose rows come out as tuples (in column order), for a traced pool."""

    def __init__(self, cursor) -> None:
        self._cursor = cursor

    def __getattr__(self, name: str):
        return getattr(self._cursor, name)

    def __enter__(self):
        self._cursor.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._cursor.__exit__(*exc)

    def fetchone(self):
        row = self._cursor.fetchone()
        return None if row is None else tuple(row.values())

    def fetchall(self):
        return [tuple(row.values()) for row in self._cursor.fetchall()]


# --- prepared statements ---------------------------------------------------------------------------------

_PLACEHOLDER = re.compile(r"%\((\w+)\)s(::[\w\[\]]+)?")
# The statements each pooled connection has prepared (weakly keyed: a closed connection's set goes with it).
_prepared: weakref.WeakKeyDictionary[psycopg2.extensions.connection, set[str]] = weakref.WeakKeyDictionary()


@functools.lru_cache(maxsize=256)
def _prepared_forms(sql: str) -> tuple[str, str, str]:
    """(name, PREPARE text, EXECUTE text) of a statement written with %(name)s placeholders. A placeholder's cast
    (`%(ids)s::uuid[]`) goes with its argument too: psycopg2 writes a list of strings as text[]."""
    casts: dict[str, str] = {}
    for placeholder, cast in _PLACEHOLDER.findall(sql):
        casts[placeholder] = casts.get(placeholder) or cast
    names = list(casts)
    numbered = _PLACEHOLDER.sub(lambda match: f"${names.index(match.group(1)) + 1}{match.group(2) or ''}", sql)
    name = "uaip_" + hashlib.sha1(sql.encode("utf-8")).hexdigest()[:20]
    arguments = f" ({', '.join(f'%({n})s{casts[n]}' for n in names)})" if names else ""
    return name, f"PREPARE {name} AS {numbered.replace('%%', '%')}", f"EXECUTE {name}{arguments}"


def execute_prepared(cur, sql: str, params: dict | None = None) -> None:
    """`cur.execute(sql, params)`, with PostgreSQL planning the statement once per connection instead of on every
    call: PREPARE the first time a connection runs it, EXECUTE from then on. For the hot statements whose
    planning costs more than their execution (a submit's two statements: ~300 µs of PostgreSQL CPU saved per
    submit, docs/performance.md). `sql` uses %(name)s placeholders only, with a cast wherever PostgreSQL could
    not infer a parameter's type from its context.

    Prepared statements live in the server session, so a connection pooler between the hub and PostgreSQL must
    keep sessions (PgBouncer `pool_mode = session`); a session that lost them (DISCARD ALL) costs one retry of
    the unit of work, which prepares them again.
    With tracing on, statements run as plain text, so that each span is named after its SQL, not `EXECUTE`."""
    if tracing.active:
        cur.execute(sql, params)
        return
    name, prepare, execute = _prepared_forms(sql)
    done = _prepared.setdefault(cur.connection, set())
    if name not in done:
        cur.execute(prepare)
        done.add(name)
    cur.execute(execute, params)


class DatabaseUnavailable(Exception):
    """PostgreSQL cannot be reached (or the pool is exhausted); the API turns this into a 503."""


# Server-reported SQLSTATEs after which the session is over: admin_shutdown, crash_shutdown, cannot_connect_now,
# database_dropped, idle_session_timeout. Class 08 (connection_exception) is matched by prefix.
CONNECTION_LOST_CODES = frozenset({"57P01", "57P02", "57P03", "57P04", "57P05"})
# The transaction was rolled back by the server because of a conflict; running it again is safe.
ROLLED_BACK_CONFLICTS = (psycopg2.errors.DeadlockDetected, psycopg2.errors.SerializationFailure)


def _is_connection_error(exc: BaseException, conn) -> bool:
    """The connection is unusable (and, for a pooled one, probably its idle siblings too). False for errors the
    server reported on a live session: deadlocks, timeouts, constraint violations, ..."""
    if conn is not None and conn.closed != 0:
        return True
    if isinstance(exc, psycopg2.InterfaceError):
        return True
    if not isinstance(exc, psycopg2.OperationalError):
        return False
    code = exc.pgcode
    return code is None or code.startswith("08") or code in CONNECTION_LOST_CODES


class Database:
    """A lazily created, fork-aware ThreadedConnectionPool."""

    def __init__(self, url: str, maxconn: int, application_name: str = "uaip-hub") -> None:
        self.url = url
        self.maxconn = maxconn
        self.application_name = application_name
        self._pool: psycopg2.pool.ThreadedConnectionPool | None = None
        self._pool_pid: int | None = None
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(maxconn)
        self._ping_conn: psycopg2.extensions.connection | None = None
        self._ping_pid: int | None = None
        self._ping_lock = threading.Lock()

    def _get_pool(self) -> psycopg2.pool.ThreadedConnectionPool:
        if self._pool is not None and self._pool_pid == os.getpid():
            return self._pool
        with self._lock:
            if self._pool is None or self._pool_pid != os.getpid():
                # minconn=0: creating the pool never connects, so a worker starts even while PostgreSQL is down.
                self._pool = psycopg2.pool.ThreadedConnectionPool(
                    0,
                    self.maxconn,
                    self.url,
                    connect_timeout=CONNECT_TIMEOUT_SECONDS,
                    application_name=self.application_name,
                    options=f"-c statement_timeout={STATEMENT_TIMEOUT_MS} -c timezone=UTC",
                    # Dict rows for every cursor of the pool, set per connection rather than per cursor: the
                    # psycopg2 tracing instrumentation only traces cursors made by the connection's own factory
                    # (opentelemetry-python-contrib#578).
                    cursor_factory=psycopg2.extras.RealDictCursor,
                )
                # psycopg2 keeps a returned connection only while fewer than `minconn` are idle and closes it
                # otherwise: with minconn=0 every request would open a new connection. Raised after creation,
                # so the pool still connects lazily but keeps up to maxconn idle connections for reuse.
                self._pool.minconn = self.maxconn
                self._pool_pid = os.getpid()
        return self._pool

    def _retire(self, pool: psycopg2.pool.ThreadedConnectionPool) -> None:
        """A pooled connection turned out dead (server restart, network cut): its idle siblings were opened to
        the same server and are as dead, so the next borrower gets a new pool instead of trying them one by
        one. Connections still lent out from the old pool go back into it; it is closed once unreferenced."""
        with self._lock:
            if self._pool is pool:
                self._pool = None

    @contextlib.contextmanager
    def connection(self) -> Iterator[psycopg2.extensions.connection]:
        """Borrow a connection; a broken one is closed instead of returned to the pool."""
        if not self._slots.acquire(timeout=POOL_WAIT_SECONDS):
            raise DatabaseUnavailable("no database connection became free in time")
        try:
            pool = self._get_pool()
            conn = pool.getconn()
        except (psycopg2.OperationalError, psycopg2.pool.PoolError) as exc:
            self._slots.release()
            raise DatabaseUnavailable(str(exc).strip() or exc.__class__.__name__) from exc
        broken = False
        try:
            yield conn
        except BaseException as exc:
            broken = _is_connection_error(exc, conn)
            raise
        finally:
            if not broken and conn.closed == 0 and conn.status != psycopg2.extensions.STATUS_READY:
                with contextlib.suppress(psycopg2.Error):
                    conn.rollback()
            pool.putconn(conn, close=broken or conn.closed != 0)
            if broken:
                self._retire(pool)
            self._slots.release()

    def transaction(self, work: Callable[[psycopg2.extensions.cursor], T], retry: bool = True) -> T:
        """Run `work(cursor)` in one transaction (dict rows) and commit; retried once as the module docstring
        says (never with `retry=False`). `work` may run twice, so it must not have effects outside the
        transaction that a second run would make wrong (a duplicate NATS publish is fine: devices de-duplicate).

        A dead pooled connection fails at its first statement; the server never saw a commit, so running the
        whole unit again on a fresh connection is safe. A connection lost *during* commit is ambiguous and never
        retried.
        """
        return self._run(work, retry, autocommit=False)

    def read(self, work: Callable[[psycopg2.extensions.cursor], T], *, tuples: bool = False,
             api_timestamps: bool = False) -> T:
        """Run read-only `work(cursor)` in autocommit mode (see `autocommit`), retried once on a dead connection
        like `transaction()`: a read is always safe to repeat. One statement sees one snapshot, so put
        everything a read must see consistently into one statement. Rows are dicts, or tuples with `tuples=True`
        (cheaper to build for long lists); with `api_timestamps=True` every timestamptz column arrives as the
        API's string (app/core/timestamps.py), read from PostgreSQL's text without building a datetime.
        """
        return self.autocommit(work, retry=True, tuples=tuples, api_timestamps=api_timestamps)

    def autocommit(self, work: Callable[[psycopg2.extensions.cursor], T], *, retry: bool = False,
                   tuples: bool = False, api_timestamps: bool = False) -> T:
        """Run `work(cursor)` without a transaction block: each statement is a transaction of its own (a local
        setting, `set_config(name, value, true)`, lasts until its end).

        psycopg2 sends BEGIN and COMMIT as round trips of their own, so one statement inside `transaction()`
        costs three; here it costs one. `retry` runs `work` once more on a fresh connection when the first one
        was dead; only for work that is harmless to repeat (a write may have committed before the connection
        died). Options as for `read`.
        """
        return self._run(work, retry, autocommit=True, tuples=tuples, api_timestamps=api_timestamps)

    def _run(self, work: Callable[[psycopg2.extensions.cursor], T], retry: bool, *, autocommit: bool,
             tuples: bool = False, api_timestamps: bool = False) -> T:
        attempts = 2 if retry else 1
        for attempt in range(1, attempts + 1):
            committing = False
            try:
                with self.connection() as conn:
                    if autocommit:
                        conn.autocommit = True  # a client-side flag: setting it sends nothing
                    try:
                        with _cursor(conn, tuples, api_timestamps) as cur:
                            result = work(cur)
                        if not autocommit:
                            committing = True
                            conn.commit()
                    except psycopg2.errors.InvalidSqlStatementName:
                        _prepared.pop(conn, None)  # the session lost them: prepare again on next use
                        raise
                    finally:
                        if autocommit and conn.closed == 0:
                            conn.autocommit = False
                    return result
            except (DatabaseUnavailable, psycopg2.errors.QueryCanceled, psycopg2.errors.LockNotAvailable):
                raise  # a statement or lock timeout is the caller's to handle (the session is fine)
            except psycopg2.errors.InvalidSqlStatementName as exc:
                # The session lost its prepared statements (DISCARD ALL, a pooler that swapped the session): the
                # statement did not run and its transaction is void; run the work once more, preparing again.
                if attempt == attempts:
                    raise DatabaseUnavailable(f"prepared statement missing twice: {exc.pgcode}") from exc
                log.warning("a connection had lost its prepared statements; retrying once",
                            extra={"sqlstate": exc.pgcode})
            except ROLLED_BACK_CONFLICTS as exc:
                if attempt == attempts:
                    raise DatabaseUnavailable(f"transaction rolled back twice: {exc.pgcode}") from exc
                log.warning("transaction rolled back by a conflict; retrying once", extra={"sqlstate": exc.pgcode})
            except (psycopg2.OperationalError, psycopg2.InterfaceError) as exc:
                if committing or attempt == attempts or not _is_connection_error(exc, None):
                    raise DatabaseUnavailable(str(exc).strip() or exc.__class__.__name__) from exc
                log.warning("discarded a dead database connection; retrying once", extra={"error": str(exc)})
        raise AssertionError("unreachable")

    def ping(self, timeout: float = 1.0) -> float:
        """One `SELECT 1` round trip in milliseconds, for health checks; raises DatabaseUnavailable.

        It runs on a dedicated connection, not a pooled one: a pool fully lent out under load must not read as
        "PostgreSQL is down" (and must not make a probe wait POOL_WAIT_SECONDS). The connection is kept for
        the next probe; like `transaction()`, a kept connection that died (server restart) is replaced once.
        """
        with self._ping_lock:
            for attempt in (1, 2):
                reused = self._ping_conn is not None and self._ping_pid == os.getpid() and self._ping_conn.closed == 0
                started = time.perf_counter()
                try:
                    if not reused:
                        self._ping_conn = psycopg2.connect(
                            self.url,
                            connect_timeout=PING_CONNECT_TIMEOUT_SECONDS,
                            application_name=f"{self.application_name}-health",
                            options=f"-c statement_timeout={max(1, int(timeout * 1000))}",
                            **PING_TCP_OPTIONS,
                        )
                        self._ping_conn.autocommit = True
                        self._ping_pid = os.getpid()
                    with self._ping_conn.cursor() as cur:
                        cur.execute("SELECT 1")
                        cur.fetchone()
                    return (time.perf_counter() - started) * 1000
                except psycopg2.Error as exc:
                    self._close_ping()
                    if not (reused and attempt == 1 and _is_connection_error(exc, None)):
                        raise DatabaseUnavailable(str(exc).strip() or exc.__class__.__name__) from exc
        raise AssertionError("unreachable")

    def _close_ping(self) -> None:
        if self._ping_conn is not None and self._ping_pid == os.getpid():
            with contextlib.suppress(Exception):
                self._ping_conn.close()
        self._ping_conn = None
        self._ping_pid = None

    def close(self) -> None:
        """Close every pooled connection and the health-probe connection (worker exit)."""
        with self._lock:
            if self._pool is not None and self._pool_pid == os.getpid():
                with contextlib.suppress(Exception):
                    self._pool.closeall()
            self._pool = None
            self._pool_pid = None
        with self._ping_lock:
            self._close_ping()


def init_app(app: Flask) -> None:
    settings = app.config["SETTINGS"]
    # A pool at least as large as the thread count: getconn() raises at once when exhausted (decision 7).
    app.extensions["uaip.db"] = Database(settings.database_url, maxconn=settings.server_threads + 2)


def get_db() -> Database:
    return current_app.extensions["uaip.db"]
