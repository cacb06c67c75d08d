"""Rate limits: per-client buckets on Redis, headers, the 429 envelope, exemptions, client IP and Redis outages."""

import time
import uuid

import pytest
import redis
from prometheus_client import REGISTRY

from app import create_app
from app.security import issue_token
from tests.conftest import basic, capture_logs
from tests.support.servers import RedisServer
from tests.support.services import wait_for

BURST = 3


@pytest.fixture()
def key_prefix() -> str:
    """A Redis key prefix of this test alone, so no other test or run shares its buckets (ip:127.0.0.1 ...)."""
    return f"uaip-test-{uuid.uuid4().hex[:10]}"


@pytest.fixture()
def make_app(hub_env, key_prefix):
    def make(**overrides):
        return create_app({**hub_env, "UAIP_REDIS_KEY_PREFIX": key_prefix, "RATE_LIMIT_PER_MINUTE": "10",
                           "RATE_LIMIT_BURST": str(BURST), **overrides})

    return make


def bearer(app, client_id: str) -> dict[str, str]:
    token, _ = issue_token(client_id, ["device:read"], app.config["SETTINGS"].jwt_secret, 3600)
    return {"Authorization": f"Bearer {token}"}


def statuses(client, n, path="/api/v1/nothing-here", **kwargs) -> list[int]:
    return [client.get(path, **kwargs).status_code for _ in range(n)]


def test_burst_then_429_with_headers_envelope_and_metric(make_app):
    app = make_app()
    client = app.test_client()
    headers = bearer(app, "client-a")
    before = REGISTRY.get_sample_value("uaip_rate_limited_total") or 0

    for expected_remaining in range(BURST - 1, -1, -1):
        r = client.get("/api/v1/nothing-here", headers=headers)
        assert r.status_code == 404  # admitted (the route does not exist)
        assert r.headers["X-RateLimit-Limit"] == str(BURST)
        assert r.headers["X-RateLimit-Remaining"] == str(expected_remaining)
        assert int(r.headers["X-RateLimit-Reset"]) > 0
        assert "Retry-After" not in r.headers

    r = client.get("/api/v1/devices", headers={**headers, "X-Request-ID": "limited-1"})
    assert r.status_code == 429
    assert r.json == {"error": r.json["error"], "code": "RATE_LIMITED", "details": {"limit": f"{BURST} per 12 second"},
                      "request_id": "limited-1"}
    assert 0 < int(r.headers["Retry-After"]) <= 12
    assert r.headers["X-RateLimit-Remaining"] == "0" and r.headers["X-RateLimit-Limit"] == str(BURST)
    assert (REGISTRY.get_sample_value("uaip_rate_limited_total") or 0) == before + 1


def test_minute_limit_applies_beyond_the_burst(make_app):
    app = make_app(RATE_LIMIT_PER_MINUTE="4", RATE_LIMIT_BURST="10")
    results = statuses(app.test_client(), 6, headers=bearer(app, "client-m"))
    assert results == [404] * 4 + [429] * 2


def test_each_client_has_its_own_bucket(make_app):
    app = make_app()
    client = app.test_client()
    assert statuses(client, BURST + 1, headers=bearer(app, "client-1"))[-1] == 429
    assert statuses(client, BURST, headers=bearer(app, "client-2")) == [404] * BURST
    # Anonymous requests from the same address are a third bucket.
    assert statuses(client, BURST) == [404] * BURST
    assert client.get("/api/v1/nothing-here").status_code == 429


def test_a_forged_token_falls_back_to_the_ip_bucket(make_app):
    app = make_app()
    client = app.test_client()
    forged = {"Authorization": "Bearer " + issue_token("client-x", [], "not-the-secret-" * 3, 60)[0]}
    assert statuses(client, BURST, headers=forged) == [404] * BURST
    assert client.get("/api/v1/nothing-here").status_code == 429  # same bucket as any anonymous caller


def test_a_spoofed_x_forwarded_for_does_not_change_the_bucket(make_app):
    app = make_app()  # TRUSTED_PROXY_HOPS=0
    client = app.test_client()
    results = [
        client.get("/api/v1/nothing-here", headers={"X-Forwarded-For": f"10.0.0.{i}"}).status_code for i in range(BURST + 2)
    ]
    assert results == [404] * BURST + [429, 429]


def test_one_trusted_hop_uses_the_rightmost_entry(make_app):
    app = make_app(TRUSTED_PROXY_HOPS="1")
    log_lines = capture_logs()
    client = app.test_client()

    def get(xff):
        return client.get("/api/v1/nothing-here", headers={"X-Forwarded-For": xff}).status_code

    # The client may prepend anything; the proxy's entry (rightmost) decides.
    assert [get(f"6.6.6.{i}, 203.0.113.7") for i in range(BURST + 1)] == [404] * BURST + [429]
    assert get("6.6.6.6, 203.0.113.8") == 404
    ips = [line["client_ip"] for line in log_lines() if line["logger"] == "uaip.access"]
    assert ips == ["203.0.113.7"] * (BURST + 1) + ["203.0.113.8"]


