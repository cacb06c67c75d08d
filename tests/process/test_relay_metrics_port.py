"""Two relays of two hubs on one host and the relay metrics port: a port set explicitly with
UAIP_RELAY_METRICS_PORT that is already taken stops the second relay (exit status 2, one line naming the variable)
while the first keeps serving; the default port taken costs the relay only its /metrics, logged at error level.
Real `uaip-hub relay` processes against the shared NATS and PostgreSQL (docs/operations.md, "Several hubs on one
host")."""

import contextlib
import errno
import socket

import pytest
import requests

from tests.support.processes import Relay, start_relay
from tests.support.services import free_port, wait_for

pytestmark = pytest.mark.process

DEFAULT_PORT = 9464


def hub(env: dict[str, str], run_id: str, name: str, **extra: str | None) -> dict[str, str | None]:
    """The environment of one hub's relay: its own UAIP_INSTANCE (so its own queue group)."""
    return {**env, "UAIP_INSTANCE": f"{name}-{run_id}", "UAIP_RELAY_QUEUE_GROUP": None, "LOG_FORMAT": "text",
            **extra}


def test_an_explicit_metrics_port_held_by_another_hubs_relay_stops_the_second_relay(hub_env, run_id):
    port = str(free_port())
    first = start_relay(hub(hub_env, run_id, "a", UAIP_RELAY_METRICS_PORT=port))
    try:
        wait_for(lambda: requests.get(f"http://127.0.0.1:{port}/metrics", timeout=2).status_code == 200,
                 timeout=20, message=f"first relay's /metrics\n{first.output()[-2000:]}")
        second = Relay(hub(hub_env, run_id, "b", UAIP_RELAY_METRICS_PORT=port)).start()
        try:
            assert second.wait(timeout=30) == 2, second.output()
            lines = [line for line in second.output().splitlines() if "UAIP_RELAY_METRICS_PORT" in line]
            assert lines == [next(line for line in lines if line.startswith("error: "))], second.output()
            assert f"UAIP_RELAY_METRICS_PORT={port} is unavailable" in lines[0]
            assert "relay started" not in second.output()
        finally:
            second.stop()
            second.log_path.unlink(missing_ok=True)
        assert first.running(), first.output()
        assert requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).status_code == 200
    finally:
        first.stop()
        first.log_path.unlink(missing_ok=True)


@contextlib.contextmanager
def default_port_taken():
    """Port 9464 in use for the duration: held here, or already held by something else on the host."""
    holder = socket.socket()
    try:
        try:
            holder.bind(("0.0.0.0", DEFAULT_PORT))
            holder.listen()
        except OSError as exc:
            assert exc.errno == errno.EADDRINUSE, exc
        yield
    finally:
        holder.close()


def test_the_default_metrics_port_taken_is_an_error_line_and_the_relay_runs(hub_env, run_id):
    with default_port_taken():
        relay = start_relay(hub(hub_env, run_id, "c", UAIP_RELAY_METRICS_PORT=None))
        try:
            wait_for(lambda: "relay started" in relay.output(), timeout=20, message="relay start")
            errors = [line for line in relay.output().splitlines()
                      if "relay metrics not served" in line and "UAIP_RELAY_METRICS_PORT" in line]
            assert len(errors) == 1 and " ERROR " in errors[0], relay.output()
            assert relay.running(), relay.output()
        finally:
            relay.stop()
            relay.log_path.unlink(missing_ok=True)
