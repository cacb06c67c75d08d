"""Tracing configuration from OTEL_* (docs/tracing.md): when it is on, what bad values do, the service name,
the sampler, and the span-name template for NATS subjects."""

import logging

import pytest
from opentelemetry.context import Context
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, Decision
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags, set_span_in_context

from app.infra.subjects import device_id_from_subject
from app.telemetry import tracing
from app.telemetry.tracing_setup import ClientSpansInsideTraces, build_provider, service_resource

OTEL_VARIABLES = (
    "OTEL_SDK_DISABLED", "OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_SERVICE_NAME",
    "OTEL_RESOURCE_ATTRIBUTES", "OTEL_TRACES_SAMPLER", "OTEL_TRACES_SAMPLER_ARG", "OTEL_BSP_MAX_QUEUE_SIZE",
    "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    for name in OTEL_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(tracing, "_warned", set())  # every test sees its own warnings


@pytest.mark.parametrize(
    "env, on",
    [
        ({}, False),  # unlike the SDK's default: nothing configured, nothing traced
        ({"OTEL_TRACES_EXPORTER": "otlp"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
        ({"OTEL_TRACES_EXPORTER": " OTLP "}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "   "}, False),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, False),
        ({"OTEL_TRACES_EXPORTER": "otlp,none"}, False),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}, False),
        ({"OTEL_SDK_DISABLED": "TRUE", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, False),
        ({"OTEL_SDK_DISABLED": "false", "OTEL_TRACES_EXPORTER": "otlp"}, True),
        ({"OTEL_SERVICE_NAME": "x", "OTEL_TRACES_SAMPLER": "always_on"}, False),  # no exporter configured
    ],
)
def test_tracing_is_on_only_with_an_otlp_exporter(env, on):
    assert tracing.configured(env) is on


@pytest.mark.parametrize(
    "env, on, fragment",
    [
        ({"OTEL_SDK_DISABLED": "yes", "OTEL_TRACES_EXPORTER": "otlp"}, True, "OTEL_SDK_DISABLED must be true or false"),
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, False, "OTEL_TRACES_EXPORTER: only otlp"),
        ({"OTEL_TRACES_EXPORTER": "console,otlp"}, True, "ignoring console"),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, True,
         "OTEL_EXPORTER_OTLP_PROTOCOL=grpc"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4318"}, True, "OTEL_EXPORTER_OTLP_ENDPOINT must be an http"),
    ],
)
def test_a_bad_value_is_a_warning_naming_the_variable(caplog, env, on, fragment):
    with caplog.at_level(logging.WARNING, logger="app.telemetry.tracing"):
        assert tracing.configured(env) is on
        tracing.configured(env)  # asked again (every create_app asks): still one warning
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and fragment in warnings[0], warnings


def test_good_values_warn_about_nothing(caplog):
    env = {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_ENDPOINT": "https://collector:4318",
           "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf", "OTEL_SDK_DISABLED": "false"}
    with caplog.at_level(logging.WARNING):
        assert tracing.configured(env)
    assert not caplog.records


# --- service name ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "env, expected",
    [
        ({}, "uaip-relay"),
        ({"OTEL_SERVICE_NAME": "hub-eu"}, "hub-eu"),
        ({"OTEL_RESOURCE_ATTRIBUTES": "service.name=hub-us,deployment.environment=prod"}, "hub-us"),
        ({"OTEL_RESOURCE_ATTRIBUTES": "service.name=hub-us", "OTEL_SERVICE_NAME": "hub-eu"}, "hub-eu"),
    ],
)
def test_service_name_defaults_per_process_unless_the_environment_names_one(monkeypatch, env, expected):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    attributes = service_resource(tracing.RELAY_SERVICE).attributes
    assert attributes["service.name"] == expected
    assert attributes["service.version"]  # the hub's version, unless the environment says otherwise


def test_resource_attributes_from_the_environment_are_kept(monkeypatch):
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=staging,service.version=9.9")
    attributes = service_resource(tracing.API_SERVICE).attributes
    assert attributes["deployment.environment"] == "staging" and attributes["service.version"] == "9.9"
    assert attributes["service.name"] == "uaip-hub"


# --- sampler --------------------------------------------------------------------------------------------------


def _parent(sampled: bool = True) -> Context:
    span_context = SpanContext(0xABC, 0xDEF, is_remote=True,
                               trace_flags=TraceFlags(TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT))
    return set_span_in_context(NonRecordingSpan(span_context))


