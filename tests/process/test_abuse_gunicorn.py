"""Hostile requests through real gunicorn: what its HTTP parser lets through reaches the documented answers."""

import json
import socket
import uuid

import pytest
import requests

from app.auth.tokens import issue_token
from tests.support.processes import HubServer

pytestmark = pytest.mark.process


@pytest.fixture(scope="module")
def hub(hub_env):
    with HubServer({**hub_env, "UAIP_REDIS_KEY_PREFIX": f"uaip-test-{uuid.uuid4().hex[:10]}"}) as server:
        yield server


def test_ten_thousand_character_request_id_is_replaced(hub):
    r = requests.get(f"{hub.url}/api/v1/nothing-here", headers={"X-Request-ID": "x" * 10_000}, timeout=10)
    assert r.status_code == 404 and r.json()["code"] == "NOT_FOUND"
    assert len(r.headers["X-Request-ID"]) == 36 and r.json()["request_id"] == r.headers["X-Request-ID"]


def test_spoofed_forwarded_for_does_not_pick_the_bucket(hub):
    """With TRUSTED_PROXY_HOPS=0 the header is ignored: the access log records the socket peer."""
    r = requests.get(f"{hub.url}/api/v1/devices", headers={"X-Forwarded-For": "203.0.113.9", "X-Request-ID": "spoof-1"},
                     timeout=10)
    assert r.status_code == 401
    lines = [line for line in hub.json_lines() if line.get("request_id") == "spoof-1"]
    assert lines and lines[-1]["client_ip"] == "127.0.0.1"


def test_malformed_http_is_refused_by_the_parser_without_reaching_the_app(hub):
    """Control bytes in a header value violate RFC 9110; gunicorn answers 400 itself and the worker lives on."""
    with socket.create_connection(("127.0.0.1", hub.port), timeout=10) as sock:
        sock.sendall(b"GET /api/v1/system/health/liveness HTTP/1.1\r\nHost: x\r\nX-Request-ID: a\x01b\r\n\r\n")
        assert sock.recv(200).startswith(b"HTTP/1.1 400")
    assert requests.get(f"{hub.url}/api/v1/system/health/liveness", timeout=10).json() == {"status": "alive"}


def chunked(body: bytes, size: int = 16_384):
    """A generator body: requests sends it with Transfer-Encoding: chunked and no Content-Length."""
    for start in range(0, len(body), size):
        yield body[start:start + size]


def assert_too_large(response):
    assert response.status_code == 413, response.text[:300]
    body = response.json()
    assert body["code"] == "PAYLOAD_TOO_LARGE" and body["request_id"] == response.headers["X-Request-ID"]


def test_chunked_bodies_over_the_limit_are_413_like_sized_ones(hub, hub_env, api_client_factory):
    """A chunked body has no Content-Length; past MAX_MESSAGE_SIZE_BYTES it gets the same 413 envelope as a
    sized one (it used to be cut at the limit: truncated JSON answered 400, a truncated token form 401)."""
    limit = int(hub_env.get("MAX_MESSAGE_SIZE_BYTES", 65_536))
    token = issue_token("client-chunked", ["device:write"], hub_env["JWT_SECRET"], 3600)[0]
    json_headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    form_headers = {"Content-Type": "application/x-www-form-urlencoded"}
    client_id, secret = api_client_factory("device:read")
    form = f"grant_type=client_credentials&client_id={client_id}&client_secret={secret}".encode()

    def device_body(size: int) -> bytes:
        body = {"device_id": f"chunked-{uuid.uuid4().hex[:10]}", "name": "n", "device_type": "t"}
        return json.dumps(body).encode().ljust(size)

    two_megabytes = 2 * 1024 * 1024
    devices, token_url = f"{hub.url}/api/v1/devices", f"{hub.url}/api/v1/auth/token"
    for url, headers, body in ((devices, json_headers, device_body(two_megabytes)),
                               (token_url, form_headers, form + b"&pad=" + b"x" * two_megabytes)):
        assert_too_large(requests.post(url, data=chunked(body), headers=headers, timeout=30))
        assert_too_large(requests.post(url, data=body, headers=headers, timeout=30))  # with Content-Length

    # Up to the limit, chunked bodies are read whole: exactly `limit` bytes pass, one byte more does not.
    assert requests.post(token_url, data=chunked(form), headers=form_headers, timeout=30).status_code == 200
    assert requests.post(devices, data=chunked(device_body(limit)), headers=json_headers, timeout=30).status_code == 201
    assert_too_large(requests.post(devices, data=chunked(device_body(limit + 1)), headers=json_headers, timeout=30))
