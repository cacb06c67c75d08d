"""OAuth discovery documents (no auth, not rate-limited), so a client that only knows the hub's URL can find out
how to get a token:

- RFC 9728 protected-resource metadata of the REST API at `/.well-known/oauth-protected-resource` (the MCP
  endpoint publishes its own, with the scopes its tools use: app/mcp/http.py);
- RFC 8414 authorization-server metadata at `/.well-known/oauth-authorization-server`: the hub is its own
  authorization server, at `<base>/api/v1/auth/{token,authorize,register,revoke,introspect}`: client
  credentials for API clients, and authorization code with PKCE for desktop agents that an operator approves
  (app/console/authorize.py).

Every URL comes from app/web/urls.py, so the documents name the hub as its clients reach it.
"""

from __future__ import annotations

from flask import Blueprint, jsonify

from app.auth.tokens import SCOPES
from app.web.resource_metadata import protected_resource_document
from app.web.urls import API_PREFIX, PROTECTED_RESOURCE, absolute, public_base_url

blueprint = Blueprint("discovery", __name__)

AUTHORIZATION_SERVER = "/.well-known/oauth-authorization-server"
# How clients authenticate at the revocation and introspection endpoints (as at the token endpoint, RFC 7009/7662).
CLIENT_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]

# The OAuth endpoints under <base>/api/v1/auth (RFC 8414 §2 names them).
OAUTH_ENDPOINTS = {
    "token_endpoint": "token",
    "authorization_endpoint": "authorize",
    "registration_endpoint": "register",
    "revocation_endpoint": "revoke",
    "introspection_endpoint": "introspect",
}


@blueprint.get(PROTECTED_RESOURCE)
def rest_api_metadata():
    return jsonify(protected_resource_document(public_base_url(), list(SCOPES)))


@blueprint.get(AUTHORIZATION_SERVER)
def authorization_server_metadata():
    """What an OAuth client library needs to find before it asks for a token. Desktop MCP clients refuse a document
    without `authorization_endpoint`, even when they end up using client credentials."""
    return jsonify({
        "issuer": public_base_url(),
        **{field: absolute(f"{API_PREFIX}/auth/{name}") for field, name in OAUTH_ENDPOINTS.items()},
        "grant_types_supported": ["client_credentials", "authorization_code", "refresh_token"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        "response_types_supported": ["code"],
        "code_challenge_methods_supported": ["S256"],
        "scopes_supported": list(SCOPES),
        "revocation_endpoint_auth_methods_supported": CLIENT_AUTH_METHODS,
        "introspection_endpoint_auth_methods_supported": CLIENT_AUTH_METHODS,
    })
