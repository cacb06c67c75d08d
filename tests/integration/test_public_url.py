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
