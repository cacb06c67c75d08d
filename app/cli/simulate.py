"""A device-side simulator: `uaip-hub simulate --devices N`, and `DeviceSimulator` for tests and benchmarks.

Each simulated device listens on `uaip.devices.{id}.commands`, heartbeats on `uaip.devices.{id}.heartbeat`
and answers every command on `uaip.devices.{id}.acks` with `acknowledged` then `completed` (result: the command
and its params echoed), or `failed` when params hold `"fail": true`. `"delay_ms": N` makes the device take N ms.
A command delivered twice (same message_id, a redelivery) is not executed again: its recorded outcome is re-sent.
With tracing on, a device continues the trace whose `traceparent` the command's NATS headers carry, and its acks
carry it on to the relay (what docs/tracing.md asks of real devices).

With an example type (app/cli/examples.py, `--example thermostat`), the simulator first declares the type
(PUT /device-types/{name}, which needs the admin scope), registers the devices with it, and each device answers
as that type does, with results that match the declared result schemas. An example that plays state reports it
on `uaip.devices.{id}.state.reported` every `state_seconds` (and right after a change), and honours desired
values: it listens on `.state.desired`, applies them and reports back, so the delta empties (docs/state.md).

Registration goes through the REST API (stdlib HTTP, so the simulator needs nothing the hub does not).
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from app.cli.examples import Example
from app.infra.messaging import Messaging, MessagingUnavailable
from app.infra.subjects import (
    ack_subject,
    command_subject,
    device_id_for,
    device_id_from_subject,
    heartbeat_subject,
    state_desired_subject,
    state_reported_subject,
)
from app.telemetry import tracing

log = logging.getLogger(__name__)

MAX_REMEMBERED = 100_000


class HubError(RuntimeError):
    pass


def _http(method: str, url: str, body: dict | None = None, headers: dict[str, str] | None = None,
          form: dict[str, str] | None = None) -> tuple[int, dict]:
    data, all_headers = None, dict(headers or {})
    if body is not None:
        data, all_headers["Content-Type"] = json.dumps(body).encode(), "application/json"
    elif form is not None:
        data, all_headers["Content-Type"] = urllib.parse.urlencode(form).encode(), "application/x-www-form-urlencoded"
    req = urllib.request.Request(url, data=data, method=method, headers=all_headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, json.loads(exc.read() or b"{}")
        except ValueError:
            return exc.code, {}


def fetch_token(hub_url: str, client_id: str, client_secret: str) -> str:
    """An access token by OAuth2 client credentials (HTTP Basic)."""
    basic = base64.b64encode(f"{client_id}:{client_secret}".encode()).decode()
    status, body = _http("POST", f"{hub_url}/api/v1/auth/token", form={"grant_type": "client_credentials"},
                         headers={"Authorization": f"Basic {basic}"})
    if status != 200:
        raise HubError(f"token request failed ({status}): {body}")
    return body["access_token"]


def declare_type(hub_url: str, token: str, example: Example) -> dict:
    """Declare (or replace) the example's device type; returns the type object."""
    status, body = _http("PUT", f"{hub_url}/api/v1/device-types/{example.device_type}", body=example.declaration,
                         headers={"Authorization": f"Bearer {token}"})
    if status == 403:
        raise HubError(f"declaring the device type '{example.device_type}' needs a token with the admin scope")
    if status not in (200, 201):
        raise HubError(f"declaring the device type '{example.device_type}' failed ({status}): {body}")
    return body


def register_devices(hub_url: str, token: str, device_ids: Iterable[str], device_type: str = "simulator") -> list[str]:
    """Register devices through the API; an id that already exists is reused (the simulator needs no secret:
    it talks to the hub over NATS only)."""
    registered = []
    for device_id in device_ids:
        status, body = _http(
            "POST", f"{hub_url}/api/v1/devices",
            body={"device_id": device_id, "name": f"Simulated {device_id}", "device_type": device_type,
                  "capabilities": ["echo"]},
            headers={"Authorization": f"Bearer {token}"},
        )
        if status not in (201, 409):
            raise HubError(f"registering {device_id} failed ({status}): {body}")
        registered.append(device_id)
    return registered


