"""OAuth discovery: RFC 9728 protected-resource metadata for the REST API and the MCP endpoint, RFC 8414
authorization-server metadata; no auth, the hub's public base URL in every URL."""


import pytest

from app import create_app

SCOPES = ["device:read", "device:write", "device:command", "message:read", "admin"]
MCP_TOOL_SCOPES = ["device:read", "device:command", "message:read"]


def test_rest_api_resource_metadata(client):
    r = client.get("/.well-known/oauth-protected-resource")
    assert r.status_code == 200 and r.mimetype == "application/json"
    assert r.json == {"resource": "http://localhost", "authorization_servers": ["http://localhost"],
                      "scopes_supported": SCOPES, "bearer_methods_supported": ["header"]}


def test_mcp_endpoint_resource_metadata(client):
    r = client.get("/.well-known/oauth-protected-resource/api/v1/mcp")
    assert r.status_code == 200
    # Only what its tools use: an MCP client asks for every scope listed here, and an agent never needs admin.
    assert r.json == {"resource": "http://localhost/api/v1/mcp", "authorization_servers": ["http://localhost"],
                      "scopes_supported": MCP_TOOL_SCOPES, "bearer_methods_supported": ["header"]}


def test_authorization_server_metadata(client):
    r = client.get("/.well-known/oauth-authorization-server")
    assert r.status_code == 200
    assert r.json == {
        "issuer": "http://localhost",
        "token_endpoint": "http://localhost/api/v1/auth/token",
        "authorization_endpoint": "http://localhost/api/v1/auth/authorize",
        "registration_endpoint": "http://localhost/api/v1/auth/register",
        "revocation_endpoint": "http://localhost/api/v1/auth/revoke",
        "introspection_endpoint": "http://localhost/api/v1/auth/introspect",
        "grant_types_supported": ["client_credentials", "authorization_code", "refresh_token"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        "response_types_supported": ["code"],
        "code_challenge_methods_supported": ["S256"],
        "scopes_supported": SCOPES,
        "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
    }


def test_documents_name_the_configured_public_url(hub_env):
    client = create_app({**hub_env, "UAIP_PUBLIC_URL": "https://hub.example.com"}).test_client()
    mcp = client.get("/.well-known/oauth-protected-resource/api/v1/mcp", base_url="http://10.0.0.5:8443").json
    assert mcp["resource"] == "https://hub.example.com/api/v1/mcp"
    assert mcp["authorization_servers"] == ["https://hub.example.com"]
    server = client.get("/.well-known/oauth-authorization-server").json
    assert server["issuer"] == "https://hub.example.com"
    assert server["token_endpoint"] == "https://hub.example.com/api/v1/auth/token"
    assert server["authorization_endpoint"] == "https://hub.example.com/api/v1/auth/authorize"


def test_documents_follow_trusted_proxies_only(hub_env):
    forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "hub.example.com", "X-Forwarded-For": "10.0.0.1"}
    behind_proxy = create_app({**hub_env, "TRUSTED_PROXY_HOPS": "1"}).test_client()
    assert behind_proxy.get("/.well-known/oauth-protected-resource", headers=forwarded).json["resource"] == \
        "https://hub.example.com"
    direct = create_app(hub_env).test_client()
    assert direct.get("/.well-known/oauth-protected-resource", headers=forwarded).json["resource"] == "http://localhost"


@pytest.mark.parametrize("path", ["/.well-known/oauth-protected-resource", "/.well-known/oauth-authorization-server"])
def test_documents_are_read_only(client, path):
    r = client.post(path, json={})
    assert r.status_code == 405 and r.json["code"] == "METHOD_NOT_ALLOWED"
