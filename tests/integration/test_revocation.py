"""Revocation across hub instances: two apps (as two pods) sharing PostgreSQL and Redis, Redis outages and loss,
and the cost of the check (one Redis round trip per authenticated request)."""

from __future__ import annotations

import time
import uuid

import pytest
import redis

from app import create_app
from app.auth import revocation
from tests.support.polling import wait_until
from tests.support.redis_monitor import commands_during, round_trips
from tests.support.servers import RedisServer

TOKEN = "/api/v1/auth/token"
PROBE = "/api/v1/devices?limit=1"


@pytest.fixture()
def key_prefix() -> str:
    return f"uaip-test-{uuid.uuid4().hex[:10]}"


@pytest.fixture()
def make_app(hub_env, key_prefix):
    def make(**overrides):
        return create_app({**hub_env, "UAIP_REDIS_KEY_PREFIX": key_prefix, **overrides})

    return make


def _client_and_token(test_client, api_client_factory) -> tuple[str, str, str]:
    client_id, secret = api_client_factory("device:read")
    r = test_client.post(TOKEN, data={"grant_type": "client_credentials", "client_id": client_id,
                                      "client_secret": secret})
    assert r.status_code == 200
    return client_id, secret, r.json["access_token"]


def _status(test_client, token: str) -> int:
    return test_client.get(PROBE, headers={"Authorization": f"Bearer {token}"}).status_code


def _admin(test_client, api_client_factory) -> dict[str, str]:
    client_id, secret = api_client_factory("admin")
    r = test_client.post(TOKEN, data={"grant_type": "client_credentials", "client_id": client_id,
                                      "client_secret": secret})
    return {"Authorization": f"Bearer {r.json['access_token']}"}


def _refused_within(test_client, token: str, seconds: float) -> float:
    """Poll until the token is refused; how long it took (AssertionError after `seconds`)."""
    started = time.monotonic()
    wait_until(lambda: _status(test_client, token) == 401, timeout=seconds, what="the token to be refused",
               interval=0.01)
    return time.monotonic() - started


def test_revoking_on_one_hub_is_refused_on_the_other_within_a_second(make_app, api_client_factory):
    one, two = make_app().test_client(), make_app().test_client()
    client_id, _, token = _client_and_token(one, api_client_factory)
    assert _status(two, token) == 200  # verified and cached by the second hub's process
    r = one.post(f"/api/v1/clients/{client_id}/revoke-tokens", headers=_admin(one, api_client_factory))
    assert r.status_code == 204
    assert _refused_within(two, token, 1.0) < 1.0


