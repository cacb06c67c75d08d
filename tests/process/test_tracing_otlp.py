"""Tracing across real processes into a real OTLP/HTTP receiver (docs/tracing.md): gunicorn, `uaip-hub relay`
and `uaip-hub simulate`, each exporting its own spans; one command followed from the API request through NATS,
the simulated device and the relay applying its ack, in one trace; a redelivery joining that trace; bad OTEL_*
values costing warnings, never the start-up."""

from __future__ import annotations

import contextlib
import secrets
import uuid
from collections.abc import Iterator

import pytest
import requests

from tests.support.asserting import nonempty
from tests.support.otlp import OtlpReceiver
from tests.support.processes import HubServer, Relay, Simulator
from tests.support.services import NATS_URL, wait_for

pytestmark = pytest.mark.process

COMMANDS = "publish uaip.devices.{device_id}.commands"
DEVICE_WORK = "process uaip.devices.{device_id}.commands"
ACKS = "publish uaip.devices.{device_id}.acks"
RELAY_WORK = "process uaip.devices.{device_id}.acks"


@pytest.fixture()
def otlp():
    with OtlpReceiver() as receiver:
        yield receiver


@pytest.fixture()
def env(hub_env, otlp):
    return {
        **hub_env,
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp.url,  # on: an endpoint is configured
        "OTEL_BSP_SCHEDULE_DELAY": "100",  # export within 0.1 s instead of 5 s
        "UAIP_RELAY_SWEEP_SECONDS": "0.2", "UAIP_COMMAND_RETRY_SECONDS": "1",
        "UAIP_RELAY_QUEUE_GROUP": f"uaip-relay-otlp-{uuid.uuid4().hex[:8]}", "UAIP_RELAY_METRICS_PORT": "0",
    }


def new_traceparent() -> tuple[str, str, str]:
    trace_id, parent = secrets.token_hex(16), secrets.token_hex(8)
    return trace_id, parent, f"00-{trace_id}-{parent}-01"


@contextlib.contextmanager
def running_relay(env) -> Iterator[Relay]:
    with Relay(env) as relay:
        wait_for(lambda: "relay started" in relay.output() or not relay.running(), timeout=30, message="relay start")
        assert relay.running(), relay.output()
        yield relay


@contextlib.contextmanager
def running_simulator(env, hub, client, prefix) -> Iterator[Simulator]:
    """`uaip-hub simulate` with one device, `<prefix>-1`, heartbeating every second."""
    args = ["--devices", "1", "--prefix", prefix, "--hub-url", hub.url, "--nats-url", NATS_URL,
            "--client-id", client[0], "--client-secret", client[1], "--heartbeat-seconds", "1"]
    with Simulator(env, args) as simulator:
        wait_for(lambda: "simulating" in simulator.output() or not simulator.running(), timeout=30, message="simulator")
        assert simulator.running(), simulator.output()
        yield simulator


def token(hub, client) -> dict[str, str]:
    response = requests.post(f"{hub.url}/api/v1/auth/token", timeout=10, data={
        "grant_type": "client_credentials", "client_id": client[0], "client_secret": client[1]})
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def one(spans, **match):
    found = [s for s in spans if all(getattr(s, key) == value for key, value in match.items())]
    assert len(found) == 1, (match, [(s.service, s.name, s.kind) for s in spans])
    return found[0]


def test_one_command_is_one_trace_across_api_device_and_relay(env, otlp, api_client_factory):
    client = api_client_factory()
    prefix = f"otlp-{uuid.uuid4().hex[:8]}"
    device_id = f"{prefix}-1"
    with HubServer(env) as hub, running_relay(env) as relay, running_simulator(env, hub, client, prefix) as simulator:
        auth = token(hub, client)
        wait_for(lambda: requests.get(f"{hub.url}/api/v1/devices/{device_id}", headers=auth, timeout=5)
                 .json().get("status") == "online", timeout=30, message="simulated device online")
        trace_id, parent, traceparent = new_traceparent()
        response = requests.post(f"{hub.url}/api/v1/devices/{device_id}/command?wait=20", json={"command": "echo"},
                                 headers={**auth, "traceparent": traceparent, "X-Request-ID": "otlp-req-1"}, timeout=30)
        assert response.status_code == 200 and response.json()["status"] == "completed", response.text
        for path in ("/api/v1/system/health", "/api/v1/system/health/readiness", "/metrics"):
            assert requests.get(f"{hub.url}{path}", timeout=10).status_code == 200

        # Each process exports on its own schedule: wait until every part of the journey has arrived.
        expected = {("uaip-hub", "server"): 1, ("uaip-hub", COMMANDS): 1, ("uaip-simulator", DEVICE_WORK): 1,
                    ("uaip-simulator", ACKS): 2, ("uaip-relay", RELAY_WORK): 1}

        def journey_arrived():
            spans = otlp.trace(trace_id)
            return all(sum(1 for s in spans if s.service == service and name in (s.name, s.kind)) >= count
                       for (service, name), count in expected.items()) and spans

        spans = wait_for(journey_arrived, timeout=20, message="the command's whole journey")
        server = one(spans, kind="server")
        assert (server.service, server.name) == ("uaip-hub", "POST /api/v1/devices/<device_id>/command")
        assert server.parent_span_id == parent and server.attributes["uaip.request_id"] == "otlp-req-1"
        publish = one(spans, name=COMMANDS)
        assert (publish.service, publish.kind, publish.parent_span_id) == ("uaip-hub", "producer", server.span_id)
        assert publish.attributes["messaging.destination.name"] == f"uaip.devices.{device_id}.commands"
        device_work = one(spans, name=DEVICE_WORK)
        assert (device_work.service, device_work.kind) == ("uaip-simulator", "consumer")
        assert device_work.parent_span_id == publish.span_id
        acks = [s for s in spans if s.name == ACKS and s.parent_span_id == device_work.span_id]
        assert len(acks) == 2 and {s.service for s in acks} == {"uaip-simulator"}
        applied = [s for s in spans if s.name == RELAY_WORK]
        assert applied and {s.service for s in applied} == {"uaip-relay"}
        assert {s.parent_span_id for s in applied} <= {s.span_id for s in acks}
        below_server = {s.attributes.get("db.system") for s in spans if s.parent_span_id == server.span_id}
        assert {"postgresql", "redis"} <= below_server  # the request's SQL and the limiter's Redis calls
        assert any(s.service == "uaip-relay" and s.kind == "client" and s.parent_span_id in {a.span_id for a in applied}
                   for s in spans)  # the relay's SQL, in the same trace

        # Probes, readiness and the scrape made no spans (nor did their PostgreSQL and Redis round trips).
        assert not otlp.received(lambda s: "/health" in s.name or "/metrics" in s.name)
        assert not otlp.received(lambda s: s.kind == "client" and not s.parent_span_id)

        # The API's access line and the relay's log line carry the trace id.
        assert any(line.get("trace_id") == trace_id and line.get("request_id") == "otlp-req-1"
                   for line in hub.json_lines())
        assert any(line.get("trace_id") == trace_id and line["message"] == "command completed"
                   for line in relay.json_lines())
        assert simulator.running()


