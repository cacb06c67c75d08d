"""Run the hub in this process with the environment as given and report what tracing left behind, as JSON.

`python -m tests.support.tracing_off DEVICE_ID`: builds the app from the environment, sends a token request, a
device registration and a command (each carrying a W3C `traceparent`), catches the command on NATS with its
headers, and prints which tracing modules got imported, the tracer provider, the command's NATS headers, the
traceparent stored with it and whether any log line carried trace ids. A separate process, so that nothing another
test set up (a tracer provider, instrumented libraries) can hide what this configuration does.
"""

from __future__ import annotations

import io
import json
import sys
import threading

INCOMING = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
TRACING_MODULES = ("opentelemetry.sdk.trace", "opentelemetry.instrumentation", "opentelemetry.exporter",
                   "opentelemetry.propagate", "app.telemetry.tracing_setup")


def main(device_id: str) -> None:
    from app import create_app
    from app.infra.db import get_db
    from app.infra.messaging import Messaging
    from app.infra.subjects import command_subject
    from app.services.clients import create_client
    from app.telemetry.logs import configure_logging
    from app.web.worker_hooks import close_extensions

    app = create_app()
    buffer = io.StringIO()
    configure_logging("info", "json", stream=buffer)
    received: list[dict] = []
    arrived = threading.Event()

    def on_command(_subject, _data, headers):
        received.append(dict(headers or {}))
        arrived.set()

    listener = Messaging([app.config["SETTINGS"].nats_url], name="uaip-test-listener")
    assert listener.wait_connected(10)
    listener.subscribe(command_subject(device_id), on_command, with_headers=True)
    listener.flush()
    client = app.test_client()
    trace_header = {"traceparent": INCOMING}
    with app.app_context():
        created, secret = create_client(get_db(), "tracing-off", "admin")
    token = client.post("/api/v1/auth/token", headers=trace_header, data={
        "grant_type": "client_credentials", "client_id": created.client_id, "client_secret": secret,
    }).json["access_token"]
    auth = {"Authorization": f"Bearer {token}", **trace_header}
    assert client.post("/api/v1/devices", json={"device_id": device_id, "name": "off", "device_type": "t"},
                       headers=auth).status_code == 201
    accepted = client.post(f"/api/v1/devices/{device_id}/command", json={"command": "echo"}, headers=auth)
    assert accepted.status_code == 202, accepted.json
    assert arrived.wait(10), "the command never reached NATS"
    with app.app_context():
        stored = get_db().transaction(lambda cur: (cur.execute(
            "SELECT traceparent FROM commands WHERE message_id = %s", (accepted.json["message_id"],)),
            cur.fetchone())[1]["traceparent"])
    listener.close()
    close_extensions()
    lines = [json.loads(line) for line in buffer.getvalue().splitlines() if line.startswith("{")]
    trace_module = sys.modules.get("opentelemetry.trace")
    provider = trace_module.get_tracer_provider() if trace_module is not None else None
    print(json.dumps({
        # redis-py imports OpenTelemetry's metrics API by itself when it is installed; tracing must load nothing.
        "tracing_modules": sorted(name for name in sys.modules if name.startswith(TRACING_MODULES)),
        "tracer_provider": type(provider).__name__ if provider is not None else None,
        "flask_instrumented": getattr(app, "_is_instrumented_by_opentelemetry", False),
        "nats_headers": received[0],
        "stored_traceparent": stored,
        "log_lines": len(lines),
        "log_lines_with_trace_ids": sum(1 for line in lines if "trace_id" in line or "span_id" in line),
    }))


if __name__ == "__main__":
    main(sys.argv[1])