def test_database_and_redis_calls_are_traced_only_inside_a_trace():
    sampler = ClientSpansInsideTraces(ALWAYS_ON)
    assert sampler.should_sample(None, 1, "SELECT", SpanKind.CLIENT).decision == Decision.DROP
    assert sampler.should_sample(Context(), 1, "EVALSHA", SpanKind.CLIENT).decision == Decision.DROP
    assert sampler.should_sample(_parent(), 1, "SELECT", SpanKind.CLIENT).decision == Decision.RECORD_AND_SAMPLE
    assert sampler.should_sample(None, 1, "GET /api/v1/devices", SpanKind.SERVER).decision == Decision.RECORD_AND_SAMPLE


def test_the_configured_sampler_still_decides_everything_else():
    sampler = ClientSpansInsideTraces(ALWAYS_OFF)
    assert sampler.should_sample(_parent(), 1, "SELECT", SpanKind.CLIENT).decision == Decision.DROP
    assert sampler.should_sample(None, 1, "GET /x", SpanKind.SERVER).decision == Decision.DROP
    assert "AlwaysOffSampler" in sampler.get_description()


@pytest.mark.parametrize(
    "sampler, argument, description",
    [
        (None, None, "ParentBased{root:AlwaysOnSampler"),  # the SDK's default
        ("always_off", None, "AlwaysOffSampler"),
        ("parentbased_traceidratio", "0.25", "TraceIdRatioBased{0.25}"),
        ("traceidratio", "0.5", "TraceIdRatioBased{0.5}"),
    ],
)
def test_provider_honours_otel_traces_sampler(monkeypatch, sampler, argument, description):
    if sampler:
        monkeypatch.setenv("OTEL_TRACES_SAMPLER", sampler)
    if argument:
        monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", argument)
    provider = build_provider(tracing.API_SERVICE)
    try:
        assert isinstance(provider.sampler, ClientSpansInsideTraces)
        assert description in provider.sampler.get_description()
    finally:
        provider.shutdown()


@pytest.mark.parametrize(
    "env, fragment",
    [
        ({"OTEL_TRACES_SAMPLER": "sometimes"}, "Couldn't recognize sampler sometimes"),
        ({"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "half"}, "TRACES_SAMPLER_ARG"),
    ],
)
def test_a_bad_sampler_is_a_warning_and_the_default_applies(monkeypatch, caplog, env, fragment):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with caplog.at_level(logging.WARNING):
        provider = build_provider(tracing.API_SERVICE)
    try:
        assert provider is not None
        assert any(r.levelno == logging.WARNING and fragment in r.getMessage() for r in caplog.records), caplog.text
    finally:
        provider.shutdown()


def test_settings_the_sdk_refuses_leave_the_process_untraced_with_a_warning(monkeypatch, caplog):
    monkeypatch.setenv("OTEL_BSP_MAX_QUEUE_SIZE", "10")
    monkeypatch.setenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "100")
    with caplog.at_level(logging.WARNING, logger="app.telemetry.tracing"):
        assert build_provider(tracing.API_SERVICE) is None
    assert "tracing is off in this process" in caplog.text and "max_export_batch_size" in caplog.text


# --- span names for NATS subjects -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "subject, template",
    [
        ("uaip.devices.sensor-1.commands", "uaip.devices.{device_id}.commands"),
        ("uaip.devices.sensor.1.acks", "uaip.devices.{device_id}.acks"),  # device ids may contain dots
        ("uaip.devices.commands.commands", "uaip.devices.{device_id}.commands"),  # ids that look like the layout
        ("uaip.devices.devices.acks", "uaip.devices.{device_id}.acks"),
        ("uaip.devices.*.acks", "uaip.devices.{device_id}.acks"),
        ("uaip.events.devices", "uaip.events.devices"),
        ("uaip.internal.messages.final", "uaip.internal.messages.final"),
    ],
)
def test_span_names_use_the_subject_template(subject, template):
    device_id = "*" if "*" in subject else device_id_from_subject(subject)
    assert tracing.subject_template(subject, device_id) == template


def test_off_costs_nothing_and_hands_headers_through():
    assert not tracing.active
    assert tracing.log_ids() is None and tracing.current_traceparent() is None
    headers = {"Nats-Msg-Id": "m-1"}
    with tracing.publish_span("uaip.devices.d.commands", headers, 10, device_id_from_subject) as sent:
        assert sent is headers
    with tracing.continue_trace("00-" + "a" * 32 + "-" + "b" * 16 + "-01"), \
            tracing.processing("uaip.devices.d.commands", "d", [{"traceparent": "x"}]):
        pass
