"""Building a process's tracer provider from the OTEL_* variables (imported only when tracing is on).

The SDK does the reading: the resource from OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES, the sampler from
OTEL_TRACES_SAMPLER / OTEL_TRACES_SAMPLER_ARG, the batch processor from OTEL_BSP_*, and the OTLP/HTTP exporter
from OTEL_EXPORTER_OTLP_* (endpoint, headers, timeout, compression, certificates). On a bad value the SDK logs a
warning and uses its default; where it raises instead, this process runs without tracing and says why. What the
hub adds: a default service name, and a sampler rule that keeps database and Redis calls inside traces.
"""

from __future__ import annotations

import importlib.metadata
import logging

from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult
from opentelemetry.trace import SpanKind, get_current_span

log = logging.getLogger("app.telemetry.tracing")

UNKNOWN_SERVICE = "unknown_service"  # the SDK's service.name when the environment names none


class ClientSpansInsideTraces(Sampler):
    """The configured sampler, except that a CLIENT span with no parent is dropped.

    The psycopg2 and Redis instrumentations trace every statement and command in the process; outside a request
    or a command's journey those are health probes, metric scrapes and the relay's periodic sweeps, each of
    which would otherwise start a one-span trace every few seconds."""

    def __init__(self, delegate: Sampler) -> None:
        self.delegate = delegate

    def should_sample(self, parent_context, trace_id, name, kind=None, attributes=None, links=None,
                      trace_state=None) -> SamplingResult:
        if kind == SpanKind.CLIENT and not get_current_span(parent_context).get_span_context().is_valid:
            return SamplingResult(Decision.DROP)
        return self.delegate.should_sample(parent_context, trace_id, name, kind, attributes, links, trace_state)

    def get_description(self) -> str:
        return f"ClientSpansInsideTraces{{{self.delegate.get_description()}}}"


def service_resource(default_service: str) -> Resource:
    """The SDK's resource from the environment; `default_service` and the hub's version fill what it leaves
    unset (OTEL_SERVICE_NAME, then service.name in OTEL_RESOURCE_ATTRIBUTES, win over the default)."""
    detected = Resource.create()
    resource = Resource({SERVICE_VERSION: _hub_version()}).merge(detected)
    if str(detected.attributes.get(SERVICE_NAME, "")).startswith(UNKNOWN_SERVICE):
        resource = resource.merge(Resource({SERVICE_NAME: default_service}))
    return resource


def _hub_version() -> str:
    try:
        return importlib.metadata.version("uaip-hub")
    except importlib.metadata.PackageNotFoundError:  # a checkout run without installing
        return "unknown"


def otlp_exporter() -> SpanExporter:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()


def build_provider(default_service: str, processor: SpanProcessor | None = None) -> TracerProvider | None:
    """A provider exporting in batches over OTLP/HTTP (or through `processor`: tests use an in-memory exporter);
    None, with a warning, when the SDK refuses the settings."""
    try:
        provider = TracerProvider(resource=service_resource(default_service))
        # TracerProvider parsed OTEL_TRACES_SAMPLER(_ARG) itself; wrap what it chose before any tracer exists.
        provider.sampler = ClientSpansInsideTraces(provider.sampler)
        provider.add_span_processor(processor or BatchSpanProcessor(otlp_exporter()))
    except Exception as exc:  # noqa: BLE001 - a bad OTEL_* value must never stop start-up
        log.warning("tracing is off in this process: the OTEL_* settings were refused (%s)", exc)
        return None
    return provider
