"""Hostile requests through real gunicorn: what its HTTP parser lets through reaches the contract's answers."""

import socket
import uuid

import pytest
import requests

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
