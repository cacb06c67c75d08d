"""Submitting a command from a request: what every entry point that sends commands (REST routes and MCP's
send_command) does — submit through the service with this app's database, NATS and limits, then, with `?wait`,
hold the request for the outcome within this process's waiter slots."""

from __future__ import annotations

from typing import Any

from flask import current_app, g

from app.infra.db import get_db
from app.infra.messaging import get_messaging
from app.services.commands import submit
from app.services.commands.waiters import Waiters


def _settings():
    return current_app.config["SETTINGS"]


def deliver(
    spec: submit.CommandSpec, *, client_id: str, wait_seconds: int, idempotency: submit.Idempotency | None,
) -> tuple[submit.Submitted, dict[str, Any] | None]:
    """Submit a command and, with `wait_seconds`, wait that long for its final state: what every entry point that
    sends commands (REST and MCP's send_command) does. Returns the submit and the final message (None: not final
    in time, or no wait)."""
    settings = _settings()
    submitted = submit.submit_command(
        get_db(), get_messaging(), spec,
        client_id=client_id, request_id=g.get("request_id"), idempotency=idempotency,
        max_pending=settings.max_pending_commands_per_device, heartbeat_timeout=settings.heartbeat_timeout_seconds,
        retry_seconds=settings.command_retry_seconds,
    )
    finished = None
    if wait_seconds:
        finished = waiters().wait(get_db(), submitted.message_id, wait_seconds, client_id=client_id)
    return submitted, finished


def waiters() -> Waiters:
    extensions = current_app.extensions
    if "uaip.waiters" not in extensions:
        settings = _settings()
        extensions.setdefault("uaip.waiters", Waiters(
            get_messaging(), settings.max_waiters, settings.max_waiters_per_client))
    return extensions["uaip.waiters"]
