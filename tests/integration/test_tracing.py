"""Tracing on real PostgreSQL, Redis and NATS, spans caught by the SDK's in-memory exporter (docs/tracing.md):
request spans and their children, NATS propagation, the relay and the simulated device continuing a command's
trace, redeliveries joining it, log correlation, and nothing at all when tracing is off.

The in-memory provider is this process's tracer provider (OpenTelemetry allows one per process); `traced`
installs it through `tracing.install` for one test and undoes the process-wide instrumentation afterwards, so
the rest of the suite runs untraced.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest
from opentelemetry.instrumentation.psycopg2 import Psycopg2Instrumentor
from opentelemetry.instrumentation.redis import RedisInstrumentor
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, format_span_id, format_trace_id

from app import create_app
from app.cli.relay import Relay
from app.cli.simulate import DeviceSimulator
from app.core.config import load_settings
from app.infra.db import Database
from app.infra.messaging import Messaging
from app.infra.subjects import ack_subject, command_subject
from app.services.commands import sweeps
from app.telemetry import tracing
from app.telemetry.tracing_setup import build_provider
from tests.conftest import capture_logs, unique_id
from tests.support.asserting import nonempty
from tests.support.services import NATS_URL, wait_for

INCOMING_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
INCOMING_PARENT = "00f067aa0ba902b7"
INCOMING = f"00-{INCOMING_TRACE}-{INCOMING_PARENT}-01"


@pytest.fixture(scope="module")
def memory():
    """This process's tracer provider for the module: the hub's own (resource, sampler from OTEL_*), exporting
    synchronously into memory."""
    exporter = InMemorySpanExporter()
    provider = build_provider(tracing.API_SERVICE, SimpleSpanProcessor(exporter))
    return provider, exporter


@pytest.fixture()
def traced(monkeypatch, memory):
    provider, exporter = memory
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp")  # apps created from now on are instrumented
    tracing.install(provider)
    exporter.clear()
    yield exporter
    tracing.uninstall()
    for instrumentor in (Psycopg2Instrumentor(), RedisInstrumentor()):
        if instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.uninstrument()


@pytest.fixture()
def traced_app(traced, hub_env):
    app = create_app(hub_env)

    @app.get("/api/v1/log-for-trace-test")
    def log_something():
        logging.getLogger("app.test").info("inside the request")
        return {"ok": True}

    return app


@pytest.fixture()
def traced_client(traced_app):
    return traced_app.test_client()


@pytest.fixture()
def headers(traced_client, api_client_factory):
    client_id, secret = api_client_factory("admin")
    token = traced_client.post("/api/v1/auth/token", data={
        "grant_type": "client_credentials", "client_id": client_id, "client_secret": secret}).json["access_token"]
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture()
def device(traced_client, headers):
    device_id = unique_id("trace")
    response = traced_client.post("/api/v1/devices",
                                  json={"device_id": device_id, "name": "traced", "device_type": "t"},
                                  headers=headers)
    assert response.status_code == 201, response.json
    return device_id


class HeaderCollector:
    """NATS messages on one subject with their headers."""

    def __init__(self, subject: str) -> None:
        self.messaging = Messaging([NATS_URL], name="uaip-test-listener")
        self.subject = subject
        self.received: list[tuple[dict, dict]] = []

    def _on(self, _subject, data, headers) -> None:
        self.received.append((json.loads(data), dict(headers or {})))

    def __enter__(self) -> HeaderCollector:
        assert self.messaging.wait_connected(10)
        self.messaging.subscribe(self.subject, self._on, with_headers=True)
        self.messaging.flush()
        return self

    def __exit__(self, *exc) -> None:
        self.messaging.close()

    def wait(self, count: int = 1) -> list[tuple[dict, dict]]:
        return wait_for(lambda: len(self.received) >= count and list(self.received), timeout=10,
                        message=f"{count} message(s) on {self.subject}")


def hex_ids(span) -> tuple[str, str]:
    return format_trace_id(span.context.trace_id), format_span_id(span.context.span_id)


def traceparent_of(span) -> str:
    trace_id, span_id = hex_ids(span)
    return f"00-{trace_id}-{span_id}-01"


def only(spans, **match):
    found = [s for s in spans if all((s.kind if k == "kind" else getattr(s, k)) == v for k, v in match.items())]
    assert len(found) == 1, [(s.name, s.kind) for s in spans]
    return found[0]


def children(spans, parent):
    return [s for s in spans if s.parent is not None and s.parent.span_id == parent.context.span_id]


def stored_traceparent(db, message_id):
    return db.transaction(lambda cur: (cur.execute("SELECT traceparent FROM commands WHERE message_id = %s",
                                                   (message_id,)), cur.fetchone())[1]["traceparent"])


# --- requests -------------------------------------------------------------------------------------------------


def test_a_request_is_one_server_span_continuing_the_callers_trace(traced_client, traced, headers):
    traced.clear()
    response = traced_client.get("/api/v1/devices?limit=5",
                                 headers={**headers, "traceparent": INCOMING, "X-Request-ID": "trace-req-1"})
    assert response.status_code == 200
    spans = traced.get_finished_spans()
    server = only(spans, kind=SpanKind.SERVER)
    assert server.name == "GET /api/v1/devices"
    assert hex_ids(server)[0] == INCOMING_TRACE
    assert server.parent is not None and server.parent.is_remote
    assert format_span_id(server.parent.span_id) == INCOMING_PARENT
    assert server.attributes["http.route"] == "/api/v1/devices"
    assert server.attributes["uaip.request_id"] == "trace-req-1"
    assert server.resource.attributes["service.name"] == "uaip-hub"
    # The rate limiter's Redis script and the page's SQL are children of the request, in the caller's trace.
    below = children(spans, server)
    assert {s.name for s in below} >= {"EVALSHA", "SELECT"}, [s.name for s in below]
    assert all(s.kind == SpanKind.CLIENT for s in nonempty(below))
    assert {s.attributes.get("db.system") for s in below} == {"redis", "postgresql"}
    assert len(spans) == 1 + len(below)  # nothing outside the request's trace


def test_span_names_use_the_url_rule_not_the_path(traced_client, traced, headers, device):
    traced.clear()
    assert traced_client.get(f"/api/v1/devices/{device}", headers=headers).status_code == 200
    assert traced_client.get("/api/v1/no-such-route", headers=headers).status_code == 404
    names = [s.name for s in traced.get_finished_spans() if s.kind == SpanKind.SERVER]
    assert names == ["GET /api/v1/devices/<device_id>", "GET"]  # an unmatched route has no rule to name


def test_a_traced_device_list_reads_the_same_document(traced_client, traced, headers, device):
    """The list reads tuple rows; with the pool's cursors traced they come from the traced cursor, still traced."""
    traced.clear()
    page = traced_client.get("/api/v1/devices?limit=1000", headers=headers).json
    assert "SELECT" in [s.name for s in traced.get_finished_spans() if s.kind == SpanKind.CLIENT]
    listed = {item["device_id"]: item for item in page["devices"]}
    assert listed[device] == traced_client.get(f"/api/v1/devices/{device}", headers=headers).json
    assert page["total"] >= len(listed) >= 1


