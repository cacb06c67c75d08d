"""The relay's own /metrics endpoint (prometheus_client's HTTP server on a daemon thread), and what happens when
its port is taken."""

from __future__ import annotations

import logging

from app.telemetry import metrics

log = logging.getLogger(__name__)


class MetricsPortTaken(Exception):
    """UAIP_RELAY_METRICS_PORT was set explicitly and that port is in use: the operator asked for a port this relay
    cannot serve, so the relay stops (exit status 2) instead of running unscraped."""


def serve_metrics(port: int, explicit: bool = False) -> None:
    """The relay's own /metrics: what this process applies and sees (uaip_commands_total, uaip_acks_total{source=
    "relay"}, uaip_command_completion_seconds, uaip_command_redeliveries_total, uaip_nats_connected,
    uaip_relay_last_sweep_timestamp_seconds, uaip_nats_messages_dropped_total, uaip_nats_auth_callouts_total,
    process metrics; docs/observability.md), served by
    prometheus_client's HTTP server on a daemon thread. Port 0 turns it off.

    A port already in use: several relays of one hub may run on one host (one queue group), and two hubs on one
    host both default to 9464, so with the default port the relay keeps running without its own /metrics and says
    so at error level, naming the variable to set. A port set explicitly (`explicit`) is what the operator asked
    to scrape: MetricsPortTaken, and the relay does not start."""
    if not port:
        return
    from prometheus_client import disable_created_metrics, start_http_server

    disable_created_metrics()  # no *_created series: the API's multiprocess /metrics has none either
    for kind in metrics.NATS_SUBJECT_KINDS:  # every series from the start, so a rate() sees the first drop
        for reason in metrics.NATS_DROP_REASONS:
            metrics.nats_messages_dropped_total.labels(subject_kind=kind, reason=reason)

    try:
        start_http_server(port)
    except OSError as exc:
        if explicit:
            raise MetricsPortTaken(
                f"UAIP_RELAY_METRICS_PORT={port} is unavailable ({exc.strerror or exc}); "
                "give each relay on this host its own port, or 0 to turn its /metrics off") from None
        log.error("relay metrics not served: the default port %d is unavailable (%s); set UAIP_RELAY_METRICS_PORT "
                  "to a free port for each relay on this host (0 turns it off)", port, exc.strerror or exc)
        return
    log.info("relay metrics on :%d/metrics", port)