def test_a_client_disabled_on_one_hub_is_refused_on_the_other(make_app, api_client_factory):
    one, two = make_app().test_client(), make_app().test_client()
    client_id, secret, token = _client_and_token(one, api_client_factory)
    assert _status(two, token) == 200
    r = one.patch(f"/api/v1/clients/{client_id}", json={"disabled": True}, headers=_admin(one, api_client_factory))
    assert r.status_code == 200
    _refused_within(two, token, 1.0)
    r = two.post(TOKEN, data={"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret})
    assert r.status_code == 401 and r.json["error"] == "invalid_client"


def test_one_redis_round_trip_per_authenticated_request(make_app, api_client_factory):
    with RedisServer() as server:
        app = make_app(REDIS_URL=server.url)
        test_client = app.test_client()
        _, _, token = _client_and_token(test_client, api_client_factory)
        assert _status(test_client, token) == 200  # first check copies PostgreSQL's revocations into Redis
        counts = commands_during(server.url, lambda: _status(test_client, token))
        # The rate limiter's one script call, which reads the revocation keys inside it.
        assert counts["EVALSHA"] == 1 and counts["lua:MGET"] == 1, counts
        assert round_trips(counts) == 1, counts


def test_a_revoked_token_is_refused_through_the_limiters_round_trip(make_app, api_client_factory):
    """The answer read inside the limiter's script is the one the view honours: after a revocation the next
    request is refused, still with one round trip."""
    with RedisServer() as server:
        app = make_app(REDIS_URL=server.url)
        test_client = app.test_client()
        client_id, _, token = _client_and_token(test_client, api_client_factory)
        assert _status(test_client, token) == 200
        assert test_client.post(f"/api/v1/clients/{client_id}/revoke-tokens",
                                headers=_admin(test_client, api_client_factory)).status_code == 204
        statuses: list[int] = []
        counts = commands_during(server.url, lambda: statuses.append(_status(test_client, token)))
        assert statuses == [401]
        assert round_trips(counts) == 1 and counts["lua:MGET"] == 1, counts


def test_while_redis_is_down_revocation_still_reaches_every_hub(make_app, api_client_factory):
    with RedisServer() as server:
        one, two = make_app(REDIS_URL=server.url).test_client(), make_app(REDIS_URL=server.url).test_client()
        client_id, _, token = _client_and_token(one, api_client_factory)
        admin = _admin(one, api_client_factory)
        assert _status(one, token) == 200 and _status(two, token) == 200
        server.stop()
        assert _status(two, token) == 200  # noticed the outage once; from now on no request waits for Redis
        started = time.monotonic()
        statuses = [_status(two, token) for _ in range(20)]
        assert statuses == [200] * 20
        assert time.monotonic() - started < 2.0  # 20 requests: no Redis timeout (0.5 s) paid per request

        assert one.post(f"/api/v1/clients/{client_id}/revoke-tokens", headers=admin).status_code == 204
        _refused_within(two, token, 2.0)  # this process's copy of PostgreSQL is at most a second old

        server.start()  # an empty Redis: the first check after the outage copies the revocations back
        store = redis.Redis.from_url(server.url)
        wait_until(lambda: _status(two, token) == 401 and store.exists(two.application.extensions[
            "uaip.revocations"].synced_key()), timeout=10, what="revocation state back in Redis")
        assert store.get(two.application.extensions["uaip.revocations"].cutoff_key(client_id)) is not None


def test_a_flushed_redis_is_refilled_from_postgresql(make_app, api_client_factory):
    with RedisServer() as server:
        app = make_app(REDIS_URL=server.url)
        test_client = app.test_client()
        client_id, _, token = _client_and_token(test_client, api_client_factory)
        assert test_client.post(f"/api/v1/clients/{client_id}/revoke-tokens",
                                headers=_admin(test_client, api_client_factory)).status_code == 204
        assert _status(test_client, token) == 401
        redis.Redis.from_url(server.url).flushall()
        assert _status(test_client, token) == 401


def test_without_redis_url_revocation_works_through_postgresql(make_app, api_client_factory):
    one, two = make_app(REDIS_URL="").test_client(), make_app(REDIS_URL="").test_client()
    client_id, _, token = _client_and_token(one, api_client_factory)
    assert _status(two, token) == 200
    assert one.post(f"/api/v1/clients/{client_id}/revoke-tokens",
                    headers=_admin(one, api_client_factory)).status_code == 204
    _refused_within(two, token, 2.0)


def test_is_revoked_is_the_one_check_other_code_calls(make_app, api_client_factory):
    """The event streams ask `revocation.is_revoked(principal)` for open streams: it sees a revocation too."""
    app = make_app()
    test_client = app.test_client()
    client_id, _, token = _client_and_token(test_client, api_client_factory)
    from app.web.authz import verified_tokens

    with app.app_context():
        principal = verified_tokens().principal(token)
        assert principal.client_id == client_id and revocation.is_revoked(principal) is False
    assert test_client.post(f"/api/v1/clients/{client_id}/revoke-tokens",
                            headers=_admin(test_client, api_client_factory)).status_code == 204
    with app.app_context():
        assert revocation.is_revoked(principal) is True
