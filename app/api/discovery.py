"""OAuth discovery documents (no auth, not rate-limited), so an MCP client that only knows `<base>/api/v1/mcp` can
find out how to get a token for it:

- RFC 9728 protected-resource metadata for each resource: the REST API at `/.well-known/oauth-protected-resource`
  and the MCP endpoint at `/.well-known/oauth-protected-resource/api/v1/mcp` (the path the MCP endpoint's 401
  challenge names in `resource_metadata`);
- RFC 8414 authorization-server metadata at `/.well-known/oauth-authorization-server`: the hub is its own
  authorization server: client credentials for API clients, and authorization code with PKCE for desktop
  agents that an operator approves (app/console/authorize.py).

Every URL comes from app/web/urls.py, so the documents name the hub as its clients reach it.
"""

from __future__ import annotations

from flask import Blueprint, jsonify

from app.auth.tokens import SCOPES
from app.web.urls import API_PREFIX, MCP_PATH, PROTECTED_RESOURCE, absolute, mcp_resource, public_base_url

blueprint = Blueprint("discovery", __name__)

AUTHORIZATION_SERVER = "/.well-known/oauth-authorization-server"
TOKEN_PATH = f"{API_PREFIX}/auth/token"



def _protected_resource(resource: str):
    return jsonify({
        "resource": resource,
        "authorization_servers": [public_base_url()],
        "scopes_supported": list(SCOPES),
        "bearer_methods_supported": ["header"],
    })


@blueprint.get(PROTECTED_RESOURCE)
def rest_api_metadata():
    return _protected_resource(public_base_url())


@blueprint.get(PROTECTED_RESOURCE + MCP_PATH)
def mcp_endpoint_metadata():
    return _protected_resource(mcp_resource())


@blueprint.get(AUTHORIZATION_SERVER)
def authorization_server_metadata():
    return jsonify({
        "issuer": public_base_url(),
        "token_endpoint": absolute(TOKEN_PATH),
        "authorization_endpoint": absolute(f"{API_PREFIX}/auth/authorize"),
        "registration_endpoint": absolute(f"{API_PREFIX}/auth/register"),
        "grant_types_supported": ["client_credentials", "authorization_code", "refresh_token"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        "response_types_supported": ["code"],
        "code_challenge_methods_supported": ["S256"],
        "scopes_supported": list(SCOPES),
    })