def test_exempt_paths_are_never_limited(make_app):
    app = make_app(RATE_LIMIT_BURST="1")
    client = app.test_client()
    for _ in range(4):
        for path in ("/api/v1/openapi.json", "/metrics", "/api/v1/system/health", "/api/v1/system/health/liveness",
                     "/api/v1/system/health/readiness", "/.well-known/oauth-protected-resource",
                     "/.well-known/oauth-protected-resource/api/v1/mcp", "/.well-known/oauth-authorization-server"):
            r = client.get(path)
            assert r.status_code != 429 and "X-RateLimit-Limit" not in r.headers, path
    assert client.options("/api/v1/devices").status_code != 429


def test_device_credentials_get_their_own_bucket(make_app, key_prefix, api_client_factory):
    app = make_app(RATE_LIMIT_BURST="1000", RATE_LIMIT_PER_MINUTE="1000")
    client = app.test_client()
    client_id, secret = api_client_factory("device:write")
    token = client.post("/api/v1/auth/token", data={"grant_type": "client_credentials", "client_id": client_id,
                                                     "client_secret": secret}).json["access_token"]
    device = client.post("/api/v1/devices", json={"name": "d", "device_type": "t"},
                         headers={"Authorization": f"Bearer {token}"}).json
    creds = basic(device["device_id"], device["device_secret"])
    for _ in range(2):
        assert client.post(f"/api/v1/devices/{device['device_id']}/heartbeat", headers=creds).status_code == 200
    keys = redis.Redis.from_url(app.config["SETTINGS"].redis_url).keys(f"{key_prefix}:limits:*")
    assert any(f"client:device:{device['device_id']}".encode() in key for key in keys), keys
    # A wrong device secret is never recognised: it stays in the IP bucket.
    wrong = basic(device["device_id"], "wrong-secret")
    assert client.post(f"/api/v1/devices/{device['device_id']}/heartbeat", headers=wrong).status_code == 401


def test_limits_work_without_redis_url(make_app):
    app = make_app(REDIS_URL="")
    assert statuses(app.test_client(), BURST + 1)[-1] == 429


def test_redis_outage_falls_back_to_memory_and_recovers(make_app, key_prefix):
    with RedisServer() as server:
        app = make_app(REDIS_URL=server.url, RATE_LIMIT_BURST="1000", RATE_LIMIT_PER_MINUTE="1000")
        log_lines = capture_logs()
        client = app.test_client()
        headers = bearer(app, "client-outage")
        assert client.get("/api/v1/nothing-here", headers=headers).status_code == 404
        store = redis.Redis.from_url(server.url)
        assert store.keys(f"{key_prefix}:limits:*")

        server.stop()
        results = statuses(client, 5, headers=headers)
        assert results == [404] * 5  # no 500, no hang: counted in memory
        fallback = [line for line in log_lines() if "falling back" in line["message"]]
        assert len(fallback) == 1 and fallback[0]["level"] == "warning"

        server.start()
        store.flushall()

        def counted_in_redis_again():
            client.get("/api/v1/nothing-here", headers=headers)
            return store.keys(f"{key_prefix}:limits:*")

        wait_for(counted_in_redis_again, timeout=60, interval=0.5, message="limiter back on Redis")
    assert not any(line["status"] >= 500 for line in log_lines() if line["logger"] == "uaip.access")


def test_memory_fallback_still_enforces_limits(make_app):
    with RedisServer() as server:
        app = make_app(REDIS_URL=server.url)
        server.stop()
        results = statuses(app.test_client(), BURST + 1, headers=bearer(app, "client-mem"))
        assert results == [404] * BURST + [429]


def test_two_redis_round_trips_per_request_and_exact_headers(make_app):
    """One script per window takes the entry and reads the window, so the headers cost no third round trip;
    the header values still count down exactly and reset at the oldest entry plus the window."""
    with RedisServer() as store:
        app = make_app(REDIS_URL=store.url, RATE_LIMIT_PER_MINUTE="50", RATE_LIMIT_BURST="10")
        client = app.test_client()
        headers = bearer(app, "client-round-trips")
        first = client.get("/api/v1/devices", headers=headers)
        server = redis.Redis.from_url(store.url)
        before = server.info("commandstats")
        remaining = [client.get("/api/v1/devices", headers=headers).headers["X-RateLimit-Remaining"] for _ in range(5)]
        after = server.info("commandstats")
        scripts = sum(after[k]["calls"] - before.get(k, {"calls": 0})["calls"] for k in ("cmdstat_evalsha", "cmdstat_eval")
                      if k in after)
        assert scripts == 2 * 5  # one per window; the stock storage made a third call for the headers
        assert first.headers["X-RateLimit-Remaining"] == "9" and remaining == ["8", "7", "6", "5", "4"]
        assert first.headers["X-RateLimit-Limit"] == "10"
        assert 0 < int(first.headers["X-RateLimit-Reset"]) - time.time() <= 13
