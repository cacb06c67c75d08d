"""Rate limits: per-client buckets on Redis, headers, the 429 envelope, exemptions, client IP, Redis outages, and
the Redis script itself: one round trip, a small fixed state, the same answers as the pure rule."""

import random
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis
from prometheus_client import REGISTRY

from app import create_app
from app.auth.tokens import issue_token
from app.infra.redis_client import Cache
from app.ratelimit.hooks import STRATEGY
from app.ratelimit.rule import MICROSECONDS, MINUTE_US, Rules, State, step
from app.ratelimit.storage import FallbackLimitStore, MemoryLimitStore, RedisLimitStore
from tests.conftest import basic, capture_logs
from tests.support.arrivals import busiest_minute, per_minute_counts
from tests.support.asserting import nonempty
from tests.support.redis_monitor import commands_during, round_trips
from tests.support.servers import RedisServer
from tests.support.services import REDIS_BASE_URL, wait_for

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
        client.get("/api/v1/nothing-here", headers={"X-Forwarded-For": f"10.0.0.{i}"}).status_code
        for i in range(BURST + 2)
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


def flood_until_limited(client) -> int:
    """Anonymous requests from 127.0.0.1 (the test client's address) until one gets 429; returns how many."""
    for sent in range(1, 100):
        if client.get("/api/v1/nothing-here").status_code == 429:
            return sent
    raise AssertionError("anonymous requests were never limited")