class DeviceSimulator:
    """Simulated devices on one NATS connection. `start()`/`stop()`, or use it as a context manager."""

    def __init__(self, nats_url: str, device_ids: Iterable[str], heartbeat_seconds: float = 15.0,
                 workers: int = 8, example: Example | None = None, state_seconds: float = 5.0) -> None:
        self.device_ids = list(device_ids)
        self.example = example
        self.state_seconds = state_seconds
        self.plays_state = example is not None and example.reported is not None
        self.desired_received: list[dict[str, Any]] = []
        self.states = {device_id: dict(example.initial_state) for device_id in self.device_ids} if example else {}
        self.heartbeat_seconds = heartbeat_seconds
        self.messaging = Messaging([url.strip() for url in nats_url.split(",") if url.strip()], name="uaip-simulator")
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sim-device")
        self.received: list[dict[str, Any]] = []  # every command envelope delivered, duplicates included
        self.outcomes: dict[str, dict[str, Any]] = {}  # message_id → final ack sent
        self._running: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._heartbeats: threading.Thread | None = None
        self._reports: threading.Thread | None = None

    @classmethod
    def with_registration(cls, hub_url: str, nats_url: str, count: int, *, token: str, prefix: str | None = None,
                          example: Example | None = None, **options: Any) -> DeviceSimulator:
        hub_url = hub_url.rstrip("/")
        prefix = prefix or f"sim-{uuid.uuid4().hex[:6]}"
        device_type = "simulator"
        if example is not None:
            declare_type(hub_url, token, example)
            device_type = example.device_type
        ids = register_devices(hub_url, token, [f"{prefix}-{i}" for i in range(1, count + 1)], device_type)
        return cls(nats_url, ids, example=example, **options)

    # -- lifecycle ------------------------------------------------------------------------------------

    def start(self, connect_timeout: float = 10.0) -> DeviceSimulator:
        self.messaging.start()
        self.messaging.wait_connected(connect_timeout)
        for device_id in self.device_ids:
            self.messaging.subscribe(command_subject(device_id), self._on_command, with_headers=True)
            if self.plays_state:
                self.messaging.subscribe(state_desired_subject(device_id), self._on_desired)
        self._heartbeats = threading.Thread(target=self._heartbeat_loop, name="sim-heartbeat", daemon=True)
        self._heartbeats.start()
        if self.plays_state:
            self._reports = threading.Thread(target=self._report_loop, name="sim-state", daemon=True)
            self._reports.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in (self._heartbeats, self._reports):
            if thread is not None:
                thread.join(timeout=5)
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.messaging.close()

    def __enter__(self) -> DeviceSimulator:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- device behaviour -----------------------------------------------------------------------------

    def heartbeat(self, status: str = "online") -> int:
        """Heartbeat every device once; returns how many were published."""
        sent = 0
        for device_id in self.device_ids:
            try:
                self.messaging.publish(heartbeat_subject(device_id), {"status": status})
                sent += 1
            except MessagingUnavailable:
                break
        return sent

    def _heartbeat_loop(self) -> None:
        while not self._stop.is_set():
            self.heartbeat()
            self._stop.wait(self.heartbeat_seconds)

    # -- device state (examples that play it) --------------------------------------------------------

    def report_state(self, device_id: str) -> bool:
        """Publish this device's reported state once (False while NATS is away)."""
        with self._lock:
            reported = self.example.reported(self.states[device_id])
        try:
            self.messaging.publish(state_reported_subject(device_id), {"reported": reported})
            return True
        except MessagingUnavailable:
            return False

    def _report_loop(self) -> None:
        while not self._stop.is_set():
            for device_id in self.device_ids:
                with self._lock:
                    self.example.tick(self.states[device_id])
                if not self.report_state(device_id):
                    break
            self._stop.wait(self.state_seconds)

    def _on_desired(self, subject: str, data: bytes) -> None:
        """`{"version", "desired", "delta"}` from the hub: apply the desired values, then report (on a worker
        thread: this runs on the NATS loop)."""
        device_id = device_id_for(subject, "state.desired")
        try:
            desired = json.loads(data)["desired"]
        except (ValueError, KeyError, TypeError):
            log.warning("simulator: malformed desired state ignored")
            return
        if device_id not in self.states or not isinstance(desired, dict) or self._stop.is_set():
            return
        with self._lock:
            self.desired_received.append({"device_id": device_id, "desired": desired})
            self.example.apply_desired(self.states[device_id], desired)
        self.pool.submit(self.report_state, device_id)

    def _on_command(self, subject: str, data: bytes, headers: dict | None = None) -> None:
        if not self._stop.is_set():
            self.pool.submit(self._execute_in_trace, subject, data, headers)

    def _execute_in_trace(self, subject: str, data: bytes, headers: dict | None) -> None:
        with tracing.processing(subject, device_id_from_subject(subject), [headers]):
            self._execute(data)

    def _ack(self, device_id: str, body: dict[str, Any]) -> bool:
        try:
            self.messaging.publish(ack_subject(device_id), body)
            return True
        except MessagingUnavailable:
            return False  # the hub re-sends an unacknowledged command; the outcome is sent then

    def _execute(self, data: bytes) -> None:
        try:
            command = json.loads(data)
            message_id, device_id = command["message_id"], command["device_id"]
        except (ValueError, KeyError, TypeError):
            log.warning("simulator: malformed command ignored")
            return
        with self._lock:
            self.received.append(command)
            outcome = self.outcomes.get(message_id)
            running = message_id in self._running
            if outcome is None and not running:
                self._running.add(message_id)
        if outcome is not None:  # a redelivery of a command already done: report its outcome again
            self._ack(device_id, outcome)
            return
        if running:  # a redelivery of a command still being executed: it reports when done
            return
        try:
            self._run(command, message_id, device_id)
        finally:
            with self._lock:
                self._running.discard(message_id)

    def _run(self, command: dict[str, Any], message_id: str, device_id: str) -> None:
        if not self._ack(device_id, {"message_id": message_id, "status": "acknowledged"}):
            return
        params = command.get("params") if isinstance(command.get("params"), dict) else {}
        if self.example is not None:
            with self._lock:  # one device's state changes one command at a time
                status, result, error = self.example.behaviour(self.states[device_id], command.get("command"), params)
        else:
            status, result, error = self._echo(command.get("command"), params)
        outcome = {"message_id": message_id, "status": status}
        outcome.update({"result": result} if status == "completed" else {"error": error})
        with self._lock:  # remembered first: a redelivery from now on gets this outcome, even if this ack is lost
            if len(self.outcomes) >= MAX_REMEMBERED:
                self.outcomes.clear()
            self.outcomes[message_id] = outcome
        self._ack(device_id, outcome)

    @staticmethod
    def _echo(command: str | None, params: dict[str, Any]) -> tuple[str, Any, str | None]:
        """The default device: echo the params; `fail: true` fails, `delay_ms` makes it slow."""
        delay = params.get("delay_ms")
        if isinstance(delay, (int, float)) and 0 < delay <= 60_000:
            time.sleep(delay / 1000)
        if params.get("fail") is True:
            return "failed", None, str(params.get("error") or "simulated failure")
        return "completed", {"command": command, "echo": params}, None

    def received_ids(self) -> set[str]:
        with self._lock:
            return {command["message_id"] for command in self.received}