@pytest.mark.parametrize("path", ["/api/v1/system/health", "/api/v1/system/health/liveness",
                                  "/api/v1/system/health/readiness", "/metrics"])
def test_probes_and_metrics_are_not_traced(traced_client, traced, path):
    traced.clear()
    assert traced_client.get(path, headers={"traceparent": INCOMING}).status_code == 200
    # Not the request, nor the health probes' PostgreSQL and Redis round trips, nor the scrape's device count.
    assert traced.get_finished_spans() == ()


def test_log_lines_inside_a_span_carry_its_ids(traced_client, traced, headers):
    lines = capture_logs()
    traced.clear()
    response = traced_client.get("/api/v1/log-for-trace-test", headers={**headers, "traceparent": INCOMING})
    assert response.status_code == 200
    logging.getLogger("app.test").info("outside any request")
    server = only(traced.get_finished_spans(), kind=SpanKind.SERVER)
    trace_id, span_id = hex_ids(server)
    inside = [line for line in lines() if line["message"] == "inside the request"]
    access = [line for line in lines() if line["logger"] == "uaip.access"]
    outside = [line for line in lines() if line["message"] == "outside any request"]
    assert len(inside) == len(access) == len(outside) == 1
    for line in inside + access:
        assert (line["trace_id"], line["span_id"]) == (trace_id, span_id) and trace_id == INCOMING_TRACE
    assert "trace_id" not in outside[0] and "span_id" not in outside[0]


# --- commands over NATS ---------------------------------------------------------------------------------------