def register_device(app, client) -> dict:
    token, _ = issue_token("rate-admin", ["device:write"], app.config["SETTINGS"].jwt_secret, 3600)
    r = client.post("/api/v1/devices", json={"name": "d", "device_type": "t"},
                    headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 201, r.json
    return r.json


def token_request(client, client_id, secret, how="form"):
    form = {"grant_type": "client_credentials"}
    if how == "basic":
        return client.post("/api/v1/auth/token", data=form, headers=basic(client_id, secret))
    return client.post("/api/v1/auth/token", data={**form, "client_id": client_id, "client_secret": secret})


def test_anonymous_traffic_never_blocks_verified_devices_and_clients_from_its_address(make_app, api_client_factory):
    app = make_app()
    client = app.test_client()
    device = register_device(app, client)
    creds = basic(device["device_id"], device["device_secret"])
    heartbeat = f"/api/v1/devices/{device['device_id']}/heartbeat"
    client_id, secret = api_client_factory("device:read")
    assert client.post(heartbeat, headers=creds).status_code == 200  # verified once: remembered by this process
    assert token_request(client, client_id, secret).status_code == 200

    flood_until_limited(client)
    assert client.get("/api/v1/nothing-here").status_code == 429  # the address stays limited ...
    for _ in range(BURST - 1):  # ... while the device and the client spend their own budgets
        assert client.post(heartbeat, headers=creds).status_code == 200
        assert token_request(client, client_id, secret).status_code == 200
    assert token_request(client, client_id, secret, how="basic").status_code == 200  # same client, same bucket
    assert token_request(client, client_id, secret, how="basic").status_code == 429  # which is limited too


def test_credentials_not_yet_verified_still_get_through_an_anonymous_flood(make_app, api_client_factory):
    """A device or client this process has not seen yet (new, or verified by another worker) has no bucket of its
    own before its first success: it gets a second budget of its address's size that anonymous requests never
    touch, so its first request reaches the check, and from then on its own bucket."""
    app = make_app()
    client = app.test_client()
    device = register_device(app, client)
    client_id, secret = api_client_factory("device:read")
    assert flood_until_limited(client) == BURST + 1

    heartbeat = f"/api/v1/devices/{device['device_id']}/heartbeat"
    assert client.post(heartbeat, headers=basic(device["device_id"], device["device_secret"])).status_code == 200
    r = token_request(client, client_id, secret)
    assert r.status_code == 200, r.json
    for _ in range(BURST - 1):  # from now on in its own bucket (one burst left for the end of this test)
        assert client.post(heartbeat, headers=basic(device["device_id"], device["device_secret"])).status_code == 200

    # Wrong credentials spend only that second budget, and are refused once it is empty.
    wrong = basic(device["device_id"], "wrong-secret")
    results = [client.post(heartbeat, headers=wrong).status_code for _ in range(BURST)]
    assert results == [401] * (BURST - 2) + [429] * 2  # two of the second budget went to the device and client
    assert client.post(heartbeat, headers=basic(device["device_id"], device["device_secret"])).status_code == 200


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


def test_the_per_minute_limit_binds_with_its_own_headers_and_retry_after(make_app):
    """per-minute 4, burst 10: the bucket holds 4 and drains one every 15 s, so the minute limit is the one named."""
    app = make_app(RATE_LIMIT_PER_MINUTE="4", RATE_LIMIT_BURST="10")
    client = app.test_client()
    headers = bearer(app, "client-minute-headers")
    started = time.time()
    answers = [client.get("/api/v1/nothing-here", headers=headers) for _ in range(5)]
    assert [r.status_code for r in answers] == [404] * 4 + [429]
    assert [r.headers["X-RateLimit-Limit"] for r in answers] == ["4"] * 5
    assert [r.headers["X-RateLimit-Remaining"] for r in answers] == ["3", "2", "1", "0", "0"]
    assert 0 < int(answers[0].headers["X-RateLimit-Reset"]) - started <= 16  # empty again 15 s after one request
    assert 45 < int(answers[3].headers["X-RateLimit-Reset"]) - started <= 61
    refused = answers[-1]
    assert refused.headers["Retry-After"] == "15"  # one request drains out of the bucket in 15 s
    assert refused.json["code"] == "RATE_LIMITED" and refused.json["details"] == {"limit": "4 per 1 minute"}
    assert all("Retry-After" not in r.headers for r in nonempty(answers[:4]))


def test_reset_is_the_end_of_the_burst_window_on_the_redis_clock(make_app):
    app = make_app()
    client = app.test_client()
    headers = bearer(app, "client-reset")
    redis_now = redis.Redis.from_url(app.config["SETTINGS"].redis_url).time()[0]
    answers = [client.get("/api/v1/nothing-here", headers=headers) for _ in range(BURST + 1)]
    resets = {r.headers["X-RateLimit-Reset"] for r in answers}
    assert len(resets) == 1  # one window: every answer in it points at its end
    assert 0 <= int(resets.pop()) - (redis_now + 12) <= 2


def test_one_redis_round_trip_per_request(make_app):
    """MONITOR on a private Redis: each limited request sends exactly one EVALSHA and nothing else, admitted or
    refused; the rest happens inside the script."""
    with RedisServer() as store:
        app = make_app(REDIS_URL=store.url, RATE_LIMIT_PER_MINUTE="50", RATE_LIMIT_BURST="10")
        client = app.test_client()
        headers = bearer(app, "client-round-trips")
        assert client.get("/api/v1/nothing-here", headers=headers).status_code == 404  # connect, load the script
        seen = commands_during(store.url, lambda: [client.get("/api/v1/nothing-here", headers=headers)
                                                   for _ in range(20)])
    assert round_trips(seen) == 20 and seen["EVALSHA"] == 20, seen
    assert seen["lua:HMGET"] == 20 and seen["lua:HSET"] == 9  # 9 more admitted (10 in the window), 11 refused


def test_state_per_client_is_one_small_hash_whatever_the_limits(make_app, key_prefix):
    """At 1,000,000 per minute the client's key stays a four-field hash: the same size after 10 requests as after
    2,000, and it expires once it no longer matters."""
    app = make_app(RATE_LIMIT_PER_MINUTE="1000000", RATE_LIMIT_BURST="1000000")
    client = app.test_client()
    headers = bearer(app, "client-high-volume")
    store = redis.Redis.from_url(app.config["SETTINGS"].redis_url)
    key = f"{key_prefix}:limits:{STRATEGY}:client:client-high-volume"

    def send(n):
        assert {client.get("/api/v1/nothing-here", headers=headers).status_code for _ in range(n)} == {404}

    send(10)
    small = store.memory_usage(key)
    send(1990)
    assert store.type(key) == b"hash" and set(store.hkeys(key)) == {b"ws", b"wc", b"lv", b"up"}
    assert 1 <= int(store.hget(key, "wc")) <= 2000  # (a slow run may have opened a new burst window)
    assert store.memory_usage(key) <= small + 16  # digits may grow; entries never accumulate
    assert store.keys(f"{key_prefix}:limits:*") == [key.encode()]
    assert 0 < store.pttl(key) <= 12_001  # expires when the burst window ends (the bucket drains sooner)


def test_concurrent_hits_on_redis_admit_exactly_the_burst(key_prefix):
    store = RedisLimitStore(Cache(REDIS_BASE_URL, key_prefix), key_prefix, Rules(per_minute=1000, burst=20))
    try:
        with ThreadPoolExecutor(50) as pool:
            results = list(pool.map(lambda _: store.hit("client:concurrent")[0], range(200)))
    finally:
        store.close()
    assert results.count(True) == 20


@pytest.mark.parametrize("seed", range(6))
def test_the_script_gives_the_pure_rules_answers_to_the_bit(key_prefix, seed):
    """The Lua script and app/ratelimit/rule.py's step() on the same arrivals (a simulated clock passed to both) agree
    on every answer and every stored field, down to the float level."""
    rng = random.Random(seed)
    rules = Rules(per_minute=rng.choice([1, 7, 60, 100, 333, 1_000_000]), burst=rng.choice([1, 3, 20, 1000]))
    store = RedisLimitStore(Cache(REDIS_BASE_URL, key_prefix), key_prefix, rules)
    server = redis.Redis.from_url(REDIS_BASE_URL)
    state, now = None, 1_700_000_000 * MICROSECONDS + rng.randrange(MICROSECONDS)
    try:
        for _ in range(400):
            now += rng.choice([0, 0, rng.randrange(1000), rng.randrange(2 * MICROSECONDS),
                               rng.randrange(20 * MICROSECONDS)])
            expected_admitted, expected = step(state, now, rules)
            admitted, answered, _ = store.hit(f"seed-{seed}", now_us=now)
            assert (admitted, answered) == (expected_admitted, expected)
            if admitted:
                state = expected
                stored = server.hgetall(store.key(f"seed-{seed}"))
                assert State(int(stored[b"ws"]), int(stored[b"wc"]), float(stored[b"lv"]), int(stored[b"up"])) == state
    finally:
        store.close()


def test_the_script_keeps_any_minute_within_the_limit_plus_one_burst(key_prefix):
    """A greedy client (a request every 50 ms of simulated time, for 5 minutes) through the real script: 100 per
    minute in the long run, never more than 100 + 20 in any 60 s, never more than 20 in a burst window."""
    rules = Rules(per_minute=100, burst=20)
    store = RedisLimitStore(Cache(REDIS_BASE_URL, key_prefix), key_prefix, rules)
    start = 1_700_000_000 * MICROSECONDS
    admitted, windows = [], {}
    try:
        for now in range(start, start + 5 * MINUTE_US, 50_000):
            ok, state, _ = store.hit("client:greedy", now_us=now)
            if ok:
                admitted.append(now)
                windows[state.window_start] = state.window_count
    finally:
        store.close()
    assert per_minute_counts(admitted, start, 5) == [100] * 5
    assert busiest_minute(admitted) <= 120
    assert max(windows.values()) == 20


def test_a_foreign_value_at_the_key_is_counted_in_memory_not_a_500(make_app, key_prefix):
    """Another program's value under the limiter's key (WRONGTYPE inside the script): that client is counted in
    memory, and the warning names the problem."""
    app = make_app()
    redis.Redis.from_url(app.config["SETTINGS"].redis_url).rpush(
        f"{key_prefix}:limits:{STRATEGY}:client:client-clash", "not-a-hash")
    log_lines = capture_logs()
    client = app.test_client()
    results = statuses(client, BURST + 1, headers=bearer(app, "client-clash"))
    assert results == [404] * BURST + [429]  # still limited, in memory
    assert any("counted in memory" in line["message"] and "WRONGTYPE" in line.get("error", "") for line in log_lines())


def test_a_broken_key_affects_only_its_client(hub_env, key_prefix):
    """A key something else overwrote (WRONGTYPE) is that client's problem: it is counted in memory for the request,
    and every other client keeps its state in Redis (no process-wide fallback)."""
    rules = Rules(per_minute=1000, burst=20)
    cache = Cache(REDIS_BASE_URL, key_prefix)
    store = FallbackLimitStore(RedisLimitStore(cache, f"{key_prefix}:limits", rules), MemoryLimitStore(rules))
    server = redis.Redis.from_url(REDIS_BASE_URL)
    try:
        server.set(f"{key_prefix}:limits:client:broken", "not a hash")
        admitted, *_ = store.hit("client:broken")
        assert admitted
        assert not store.on_memory
        store.hit("client:healthy")
        assert server.type(f"{key_prefix}:limits:client:healthy") == b"hash"
    finally:
        server.delete(f"{key_prefix}:limits:client:broken", f"{key_prefix}:limits:client:healthy")
        cache.close()


def mcp_bearer(app, client_id: str) -> dict[str, str]:
    """A token for the MCP endpoint (its audience), as the MCP endpoint accepts."""
    token, _ = issue_token(client_id, ["device:read"], app.config["SETTINGS"].jwt_secret, 3600,
                           audience="http://localhost/api/v1/mcp")
    return {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}


def test_mcp_probes_and_notifications_are_not_charged(make_app):
    """Clients probe the MCP endpoint with GET/DELETE (405) and send notifications (202) around every call;
    neither spends the budget. Requests, refusals and unauthenticated notifications do."""
    app = make_app()
    client = app.test_client()
    headers = mcp_bearer(app, "agent-" + uuid.uuid4().hex[:6])
    notification = b'{"jsonrpc":"2.0","method":"notifications/initialized"}'
    for _ in range(BURST * 3):
        assert client.get("/api/v1/mcp", headers=headers).status_code == 405
        assert client.delete("/api/v1/mcp").status_code == 405
        r = client.post("/api/v1/mcp", data=notification, headers=headers)
        assert r.status_code == 202 and "X-RateLimit-Remaining" not in r.headers
    ping = b'{"jsonrpc":"2.0","id":1,"method":"ping"}'
    answers = [client.post("/api/v1/mcp", data=ping, headers=headers) for _ in range(BURST + 1)]
    assert [r.status_code for r in answers] == [200] * BURST + [429]
    assert answers[0].headers["X-RateLimit-Remaining"] == str(BURST - 1)


@pytest.mark.parametrize("body, audience", [
    (b'{"jsonrpc":"2.0","method":"notifications/initialized"}', None),  # a REST token: 401, charged
    (b'{"jsonrpc":"2.0","method":"tools/list"}', "mcp"),  # a request without id: 400, charged
    (b'{"jsonrpc":"2.0","id":1,"method":"ping"}', "mcp"),
    (b'[{"jsonrpc":"2.0","method":"notifications/initialized"}]', "mcp"),  # a batch: 400, charged
    (b"{not json", "mcp"),
])
def test_everything_else_on_the_mcp_endpoint_is_charged(make_app, body, audience):
    app = make_app()
    client = app.test_client()
    client_id = "agent-" + uuid.uuid4().hex[:6]
    headers = mcp_bearer(app, client_id) if audience else {**bearer(app, client_id), "Content-Type": "application/json"}
    answers = [client.post("/api/v1/mcp", data=body, headers=headers).status_code for _ in range(BURST + 1)]
    assert answers[-1] == 429 and 429 not in answers[:-1], answers
