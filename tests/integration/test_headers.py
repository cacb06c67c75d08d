"""Security headers on every response, and CORS only for the configured origins."""

from app import create_app
from tests.support.asserting import nonempty


def test_security_headers_on_every_response(client):
    for r in (client.get("/api/v1/openapi.json"), client.get("/api/v1/nothing"), client.get("/metrics")):
        assert r.headers["X-Content-Type-Options"] == "nosniff"
        assert r.headers["X-Frame-Options"] == "DENY"
        assert "default-src 'none'" in r.headers["Content-Security-Policy"]
        assert r.headers["X-Request-ID"]


def test_no_cors_headers_without_cors_origins(client):
    r = client.get("/api/v1/openapi.json", headers={"Origin": "https://agent.example"})
    assert "Access-Control-Allow-Origin" not in r.headers


def test_cors_for_configured_origins_only(hub_env):
    client = create_app({**hub_env, "CORS_ORIGINS": "https://console.example, https://other.example"}).test_client()
    preflight = client.options(
        "/api/v1/devices",
        headers={"Origin": "https://console.example", "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "Authorization, Content-Type"},
    )
    assert preflight.status_code == 200
    assert preflight.headers["Access-Control-Allow-Origin"] == "https://console.example"
    assert "authorization" in preflight.headers["Access-Control-Allow-Headers"].lower()
    r = client.get("/api/v1/devices", headers={"Origin": "https://console.example"})
    assert r.headers["Access-Control-Allow-Origin"] == "https://console.example"
    assert "X-Request-ID" in r.headers["Access-Control-Expose-Headers"]
    other = client.get("/api/v1/devices", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in other.headers


def test_cors_lets_a_browser_mcp_client_in(hub_env):
    """With its origin configured, a browser-based MCP client may send the protocol's headers, read the Bearer
    challenge, and fetch the discovery documents."""
    client = create_app({**hub_env, "CORS_ORIGINS": "https://inspector.example"}).test_client()
    origin = {"Origin": "https://inspector.example"}
    preflight = client.options("/api/v1/mcp", headers={
        **origin, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "Authorization, Content-Type, MCP-Protocol-Version, Mcp-Method, Mcp-Name"})
    assert preflight.status_code == 200
    allowed = preflight.headers["Access-Control-Allow-Headers"].lower()
    assert all(name in allowed for name in nonempty(("mcp-protocol-version", "mcp-method", "mcp-name")))
    challenge = client.post("/api/v1/mcp", json={}, headers=origin)
    assert challenge.status_code == 401 and "WWW-Authenticate" in challenge.headers["Access-Control-Expose-Headers"]
    metadata = client.get("/.well-known/oauth-protected-resource/api/v1/mcp", headers=origin)
    assert metadata.headers["Access-Control-Allow-Origin"] == "https://inspector.example"
