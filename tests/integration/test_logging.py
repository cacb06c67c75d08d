"""Access log and application logs: one JSON object per line, request ids, levels, and never a secret."""

import base64
import io
import json
import logging
import logging.config

import pytest
from flask import request

from app import create_app
from app.telemetry.logs import configure_logging, gunicorn_logconfig, redact
from tests.conftest import basic

ACCESS_FIELDS = {
    "timestamp", "level", "message", "request_id", "method", "path", "route", "status", "duration_ms",
    "client_ip", "client_id", "user_agent", "response_bytes",
}


@pytest.fixture()
def test_routes(app):
    """Routes only these tests need; requested first, so they exist before the first request."""

    @app.get("/api/v1/boom-for-log-test")
    def boom():
        raise RuntimeError("boom")

    @app.get("/api/v1/log-for-test")
    def log_something():
        logging.getLogger("app.test").info("did a thing", extra={"device_id": "d-1", "count": 3})
        return {"ok": True}

    @app.post("/api/v1/leaky-for-test")
    def leaky():
        body = request.get_json()
        logging.getLogger("app.test").warning(
            "about to fail",
            extra={"password": body["password"], "payload": body, "header": request.headers["Authorization"]},
        )
        raise RuntimeError(f"failed with {request.headers['Authorization']} and secret {body['client_secret']} "
                           f"/ {body['note']}")

    return app


def access_lines(lines):
    return [line for line in lines() if line["logger"] == "uaip.access"]


def test_access_line_has_every_documented_field(client, auth, log_lines):
    r = client.get("/api/v1/devices?limit=1", headers={**auth, "X-Request-ID": "req-42", "User-Agent": "agent/1.0"})
    assert r.status_code == 200
    (line,) = access_lines(log_lines)
    assert ACCESS_FIELDS <= set(line)
    assert line["request_id"] == "req-42" and line["level"] == "info"
    assert (line["method"], line["path"], line["route"], line["status"]) == ("GET", "/api/v1/devices",
                                                                             "/api/v1/devices", 200)
    assert line["client_ip"] == "127.0.0.1" and line["user_agent"] == "agent/1.0"
    assert line["client_id"]  # the token's client
    assert line["response_bytes"] == len(r.data) and line["duration_ms"] >= 0
    assert line["timestamp"].endswith("Z")


def test_route_is_the_url_rule_and_levels_follow_status(test_routes, client, auth, log_lines):
    client.get("/api/v1/devices/some-unknown-device", headers=auth)
    client.get("/api/v1/no-such-route")
    client.get("/api/v1/boom-for-log-test")
    unknown, no_route, error = access_lines(log_lines)
    assert unknown["route"] == "/api/v1/devices/<device_id>"
    assert unknown["path"] == "/api/v1/devices/some-unknown-device"
    assert (unknown["status"], unknown["level"]) == (404, "warning")
    assert no_route["route"] is None and no_route["level"] == "warning"
    assert (error["status"], error["level"]) == (500, "error")


def test_application_logs_carry_the_request_id_and_extra_fields(test_routes, client, log_lines):
    client.get("/api/v1/log-for-test", headers={"X-Request-ID": "corr-7"})
    (line,) = [line for line in log_lines() if line["logger"] == "app.test"]
    assert line["request_id"] == "corr-7" and line["message"] == "did a thing"
    assert line["device_id"] == "d-1" and line["count"] == 3 and line["level"] == "info"


def test_text_format_and_idempotent_configuration():
    buffer = io.StringIO()
    for _ in range(3):
        configure_logging("info", "text", stream=buffer)
    try:
        logging.getLogger("app.test").warning("hello", extra={"k": "v"})
        (line,) = buffer.getvalue().splitlines()  # one handler, however often it was configured
        assert " WARNING " in line and "hello" in line and "k=v" in line
    finally:
        configure_logging("info", "json")


def test_gunicorn_logconfig_uses_the_same_handler():
    config = gunicorn_logconfig("warning", "json")
    logging.config.dictConfig(config)
    try:
        from app.telemetry.logs import HubHandler

        assert any(isinstance(h, HubHandler) for h in logging.getLogger().handlers)
        assert logging.getLogger("gunicorn.error").propagate
    finally:
        configure_logging("info", "json")


def test_redact_patterns():
    assert "abc.def" not in redact("Authorization: Bearer abc.def-ghi")
    assert "s3cr3t-value" not in redact("client_secret=s3cr3t-value&grant_type=x")
    assert "hunter22" not in redact('{"password": "hunter22"}')
    assert "pw123456" not in redact("postgresql://user:pw123456@db:5432/x")
    assert redact("nothing to hide here") == "nothing to hide here"


