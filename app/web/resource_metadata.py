"""RFC 9728 protected-resource metadata, the one shape both resources of the hub publish: the REST API's
document (app/api/discovery.py) and the MCP endpoint's (app/mcp/http.py), each with the scopes it uses."""

from __future__ import annotations

from typing import Any

from app.web.urls import public_base_url


def protected_resource_document(resource: str, scopes: list[str]) -> dict[str, Any]:
    """The document for `resource`; the hub is its own (and only) authorization server."""
    return {
        "resource": resource,
        "authorization_servers": [public_base_url()],
        "scopes_supported": scopes,
        "bearer_methods_supported": ["header"],
    }
