"""The public base URL (app/web/urls.py): configured, from the request, or from trusted proxies only."""

from flask import Flask

from app import create_app
from app.web.urls import public_base_url


def base_for(app: Flask, **request_options) -> str:
    with app.test_request_context("/api/v1/devices", **request_options):
        return public_base_url()


def test_configured_public_url_wins_over_the_request(hub_env):
    app = create_app({**hub_env, "UAIP_PUBLIC_URL": "https://Hub.Example.com"})
    assert base_for(app, base_url="http://internal:8443") == "https://hub.example.com"


def test_request_scheme_and_host_without_proxies_ignore_forwarded_headers(hub_env):
    app = create_app(hub_env)
    headers = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "evil.example"}
    client = app.test_client()

    @app.get("/probe-base")
    def probe():
        return {"base": public_base_url()}

    assert client.get("/probe-base", base_url="http://Hub.Local:8443", headers=headers).json["base"] == \
        "http://hub.local:8443"


def test_trusted_proxy_scheme_and_host_are_used(hub_env):
    app = create_app({**hub_env, "TRUSTED_PROXY_HOPS": "1"})
    client = app.test_client()

    @app.get("/probe-base")
    def probe():
        return {"base": public_base_url()}

    headers = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "hub.example.com", "X-Forwarded-For": "10.0.0.1"}
    assert client.get("/probe-base", base_url="http://10.1.1.1:8443", headers=headers).json["base"] == \
        "https://hub.example.com"


def no_store(response) -> bool:
    return response.headers.get("Cache-Control") == "no-store" and "host" in response.headers.get("Vary", "").lower()


def test_answers_naming_the_request_host_are_never_cached(hub_env, auth):
    """UAIP_PUBLIC_URL unset: every answer whose URLs come from the Host header says no-store (and Vary: Host), so
    a shared cache cannot hand one client's Host to everyone (cache poisoning)."""
    app = create_app(hub_env)
    client = app.test_client()
    for path in ("/.well-known/oauth-authorization-server", "/.well-known/oauth-protected-resource",
                 "/.well-known/oauth-protected-resource/api/v1/mcp"):
        r = client.get(path, base_url="http://evil.example")
        assert r.status_code == 200 and "evil.example" in r.get_data(as_text=True)
        assert no_store(r), (path, r.headers)
    challenged = client.post("/api/v1/mcp", json={}, base_url="http://evil.example")
    assert challenged.status_code == 401 and "evil.example" in challenged.headers["WWW-Authenticate"]
    assert no_store(challenged), challenged.headers
    assert no_store(client.get("/api/v1/devices"))  # a REST challenge too

    created = client.post("/api/v1/devices", json={"name": "n", "device_type": "t"}, headers=auth)
    assert created.status_code == 201 and no_store(created), created.headers
    td = client.get(f"/api/v1/devices/{created.json['device_id']}/thing-description", headers=auth,
                    base_url="http://evil.example")
    assert td.status_code == 200 and "evil.example" in td.get_data(as_text=True) and no_store(td), td.headers

    listed = client.get("/api/v1/devices", headers=auth)  # names no URL: left to the usual rules
    assert listed.status_code == 200 and "no-store" not in listed.headers.get("Cache-Control", "")


def test_a_configured_public_url_leaves_discovery_cacheable(hub_env):
    app = create_app({**hub_env, "UAIP_PUBLIC_URL": "https://hub.example.com"})
    r = app.test_client().get("/.well-known/oauth-authorization-server", base_url="http://evil.example")
    assert r.json["issuer"] == "https://hub.example.com"
    assert "no-store" not in r.headers.get("Cache-Control", "")
