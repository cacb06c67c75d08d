"""The hub's public base URL, `scheme://host[:port]`: what discovery documents, Thing Descriptions, token audiences
and `WWW-Authenticate` challenges name.

`UAIP_PUBLIC_URL` wins when set. Otherwise it is the request's own scheme and `Host`; behind proxies
(`TRUSTED_PROXY_HOPS` > 0) werkzeug's ProxyFix, installed by app/pipeline.py, has already replaced them with the
trusted proxies' `X-Forwarded-Proto` / `X-Forwarded-Host`, so a client never picks the value by itself sending
those headers to a hub without proxies.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import current_app, request


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


def absolute(path: str) -> str:
    """An absolute URL for a path on this hub (`/api/v1/...`)."""
    return public_base_url() + path