def test_a_command_carries_the_trace_over_nats_and_keeps_it_for_redelivery(traced_client, traced, headers, device, db):
    with HeaderCollector(command_subject(device)) as nats:
        traced.clear()
        response = traced_client.post(f"/api/v1/devices/{device}/command", json={"command": "echo", "params": {"x": 1}},
                                      headers={**headers, "traceparent": INCOMING})
        assert response.status_code == 202, response.json
        message_id = response.json["message_id"]
        [(envelope, nats_headers)] = nats.wait()
    spans = traced.get_finished_spans()
    server = only(spans, kind=SpanKind.SERVER)
    publish = only(spans, kind=SpanKind.PRODUCER, name="publish uaip.devices.{device_id}.commands")
    assert publish.parent.span_id == server.context.span_id and hex_ids(publish)[0] == INCOMING_TRACE
    assert publish.attributes["messaging.system"] == "nats"
    assert publish.attributes["messaging.destination.name"] == command_subject(device)
    assert publish.attributes["messaging.destination.template"] == "uaip.devices.{device_id}.commands"
    assert publish.attributes["messaging.message.id"] == message_id == envelope["message_id"]
    assert publish.attributes["uaip.device_id"] == device
    # The device gets the publish span as its parent; the stored command keeps the request's context.
    assert nats_headers == {"Nats-Msg-Id": message_id, "traceparent": traceparent_of(publish)}
    assert stored_traceparent(db, message_id) == traceparent_of(server)

    # A redelivery (the relay re-sending to a device that came back), outside any request: same trace.
    messaging = Messaging([NATS_URL])
    try:
        assert messaging.wait_connected(10)
        with HeaderCollector(command_subject(device)) as nats:
            traced.clear()
            assert sweeps.redeliver_for_devices(db, messaging, [device], 1.0) == 1
            [(envelope, nats_headers)] = nats.wait()
    finally:
        messaging.close()
    again = only(traced.get_finished_spans(), kind=SpanKind.PRODUCER)
    assert envelope["message_id"] == message_id
    assert hex_ids(again)[0] == INCOMING_TRACE and again.parent.span_id == server.context.span_id
    assert nats_headers["traceparent"] == traceparent_of(again)


@pytest.fixture()
def relay(hub_env, database):
    """A real relay loop in a thread of this process (its spans reach the in-memory exporter)."""
    settings = load_settings({**hub_env, "UAIP_RELAY_SWEEP_SECONDS": "0.2", "UAIP_COMMAND_RETRY_SECONDS": "30",
                              "UAIP_RELAY_QUEUE_GROUP": f"uaip-relay-trace-{uuid.uuid4().hex[:8]}"})
    db, messaging = Database(database, maxconn=4), Messaging([NATS_URL], name="uaip-test-relay")
    instance = Relay(db, messaging, settings)
    runner = threading.Thread(target=instance.run, name="test-relay", daemon=True)
    runner.start()
    yield instance
    instance.request_stop()
    runner.join(20)
    db.close()


def device_online(client, headers, device_id):
    return client.get(f"/api/v1/devices/{device_id}", headers=headers).json["status"] == "online"


def test_one_command_is_one_trace_from_request_through_device_to_relay(traced_client, traced, headers, device, relay):
    # Heartbeats every second: the relay thread may not have subscribed yet when the simulator's first heartbeat
    # goes out, and the device must come online from a later one, not 30 s later.
    with DeviceSimulator(NATS_URL, [device], heartbeat_seconds=1):
        wait_for(lambda: device_online(traced_client, headers, device), timeout=20, message="device online")
        traced.clear()
        response = traced_client.post(f"/api/v1/devices/{device}/command?wait=15", json={"command": "echo"},
                                      headers={**headers, "traceparent": INCOMING})
        assert response.status_code == 200 and response.json["status"] == "completed", response.json

    def relay_spans():
        return [s for s in traced.get_finished_spans() if s.name == "process uaip.devices.{device_id}.acks"
                and hex_ids(s)[0] == INCOMING_TRACE]

    wait_for(lambda: any(c.name == "publish uaip.internal.messages.final"
                         for s in relay_spans() for c in children(traced.get_finished_spans(), s))
             and any(s.name == "process uaip.devices.{device_id}.commands" for s in traced.get_finished_spans()),
             message="the relay's completion span and the device's span")
    spans = [s for s in traced.get_finished_spans() if hex_ids(s)[0] == INCOMING_TRACE]
    server = only(spans, kind=SpanKind.SERVER)
    publish = only(spans, name="publish uaip.devices.{device_id}.commands")
    device_work = only(spans, name="process uaip.devices.{device_id}.commands")
    assert publish.parent.span_id == server.context.span_id
    assert device_work.kind == SpanKind.CONSUMER and device_work.parent.span_id == publish.context.span_id
    ack_publishes = [s for s in children(spans, device_work) if s.name == "publish uaip.devices.{device_id}.acks"]
    assert len(ack_publishes) == 2  # acknowledged, then completed
    applied = relay_spans()
    assert applied and all(s.kind == SpanKind.CONSUMER for s in applied)
    assert {s.parent.span_id for s in applied} <= {s.context.span_id for s in ack_publishes}
    assert all(s.attributes["messaging.consumer.group.name"].startswith("uaip-relay-trace-") for s in nonempty(applied))
    statements = [c.attributes["db.statement"] for s in applied for c in children(spans, s)
                  if c.kind == SpanKind.CLIENT]
    assert any(s.endswith("FOR UPDATE") for s in statements)
    assert any(s.startswith("UPDATE commands") for s in statements)
    # Statements are recorded with placeholders: what devices report (results, errors) stays out of traces.
    assert not any(response.json["message_id"] in s or "echo" in s for s in statements)


