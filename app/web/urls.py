"""The hub's public base URL, `scheme://host[:port]`: what discovery documents, Thing Descriptions, token audiences
and `WWW-Authenticate` challenges name; and the two OAuth resources (RFC 8707) built on it: the REST API (`<base>`)
and the MCP endpoint (`<base>/api/v1/mcp`).

`UAIP_PUBLIC_URL` wins when set. Otherwise it is the request's own scheme and `Host`; behind proxies
(`TRUSTED_PROXY_HOPS` > 0) werkzeug's ProxyFix, installed by app/web/pipeline.py, has already replaced them with the
trusted proxies' `X-Forwarded-Proto` / `X-Forwarded-Host`, so a client never picks the value by itself sending
those headers to a hub without proxies.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import current_app, g, request

API_PREFIX = "/api/v1"  # every route of the API lives below it (app/api registers its blueprints there)


def normalise_base(url: str) -> str:
    """Scheme and host lower-cased, default ports kept as given, no trailing slash (resources compare exactly)."""
    parts = urlsplit(url.strip())
    netloc = parts.netloc.lower()
    return f"{parts.scheme.lower()}://{netloc}{parts.path.rstrip('/')}"


def public_base_url() -> str:
    """The base URL for the current request (call inside a request context)."""
    configured = current_app.config["SETTINGS"].public_url
    if configured:
        return configured
    return normalise_base(f"{request.scheme}://{request.host}")


def published_base_url() -> str:
    """`public_base_url()` for a URL the answer will carry: when it came from the request, the answer is marked so
    that it is never cached (app/web/pipeline.py, `mark_request_urls`), or a cache could serve one client's Host
    header to everyone."""
    if not current_app.config["SETTINGS"].public_url:
        g.urls_from_request = True
    return public_base_url()


def absolute(path: str) -> str:
    """An absolute URL for a path on this hub (`/api/v1/...`)."""
    return published_base_url() + path


MCP_PATH = f"{API_PREFIX}/mcp"


def mcp_resource() -> str:
    """The MCP endpoint's resource identifier, the `aud` its tokens must carry."""
    return absolute(MCP_PATH)


def resources() -> tuple[str, str]:
    """Every resource a token can be issued for: the REST API and the MCP endpoint."""
    return public_base_url(), mcp_resource()


def canonical_resource(value: str) -> str | None:
    """A requested `resource` as the hub compares it: scheme and host lower-cased, no trailing `/`. None when it is
    not an absolute http(s) URL, or carries a query or fragment (RFC 8707 §2 forbids the fragment; no resource of
    this hub has a query), so such a value can never match."""
    parts = urlsplit(value)
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        return None
    if value != value.strip() or "#" in value or "?" in value:
        return None
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}{parts.path.rstrip('/')}"


# RFC 9728 §3: the protected-resource metadata lives under this well-known prefix.
PROTECTED_RESOURCE = "/.well-known/oauth-protected-resource"

def mcp_resource_metadata_url() -> str:
    """Where the MCP endpoint's metadata lives (RFC 9728 §3.1: the well-known prefix before the resource's path)."""
    return absolute(PROTECTED_RESOURCE + MCP_PATH)
