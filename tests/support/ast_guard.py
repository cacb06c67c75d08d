"""One `ast.parse` at a time in the test process, on the CPython versions that need it.

CPython before 3.11.8 keeps the AST builder's recursion counter per interpreter instead of per thread
(python/cpython#106905): two threads inside `ast.parse` at once can fail with `SystemError: AST constructor
recursion depth mismatch`. The suite's main thread parses a lot while a test runs — hypothesis and schemathesis
parse predicates and whole module sources to generate data, pytest parses modules it rewrites — and meanwhile the
hub's own threads (NATS loop, health probes) may log an exception: Python 3.11 parses the failing source line to
place its ^^^ markers. That made the OpenAPI fuzz test error now and then in full runs.

`install()` wraps `ast.parse` (which the traceback module, pytest, hypothesis and schemathesis all call by attribute)
in a process-wide re-entrant lock. The wait is bounded: should a parse ever block on something the lock holder
needs (a logging handler's lock, say), it goes ahead unserialised after WAIT_SECONDS rather than hang the suite.
"""

from __future__ import annotations

import ast
import sys
import threading

WAIT_SECONDS = 5.0
FIXED_IN = (3, 11, 8)

_lock = threading.RLock()


def needed() -> bool:
    return (3, 11) <= sys.version_info[:3] < FIXED_IN


def install() -> None:
    """Serialise `ast.parse` for this process (idempotent; a no-op where CPython is fixed)."""
    if not needed() or getattr(ast.parse, "serialised", False):
        return
    unguarded = ast.parse

    def parse(*args, **kwargs):
        acquired = _lock.acquire(timeout=WAIT_SECONDS)
        try:
            return unguarded(*args, **kwargs)
        finally:
            if acquired:
                _lock.release()

    parse.serialised = True
    parse.__wrapped__ = unguarded
    parse.__doc__ = unguarded.__doc__
    ast.parse = parse