def test_no_secret_reaches_a_log_line(test_routes, client, api_client_factory, log_lines, make_device):
    """Token requests (form, JSON, Basic), bearer calls, device Basic auth, and a 500 whose exception text and
    extra fields contain the request's credentials: none of the secret values appears anywhere in the output."""
    client_id, secret = api_client_factory("device:read device:write")
    secrets = {secret}

    form = {"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret}
    token = client.post("/api/v1/auth/token", data=form).json["access_token"]
    client.post("/api/v1/auth/token", json=form)
    client.post("/api/v1/auth/token", data={"grant_type": "client_credentials"}, headers=basic(client_id, secret))
    client.post("/api/v1/auth/token", data={**form, "client_secret": "wrong-" + secret})
    secrets |= {token, "wrong-" + secret, base64.b64encode(f"{client_id}:{secret}".encode()).decode()}

    bearer = {"Authorization": f"Bearer {token}"}
    client.get("/api/v1/devices", headers=bearer)
    device = make_device()
    secrets.add(device["device_secret"])
    client.post(f"/api/v1/devices/{device['device_id']}/heartbeat",
                headers=basic(device["device_id"], device["device_secret"]))

    leaked = "zz-" + secret[::-1]
    secrets |= {leaked, "pa55-word-value"}
    r = client.post(
        "/api/v1/leaky-for-test",
        json={"client_secret": leaked, "password": "pa55-word-value", "note": leaked},
        headers=bearer,
    )
    assert r.status_code == 500

    output = log_lines.text()
    lines = log_lines()
    assert any(line.get("exception") for line in lines), "the traceback is logged"
    assert any(line["status"] == 500 for line in lines if line["logger"] == "uaip.access")
    for value in secrets:
        assert value not in output, f"a secret reached the log: {value[:6]}…"
    assert "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode() not in output


def test_configured_secrets_are_masked(hub_env):
    app = create_app(hub_env)
    buffer = io.StringIO()
    configure_logging("info", "json", stream=buffer)
    try:
        with app.test_request_context("/"):
            logging.getLogger("app.test").error("jwt secret is %s", app.config["SETTINGS"].jwt_secret)
        assert app.config["SETTINGS"].jwt_secret not in buffer.getvalue()
        assert json.loads(buffer.getvalue())["message"].startswith("jwt secret is [REDACTED]")
    finally:
        configure_logging("info", "json")


# --- one record, one line: logged text cannot forge lines ------------------------------------------------

FORGED = "2026-01-01T00:00:00.000Z INFO    uaip.access [forged] GET /api/v1/devices 200"
FORGED_PATH = "/api/v1/nothing%0D%0A" + FORGED.replace(" ", "%20") + "%E2%80%A8%1B%5B2J%E2%80%AE"


def text_capture():
    buffer = io.StringIO()
    configure_logging("info", "text", stream=buffer)
    return buffer


def test_text_format_escapes_control_characters_in_every_field():
    buffer = text_capture()
    try:
        try:
            raise ValueError("bad input\n" + FORGED)
        except ValueError:
            logging.getLogger("app.test").exception(
                "message\r\n" + FORGED, extra={"request_id": "rid\nx", "path": "/a\x1b[2J\u202eb", "n": 1})
        output = buffer.getvalue()
    finally:
        configure_logging("info", "json")
    first, *rest = output.splitlines()
    assert first.startswith("20") and "message\\r\\n" + FORGED in first and "[rid\\nx]" in first
    assert "path=/a\\x1b[2J\\u202eb" in first and "n=1" in first
    assert rest and all(line.startswith("    ") for line in rest), rest  # the traceback, every line indented
    assert any(line.strip() == FORGED for line in rest)  # the exception's own newline became an indented line
    assert not any(ch in output.replace("\n", "") for ch in "\r\x1b\u202e\u2028")


def test_a_path_with_encoded_newlines_cannot_forge_an_access_line(hub_env):
    for log_format in ("text", "json"):
        app = create_app({**hub_env, "LOG_FORMAT": log_format})
        buffer = io.StringIO()
        configure_logging("info", log_format, stream=buffer)
        try:
            assert app.test_client().get(FORGED_PATH, headers={"X-Request-ID": "forge-1"}).status_code == 404
            output = buffer.getvalue()
        finally:
            configure_logging("info", "json")
        lines = output.splitlines()  # Python's splitlines also breaks at \x85, \u2028, \u2029, \x1c-\x1e
        assert len(lines) == 1, (log_format, lines)
        assert not lines[0].startswith(FORGED[:24]) and "forge-1" in lines[0]
        if log_format == "json":
            line = json.loads(lines[0])
            assert line["path"].startswith("/api/v1/nothing\r\n" + FORGED) and "\u2028" in line["path"]
        else:
            assert "\\r\\n" + FORGED in lines[0] and "\\u2028\\x1b[2J\\u202e" in lines[0]


def test_json_lines_escape_unicode_line_separators():
    buffer = io.StringIO()
    configure_logging("info", "json", stream=buffer)
    try:
        logging.getLogger("app.test").warning("a\u2028b\u2029c\x85d", extra={"field": "x\u2028y"})
    finally:
        configure_logging("info", "json")
    output = buffer.getvalue()
    assert len(output.splitlines()) == 1 and "\\u2028" in output and "\\u0085" in output
    line = json.loads(output)
    assert line["message"] == "a\u2028b\u2029c\x85d" and line["field"] == "x\u2028y"


def test_gunicorn_access_logger_writes_nowhere():
    from app.telemetry.logs import GunicornLogger

    config = gunicorn_logconfig("info", "text")
    logging.config.dictConfig(config)
    try:
        access = logging.getLogger("gunicorn.access")
        assert not access.propagate and not access.isEnabledFor(logging.INFO)
        assert GunicornLogger.access_log_enabled is False
    finally:
        configure_logging("info", "json")
