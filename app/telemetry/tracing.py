"""OpenTelemetry tracing, configured only through the standard OTEL_* variables (docs/tracing.md).

Off unless an OTLP exporter is configured (`OTEL_TRACES_EXPORTER=otlp`, or `OTEL_EXPORTER_OTLP_ENDPOINT` /
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`); `OTEL_TRACES_EXPORTER=none` or `OTEL_SDK_DISABLED=true` always turn it
off. Off means off: OpenTelemetry is not even imported, no traceparent is read or written, and the hot paths
(log lines, NATS publishes) cost one boolean check.

On, the pieces are:
- `init_app` (create_app): the Flask instrumentation (one SERVER span per request, named "<METHOD> <url rule>",
  continuing an incoming W3C `traceparent`; health probes and /metrics excluded) and the psycopg2 and Redis
  instrumentations (CLIENT spans per statement and command).
- `start` (each gunicorn worker after fork, the relay, the simulator): the tracer provider, built from the
  environment by app/telemetry/tracing_setup.py; `shutdown` flushes it at exit, bounded in time.
- NATS, which has no maintained instrumentation: `publish_span` (a PRODUCER span around a publish that injects
  `traceparent` into the message headers), `processing` (a CONSUMER span continuing the trace a message carried),
  `current_traceparent` / `continue_trace` (a command stores its trace context, so a redelivery joins it).
- `log_ids`: the trace and span ids app/telemetry/logs.py adds to every line written while a span is active.

The hub starts traces only at HTTP requests; everything else (publishes, relay work, device-side work, database
and Redis calls) joins a trace that already exists or is not traced, so health probes, scrapes and the relay's
periodic sweeps make no traces of their own.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

log = logging.getLogger(__name__)

API_SERVICE = "uaip-hub"
RELAY_SERVICE = "uaip-relay"
SIMULATOR_SERVICE = "uaip-simulator"

TRACEPARENT = "traceparent"
# Regular expressions searched in the request URL (scheme://host/path?query): probes and the scrape are not traced.
NOT_TRACED_URLS = (
    r"://[^/?#]+/api/v1/system/health(/liveness|/readiness)?/?(\?|#|$)",
    r"://[^/?#]+/metrics/?(\?|#|$)",
)
SHUTDOWN_SECONDS = 3.0  # flushing at exit waits at most this long for the collector
REQUEST_ID_ATTRIBUTE = "uaip.request_id"

# True while this process has a tracer provider installed by `install` (read on hot paths: keep it a plain bool).
active = False
_provider: Any = None
_tracer: Any = None
_pid: int | None = None
_warned: set[str] = set()
_NOTHING = contextlib.nullcontext()


# --- configuration -----------------------------------------------------------------------------------------


def _value(env: Mapping[str, str], name: str) -> str | None:
    value = (env.get(name) or "").strip()
    return value or None


def _warn_once(message: str, *args: Any) -> None:
    text = message % args
    if text not in _warned:
        _warned.add(text)
        log.warning(text)


def configured(env: Mapping[str, str] | None = None) -> bool:
    """Whether tracing is on under the hub's rule (unlike the SDK's default, off unless an OTLP exporter is
    configured). Suspicious values log a warning once per process and never raise."""
    env = os.environ if env is None else env
    disabled = _value(env, "OTEL_SDK_DISABLED")
    if disabled is not None:
        if disabled.lower() == "true":
            return False
        if disabled.lower() != "false":  # the SDK itself treats anything but "true" as false
            _warn_once("OTEL_SDK_DISABLED must be true or false, got %r; treated as false", disabled)
    listed = (_value(env, "OTEL_TRACES_EXPORTER") or "").split(",")
    exporters = [item.strip().lower() for item in listed if item.strip()]
    if "none" in exporters:
        return False
    unsupported = [item for item in exporters if item != "otlp"]
    if unsupported:
        _warn_once("OTEL_TRACES_EXPORTER: only otlp (OTLP over HTTP/protobuf) is supported; ignoring %s",
                   ", ".join(unsupported))
    on = "otlp" in exporters or bool(_value(env, "OTEL_EXPORTER_OTLP_ENDPOINT")
                                     or _value(env, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
    if on:
        for name in ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"):
            endpoint = _value(env, name)
            if endpoint is not None and not endpoint.lower().startswith(("http://", "https://")):
                _warn_once("%s must be an http:// or https:// URL, got %r; spans cannot be exported", name, endpoint)
        for name in ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
            protocol = _value(env, name)
            if protocol is not None and protocol.lower() != "http/protobuf":
                _warn_once("%s=%s is not supported: the hub exports OTLP over HTTP/protobuf (a collector's port 4318)",
                           name, protocol)
    return on


# --- set-up (create_app, worker start, relay, simulator) -------------------------------------------------------


def init_app(app) -> None:
    """Instrument the Flask app and the PostgreSQL and Redis clients when tracing is configured.

    Called early in create_app, so the request span starts before the other before-request hooks (the rate
    limiter's Redis calls belong to the request's trace) and ends after the access line is written. The spans
    reach an exporter once `start` installed the provider (after fork, in the worker)."""
    if not configured() or not _loads():
        return
    from opentelemetry.instrumentation.flask import FlaskInstrumentor
    from opentelemetry.instrumentation.psycopg2 import Psycopg2Instrumentor
    from opentelemetry.instrumentation.redis import RedisInstrumentor

    FlaskInstrumentor.instrument_app(
        app, excluded_urls=",".join(NOT_TRACED_URLS), enable_commenter=False,
        request_hook=_name_unmatched, response_hook=_tag_request_id,
    )
    for instrumentor in (Psycopg2Instrumentor(), RedisInstrumentor()):  # process-wide; once is enough
        if not instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.instrument()


def _loads() -> bool:
    """Whether OpenTelemetry loads here: its propagation module reads OTEL_PROPAGATORS when imported and raises
    on a name it does not know (which would otherwise stop the app from starting)."""
    try:
        import opentelemetry.propagate  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - a bad OTEL_* value must never stop start-up
        _warn_once("tracing is off in this process: OpenTelemetry could not load (%s); check OTEL_PROPAGATORS", exc)
        return False
    return True


def _name_unmatched(span, environ) -> None:
    """A request that matched no route is named after its method alone: the raw path (anything a client sends)
    would make span names unbounded."""
    from flask import request

    if request.url_rule is None and span.is_recording():
        span.update_name(span.name.split(" ", 1)[0])


def _tag_request_id(span, _status, response_headers) -> None:
    """The request id (X-Request-ID) on the server span: error bodies and log lines name it."""
    if span is not None and span.is_recording():
        for name, value in response_headers:
            if name.lower() == "x-request-id":
                span.set_attribute(REQUEST_ID_ATTRIBUTE, value)
                break


def start(default_service: str) -> bool:
    """Install this process's tracer provider when tracing is configured (idempotent). `default_service` is
    the service name unless OTEL_SERVICE_NAME or service.name in OTEL_RESOURCE_ATTRIBUTES says otherwise."""
    if active and _pid == os.getpid():
        return True
    if not configured() or not _loads():
        return False
    from app.telemetry.tracing_setup import build_provider

    provider = build_provider(default_service)
    if provider is None:
        return False
    install(provider)
    log.info("tracing on", extra={"service": provider.resource.attributes.get("service.name"),
                                  "sampler": provider.sampler.get_description()})
    return True


def install(provider) -> None:
    """Make `provider` the one this process traces with (used by `start`; tests pass an in-memory one)."""
    global active, _provider, _tracer, _pid
    from opentelemetry import trace

    if trace.get_tracer_provider() is not provider:
        trace.set_tracer_provider(provider)  # the global one the instrumentations use (settable once per process)
    _provider, _pid = provider, os.getpid()
    _tracer = provider.get_tracer(__name__)
    active = True


def uninstall() -> None:
    """Stop tracing in this process without flushing (tests); `shutdown` is the flushing version."""
    global active, _provider, _tracer, _pid
    active, _provider, _tracer, _pid = False, None, None, None


def shutdown(timeout: float = SHUTDOWN_SECONDS) -> None:
    """Export what is queued and stop (worker exit, relay and simulator stop). An unreachable collector costs
    at most `timeout` seconds: the spans still queued then are dropped, the process exits on time."""
    provider, pid = _provider, _pid
    uninstall()
    if provider is None or pid != os.getpid():
        return
    flusher = threading.Thread(target=provider.shutdown, name="otel-shutdown", daemon=True)
    flusher.start()
    flusher.join(timeout)


# --- log correlation -------------------------------------------------------------------------------------------


def log_ids() -> tuple[str, str] | None:
    """(trace_id, span_id) as lower-case hex while a span is active, else None."""
    if not active:
        return None
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return trace.format_trace_id(context.trace_id), trace.format_span_id(context.span_id)


# --- propagation over NATS and through the commands table ------------------------------------------------------


def current_traceparent() -> str | None:
    """The W3C traceparent of the active span (stored with a command), or None."""
    if not active:
        return None
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier)
    return carrier.get(TRACEPARENT)


def continue_trace(traceparent: str | None):
    """Context manager: make a stored traceparent the current context (a command's redelivery joins the trace
    of the request that created it). Does nothing when off or when there is none."""
    if not active or not traceparent:
        return _NOTHING
    return _attached({TRACEPARENT: traceparent})


@contextlib.contextmanager
def _attached(carrier: Mapping[str, str]) -> Iterator[None]:
    from opentelemetry import context
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    token = context.attach(TraceContextTextMapPropagator().extract(carrier))
    try:
        yield
    finally:
        context.detach(token)


def subject_template(subject: str, device_id: str | None) -> str:
    """`uaip.devices.sensor-1.commands` (device `sensor-1`) → `uaip.devices.{device_id}.commands`: span names
    stay low-cardinality. The subject's layout is app/infra/subjects.py's business: callers say which device it
    names."""
    head, found, tail = subject.rpartition(f".{device_id}.") if device_id else ("", "", "")
    return f"{head}.{{device_id}}.{tail}" if found else subject


def _messaging_attributes(subject: str, device_id: str | None, operation: str, kind: str) -> dict[str, Any]:
    """OpenTelemetry messaging semantic-convention attributes for NATS."""
    attributes: dict[str, Any] = {
        "messaging.system": "nats",
        "messaging.operation.name": operation,
        "messaging.operation.type": kind,
        "messaging.destination.name": subject,
    }
    template = subject_template(subject, device_id)
    if template != subject:
        attributes["messaging.destination.template"] = template
    if device_id and device_id != "*":
        attributes["uaip.device_id"] = device_id
    return attributes


def publish_span(subject: str, headers: dict[str, str] | None, payload_size: int,
                 device_id_of: Callable[[str], str | None]):
    """Context manager around one NATS publish, giving the headers to send (`device_id_of` reads the device id
    out of a subject, for the span's name and attributes).

    Inside a trace: a PRODUCER span "publish <subject template>" with messaging attributes, and the headers gain
    `traceparent` (W3C trace context through the global propagator). Outside a trace, or when off: the headers
    unchanged, no span."""
    if not active:
        return contextlib.nullcontext(headers)
    return _publish_span(subject, headers, payload_size, device_id_of)


@contextlib.contextmanager
def _publish_span(subject, headers, payload_size, device_id_of) -> Iterator[dict[str, str] | None]:
    from opentelemetry import propagate, trace

    if not trace.get_current_span().get_span_context().is_valid:
        yield headers
        return
    device_id = device_id_of(subject)
    attributes = _messaging_attributes(subject, device_id, "publish", "send")
    attributes["messaging.message.body.size"] = payload_size
    if headers and headers.get("Nats-Msg-Id"):
        attributes["messaging.message.id"] = headers["Nats-Msg-Id"]
    with _tracer.start_as_current_span(
        f"publish {subject_template(subject, device_id)}", kind=trace.SpanKind.PRODUCER, attributes=attributes
    ):
        carried = dict(headers or {})
        propagate.inject(carried)
        yield carried


def processing(subject: str, device_id: str | None, carriers: Iterable[Mapping[str, str] | None],
               attributes: Mapping[str, Any] | None = None):
    """Context manager: a CONSUMER span "process <subject template>" around handling messages received on
    `subject` (for a batch, the subscription's wildcard, with `*` as its device id), continuing the traces their
    headers (`carriers`) carry.

    One trace among the messages (the usual case: one message, or one command's acks): the span is a child in
    that trace, so the work inside (database statements, publishes) is part of it. Several traces (a batch): the
    work runs in one span that links to each of them, and each trace gets a span of the same name and duration
    linking back to it. No trace at all, or off: nothing."""
    if not active:
        return _NOTHING
    return _processing(subject, device_id, [carrier for carrier in carriers if carrier], dict(attributes or {}))


@contextlib.contextmanager
def _processing(subject, device_id, carriers, extra) -> Iterator[None]:
    from opentelemetry import propagate, trace
    from opentelemetry.context import Context
    from opentelemetry.trace import Link

    parents: dict[int, tuple[Any, Any]] = {}  # trace id → (context, span context) of its latest message
    for carrier in carriers:
        context = propagate.extract(carrier)
        span_context = trace.get_current_span(context).get_span_context()
        if span_context.is_valid:
            parents[span_context.trace_id] = (context, span_context)
    if not parents:
        yield
        return
    name = f"process {subject_template(subject, device_id)}"
    attributes = {**_messaging_attributes(subject, device_id, "process", "process"), **extra}
    kind = trace.SpanKind.CONSUMER
    if len(parents) == 1:
        (parent, _), = parents.values()
        with _tracer.start_as_current_span(name, context=parent, kind=kind, attributes=attributes):
            yield
        return
    started = time.time_ns()
    with _tracer.start_as_current_span(name, context=Context(), kind=kind, attributes=attributes,
                                       links=[Link(span_context) for _, span_context in parents.values()]) as batch:
        yield
    ended = time.time_ns()
    back = [Link(batch.get_span_context())]
    for parent, _ in parents.values():
        _tracer.start_span(name, context=parent, kind=kind, attributes=attributes, links=back,
                           start_time=started).end(end_time=ended)
