"""/metrics in one process: documented names and labels, bounded label values, 429s observed, devices by status."""

import itertools
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from app import create_app
from app.telemetry.metrics import dependency_up
from tests.support.asserting import nonempty
from tests.support.services import wait_for


def sample(name, **labels):
    return REGISTRY.get_sample_value(name, labels) or 0


def test_requests_are_counted_by_url_rule_never_by_raw_path(client, auth, make_device):
    device = make_device()
    rule = "/api/v1/devices/<device_id>"
    labels = {"method": "GET", "endpoint": rule, "status": "200"}
    before = sample("uaip_http_requests_total", **labels)
    before_hist = sample("uaip_http_request_duration_seconds_count", **labels)
    client.get(f"/api/v1/devices/{device['device_id']}", headers=auth)
    assert sample("uaip_http_requests_total", **labels) == before + 1
    assert sample("uaip_http_request_duration_seconds_count", **labels) == before_hist + 1

    unmatched = {"method": "GET", "endpoint": "<unmatched>", "status": "404"}
    before = sample("uaip_http_requests_total", **unmatched)
    for i in range(5):
        client.get(f"/api/v1/random-{i}")
    assert sample("uaip_http_requests_total", **unmatched) == before + 5

    odd = {"method": "OTHER", "endpoint": "<unmatched>", "status": "405"}
    before = sample("uaip_http_requests_total", **odd)
    client.open("/api/v1/devices", method="BREW")
    assert sample("uaip_http_requests_total", **odd) == before + 1

    text = client.get("/metrics").get_data(as_text=True)
    assert "random-" not in text and device["device_id"] not in text


def test_documented_metrics_are_exposed(client, make_device):
    make_device()
    r = client.get("/metrics")
    assert r.status_code == 200 and r.mimetype == "text/plain"
    families = {family.name: family for family in text_string_to_metric_families(r.get_data(as_text=True))}
    for name in ("uaip_http_requests", "uaip_http_request_duration_seconds", "uaip_rate_limited",
                 "uaip_commands", "uaip_dependency_up", "uaip_devices"):
        assert name in families, name
    assert families["uaip_http_request_duration_seconds"].type == "histogram"
    buckets = {s.labels["le"] for s in families["uaip_http_request_duration_seconds"].samples if "le" in s.labels}
    assert {"0.001", "10.0", "+Inf"} <= buckets
    devices = {s.labels["status"]: s.value for s in families["uaip_devices"].samples}
    assert set(devices) == {"pending", "online", "offline", "error"} and devices["pending"] >= 1


def test_scraping_is_not_counted_and_not_limited(hub_env):
    app = create_app({**hub_env, "RATE_LIMIT_BURST": "1"})
    client = app.test_client()
    before = sample("uaip_http_requests_total", method="GET", endpoint="/metrics", status="200")
    assert [client.get("/metrics").status_code for _ in range(3)] == [200] * 3
    assert sample("uaip_http_requests_total", method="GET", endpoint="/metrics", status="200") == before


def test_rate_limited_requests_reach_the_histogram(hub_env):
    prefix = "uaip-test-hist-" + uuid.uuid4().hex[:8]
    app = create_app({**hub_env, "RATE_LIMIT_BURST": "1", "UAIP_REDIS_KEY_PREFIX": prefix})
    client = app.test_client()
    labels = {"method": "GET", "endpoint": "/api/v1/devices", "status": "429"}
    before = sample("uaip_http_request_duration_seconds_count", **labels)
    client.get("/api/v1/devices")
    client.get("/api/v1/devices")
    assert sample("uaip_http_request_duration_seconds_count", **labels) == before + 1


def test_metrics_answer_when_postgresql_is_down(hub_env):
    app = create_app({**hub_env, "DATABASE_URL": "postgresql://postgres@127.0.0.1:1/none"})
    r = app.test_client().get("/metrics")
    assert r.status_code == 200
    families = {f.name: f for f in text_string_to_metric_families(r.get_data(as_text=True))}
    assert all(s.value != s.value for s in nonempty(families["uaip_devices"].samples))  # NaN: unknown, not zero


def test_a_scrape_refreshes_dependency_gauges_without_a_health_call(hub_env):
    """Prometheus may be the only caller: the scrape itself runs the (cached) health probes."""
    dependency_up.labels(name="PostgreSQL").set(0)  # a stale value the scrape must replace
    app = create_app(hub_env)
    text = app.test_client().get("/metrics").get_data(as_text=True)
    assert 'uaip_dependency_up{name="PostgreSQL"} 1.0' in text
    assert 'uaip_dependency_up{name="Redis"} 1.0' in text


def test_a_scrape_flood_asks_postgresql_for_device_counts_once_per_period(hub_env, make_device, monkeypatch):
    """/metrics is anonymous: concurrent scrapes cost at most one count query per worker and period (2 s, the
    health report's), and a count made after the period sees new devices."""
    import app.web.scrape as monitoring

    real_count, queries = monitoring.count_devices_by_status, []

    def counting(db, timeout):
        queries.append(time.monotonic())
        return real_count(db, timeout)

    monkeypatch.setattr(monitoring, "count_devices_by_status", counting)
    app = create_app(hub_env)

    def scrape(_=None):
        text = app.test_client().get("/metrics").get_data(as_text=True)
        families = {f.name: f for f in text_string_to_metric_families(text)}
        return {s.labels["status"]: s.value for s in families["uaip_devices"].samples}

    period = app.config["SETTINGS"].health_cache_seconds  # the health report's period, which the device counts share
    assert period == 2.0

    def at_most_one_query_per_period():
        gaps = [later - earlier for earlier, later in itertools.pairwise(queries)]
        assert all(gap >= period - 0.01 for gap in nonempty(gaps)), gaps

    started = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(scrape, range(40)))
    elapsed = time.monotonic() - started
    assert all(set(result) == {"pending", "online", "offline", "error"}  # every scrape answered
               for result in nonempty(results))
    # However slow the machine, the 40 scrapes asked once, plus once per full period they took.
    assert 1 <= len(queries) <= 1 + int(elapsed / period), (len(queries), elapsed)
    at_most_one_query_per_period()

    pending = scrape()["pending"]
    make_device()
    wait_for(lambda: scrape()["pending"] == pending + 1, timeout=15, message="the new device counted")
    at_most_one_query_per_period()