def test_an_ack_without_trace_headers_continues_the_stored_trace(traced_client, traced, headers, device, relay, db):
    traced.clear()
    response = traced_client.post(f"/api/v1/devices/{device}/command", json={"command": "echo"},
                                  headers={**headers, "traceparent": INCOMING})
    message_id = response.json["message_id"]
    server = only(traced.get_finished_spans(), kind=SpanKind.SERVER)
    device_side = Messaging([NATS_URL], name="uaip-test-device")
    try:
        assert device_side.wait_connected(10)
        # A device that knows nothing of tracing: no headers on its ack (published outside any span here).
        device_side.publish(ack_subject(device), {"message_id": message_id, "status": "completed", "result": {}})
    finally:
        device_side.close()
    applied = wait_for(lambda: [s for s in traced.get_finished_spans()
                                if s.name == "process uaip.devices.{device_id}.acks"
                                and hex_ids(s)[0] == INCOMING_TRACE],
                       message="the relay's span in the stored trace")
    assert applied[0].parent.span_id == server.context.span_id


def test_a_batch_of_acks_from_several_traces_links_them_all(traced_client, traced, headers, device, hub_env, database):
    ids = [traced_client.post(f"/api/v1/devices/{device}/command", json={"command": "echo"}, headers=headers)
           .json["message_id"] for _ in range(2)]
    device_contexts = [f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01" for _ in ids]
    db = Database(database, maxconn=2)
    try:
        relay = Relay(db, Messaging([NATS_URL]), load_settings(hub_env))
        traced.clear()
        relay._handle([(ack_subject(device), json.dumps({"message_id": mid, "status": "acknowledged"}).encode(),
                        {"traceparent": context}) for mid, context in zip(ids, device_contexts, strict=True)])
    finally:
        db.close()
    spans = traced.get_finished_spans()
    applied = [s for s in spans if s.name == "process uaip.devices.{device_id}.acks"]
    [batch] = [s for s in applied if s.parent is None]
    assert {f"00-{format_trace_id(link.context.trace_id)}-{format_span_id(link.context.span_id)}-01"
            for link in batch.links} == set(device_contexts)
    assert batch.attributes["messaging.batch.message_count"] == 2
    assert {s.name for s in children(spans, batch)} >= {"SELECT", "UPDATE"}
    per_trace = [s for s in applied if s.parent is not None]
    assert sorted(f"00-{format_trace_id(s.context.trace_id)}-{format_span_id(s.parent.span_id)}-01"
                  for s in per_trace) == sorted(device_contexts)
    assert all([link.context.span_id for link in s.links] == [batch.context.span_id] for s in nonempty(per_trace))


# --- off ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("otel", [
    {},
    {"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"},
    {"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"},
], ids=["unset", "exporter-none", "sdk-disabled"])
def test_off_means_nothing_at_all(hub_env, otel):
    """Another process, so nothing this suite set up can mask it: no tracing module is even imported, no provider
    is installed, the incoming traceparent goes nowhere (not on NATS, not in the database), no log line has ids."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("OTEL_")}
    env.update(hub_env, **otel, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    result = subprocess.run([sys.executable, "-m", "tests.support.tracing_off", unique_id("off")], env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["tracing_modules"] == [] and not report["flask_instrumented"]
    assert report["tracer_provider"] in (None, "ProxyTracerProvider")  # the API's placeholder: nothing installed
    assert set(report["nats_headers"]) == {"Nats-Msg-Id"}
    assert report["stored_traceparent"] is None
    assert report["log_lines"] > 0 and report["log_lines_with_trace_ids"] == 0