def test_a_redelivery_joins_the_trace_of_the_request(env, otlp, api_client_factory):
    client = api_client_factory()
    prefix = f"otlp-late-{uuid.uuid4().hex[:8]}"
    device_id = f"{prefix}-1"
    with HubServer(env) as hub, running_relay(env):
        auth = token(hub, client)
        assert requests.post(f"{hub.url}/api/v1/devices", headers=auth, timeout=10, json={
            "device_id": device_id, "name": "late device", "device_type": "sim"}).status_code == 201
        trace_id, _parent, traceparent = new_traceparent()
        response = requests.post(f"{hub.url}/api/v1/devices/{device_id}/command", json={"command": "echo", "qos": 1},
                                 headers={**auth, "traceparent": traceparent}, timeout=10)
        assert response.status_code == 202, response.text
        # Nobody listens yet: the relay re-sends it after the retry delay, in the request's trace.
        resent = otlp.wait_for(lambda s: s.trace_id == trace_id and s.name == COMMANDS and s.service == "uaip-relay",
                               message="the relay's redelivery in the request's trace")
        server = one(otlp.trace(trace_id), kind="server")
        assert resent[0].parent_span_id == server.span_id

        with running_simulator(env, hub, client, prefix):  # the device comes online and gets the command
            message_url = f"{hub.url}/api/v1/messages/{response.json()['message_id']}"
            wait_for(lambda: requests.get(message_url, headers=auth, timeout=5).json()["status"] == "completed",
                     timeout=30, message="completed")
            otlp.wait_for(lambda s: s.trace_id == trace_id and s.name == RELAY_WORK,
                          message="the relay applying the ack")
            otlp.wait_for(lambda s: s.trace_id == trace_id and s.name == DEVICE_WORK, message="the device's work")
        spans = otlp.trace(trace_id)
        publishes = [s for s in spans if s.name == COMMANDS]
        assert {s.service for s in publishes} == {"uaip-hub", "uaip-relay"}
        assert all(s.parent_span_id == server.span_id for s in nonempty(publishes))
        device_work = [s for s in spans if s.name == DEVICE_WORK]
        assert device_work and {s.parent_span_id for s in device_work} <= {s.span_id for s in publishes}


def test_bad_otel_values_cost_a_warning_never_the_start_up(env, otlp, api_client_factory):
    client = api_client_factory()
    # Values the SDK falls back from: tracing stays on, with a warning for each.
    tolerated = {**env, "OTEL_TRACES_SAMPLER": "sometimes", "OTEL_SDK_DISABLED": "maybe",
                 "OTEL_RESOURCE_ATTRIBUTES": "no-equals-sign", "OTEL_SERVICE_NAME": "hub-under-test"}
    with HubServer(tolerated) as hub:
        trace_id, _parent, traceparent = new_traceparent()
        assert requests.get(f"{hub.url}/api/v1/devices", headers={**token(hub, client), "traceparent": traceparent},
                            timeout=10).status_code == 200
        [server] = otlp.wait_for(lambda s: s.trace_id == trace_id and s.kind == "server", message="the request span")
        assert server.service == "hub-under-test"
        warnings = " ".join(line["message"] for line in hub.json_lines() if line.get("level") == "warning")
        assert "Couldn't recognize sampler sometimes" in warnings
        assert "OTEL_SDK_DISABLED must be true or false" in warnings
        assert "no-equals-sign" in warnings

    # Values the SDK refuses: that process runs untraced, says why, and serves.
    refused = {**env, "OTEL_PROPAGATORS": "no-such-propagator"}
    relay_settings = {**refused, "OTEL_PROPAGATORS": "tracecontext", "OTEL_BSP_MAX_QUEUE_SIZE": "1",
                      "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "5"}
    with HubServer(refused) as hub, running_relay(relay_settings) as relay:
        trace_id, _parent, traceparent = new_traceparent()
        assert requests.get(f"{hub.url}/api/v1/devices", headers={**token(hub, client), "traceparent": traceparent},
                            timeout=10).status_code == 200
        wait_for(lambda: any("check OTEL_PROPAGATORS" in line["message"] for line in hub.json_lines()),
                 message="the API's warning")
        assert "the OTEL_* settings were refused" in relay.output() and relay.running()
        assert not otlp.trace(trace_id)
