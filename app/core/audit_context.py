"""Who is acting, for the audit log: the actor and the request id of the work in progress.

A context variable, so services record the actor without being handed it (app/services/audit.py reads it). The web
pipeline sets the request id when a request starts and the actor once it is authenticated (`client:<client_id>`,
or `operator:<email>` for the console); the CLI sets `cli`. Under gunicorn's threads every request starts by
resetting both (`begin`), so a thread never carries the previous request's actor.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar

CLI_ACTOR = "cli"

_actor: ContextVar[str | None] = ContextVar("uaip_audit_actor", default=None)
_request_id: ContextVar[str | None] = ContextVar("uaip_audit_request_id", default=None)


def begin(request_id: str | None) -> None:
    """A new unit of work (a request): no actor yet, this request id."""
    _actor.set(None)
    _request_id.set(request_id)


def set_actor(actor: str | None) -> None:
    _actor.set(actor)


def current_actor() -> str | None:
    return _actor.get()


def current_request_id() -> str | None:
    return _request_id.get()


def client_actor(client_id: str) -> str:
    return f"client:{client_id}"


def operator_actor(email: str) -> str:
    return f"operator:{email}"


@contextlib.contextmanager
def acting_as(actor: str, request_id: str | None = None) -> Iterator[None]:
    """Run a block as `actor` (the CLI, a test), restoring the previous context afterwards."""
    actor_token, request_token = _actor.set(actor), _request_id.set(request_id)
    try:
        yield
    finally:
        _actor.reset(actor_token)
        _request_id.reset(request_token)
