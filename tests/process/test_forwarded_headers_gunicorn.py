"""Through a real gunicorn with TRUSTED_PROXY_HOPS=0: forwarded headers change nothing (gunicorn's own
forwarded_allow_ips is emptied by gunicorn.conf.py, so even a client on loopback cannot pick the scheme), answers
naming the Host are not cacheable, and a production start without UAIP_PUBLIC_URL says so once."""

import pytest
import requests

from tests.support.processes import HubServer

pytestmark = pytest.mark.process

DISCOVERY = "/.well-known/oauth-authorization-server"
WARNING = "UAIP_PUBLIC_URL is unset"


def test_forwarded_proto_from_loopback_is_ignored_without_trusted_proxies(hub_env):
    with HubServer({**hub_env, "TRUSTED_PROXY_HOPS": "0", "LOG_FORMAT": "text"}, workers=2, threads=2) as hub:
        forged = {"X-Forwarded-Proto": "https", "X-Forwarded-Ssl": "on", "X-Forwarded-Protocol": "ssl",
                  "X-Forwarded-Host": "evil.example"}
        r = requests.get(hub.url + DISCOVERY, headers=forged, timeout=10)
        assert r.status_code == 200
        assert r.json()["issuer"] == hub.url  # http://127.0.0.1:<port>, as the socket says
        assert r.json()["token_endpoint"] == hub.url + "/api/v1/auth/token"
        assert r.headers["Cache-Control"] == "no-store" and "Host" in r.headers["Vary"]
        challenge = requests.post(hub.url + "/api/v1/mcp", json={}, headers=forged, timeout=10)
        assert challenge.status_code == 401
        assert f'resource_metadata="{hub.url}/' in challenge.headers["WWW-Authenticate"]
        assert challenge.headers["Cache-Control"] == "no-store"
        assert hub.output().count(WARNING) == 1, hub.output()  # the master's, not one per worker


def test_forwarded_scheme_and_host_count_from_a_trusted_proxy(hub_env):
    with HubServer({**hub_env, "TRUSTED_PROXY_HOPS": "1"}, workers=1, threads=2) as hub:
        proxied = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "hub.example.com", "X-Forwarded-For": "10.0.0.9"}
        r = requests.get(hub.url + DISCOVERY, headers=proxied, timeout=10)
        assert r.json()["issuer"] == "https://hub.example.com"
        assert r.headers["Cache-Control"] == "no-store"
        assert {"Host", "X-Forwarded-Host", "X-Forwarded-Proto"} <= {v.strip() for v in r.headers["Vary"].split(",")}
