"""The OpenAPI 3.1 document at GET /api/v1/openapi.json (no auth, no rate limit), built once per app.

Request bodies come from the pydantic models the views validate with (`model_json_schema()`), so the document
cannot drift from validation; everything else is written here from docs/api.md. Every error response is the
one envelope (app/web/errors.py), except the token endpoint's RFC 6749 bodies. tests/integration/test_openapi.py keeps
the document and the app's URL map equal in both directions and runs schemathesis against it.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Flask, current_app, jsonify

from app.openapi.common import OPENAPI_PATH, _security_schemes
from app.openapi.governance import _authorization_paths, _authorization_schemas, _client_paths, _client_schemas
from app.openapi.paths import _paths, _typed_paths
from app.openapi.schemas import _schemas
from app.openapi.state import _state_paths
from app.web.urls import API_PREFIX

blueprint = Blueprint("openapi", __name__)


def build_document(version: str) -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "UAIP Hub",
            "version": version,
            "description": "REST hub through which AI agents find, inspect and command IoT devices. Every response "
            "carries `X-Request-ID`; rate-limited responses carry `X-RateLimit-*` (docs/rate-limits.md).",
        },
        "servers": [{"url": "/"}],
        "tags": [{"name": name} for name in ("auth", "clients", "audit", "devices", "device-types", "commands",
                                             "events", "things", "mcp", "discovery", "system")],
        "paths": {**_paths(), **_typed_paths(), **_state_paths(), **_client_paths(), **_authorization_paths()},
        "components": {
            "schemas": {**_schemas(), **_client_schemas(), **_authorization_schemas()},
            "securitySchemes": _security_schemes(),
        },
    }


@blueprint.get(OPENAPI_PATH)
def openapi_document():
    return jsonify(current_app.extensions["uaip.openapi"])


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("uaip-hub")
    except PackageNotFoundError:
        return "0.0.0"


def init_app(app: Flask) -> None:
    app.extensions["uaip.openapi"] = build_document(_version())
    app.register_blueprint(blueprint, url_prefix=API_PREFIX)
