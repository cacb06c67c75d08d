"""Client management (docs/clients.md), admin scope: list, create, read, change, delete, rotate a secret, revoke
every token of a client. Secrets appear only in the answers that create them."""

from __future__ import annotations

from typing import Annotated

import pydantic
from flask import Blueprint, jsonify, url_for

from app.api.models import ClientName
from app.core.errors import APIError
from app.core.json_input import StrictModel
from app.infra.db import get_db
from app.services import clients
from app.web.authz import require_scope
from app.web.parsing import parse_body, query_int

blueprint = Blueprint("clients", __name__)

ScopeName = Annotated[str, pydantic.StringConstraints(max_length=64)]
Scopes = Annotated[
    list[ScopeName] | Annotated[str, pydantic.StringConstraints(max_length=1024)],
    pydantic.Field(description="Scope names: a list, or one space-separated string. "
                               "device:read, device:write, device:command, message:read, admin."),
]
CLIENT_ID_MAX = 128


class ClientCreate(StrictModel):
    """Body of POST /clients."""

    name: ClientName
    scopes: Scopes


class ClientUpdate(StrictModel):
    """Body of PATCH /clients/{client_id}: any of the fields; removing a scope or disabling revokes the client's
    tokens."""

    name: ClientName | None = None
    scopes: Scopes | None = None
    disabled: bool | None = None


class SecretRotation(StrictModel):
    """Body of POST /clients/{client_id}/secrets (optional)."""

    previous_secret_expires_in: Annotated[int, pydantic.Field(ge=0, le=clients.MAX_PREVIOUS_SECRET_SECONDS)] = (
        clients.DEFAULT_PREVIOUS_SECRET_SECONDS)


def _scopes(value):
    """Scope names checked here, so an unknown one is a 400 naming the field."""
    try:
        return clients.normalise_scopes(value)
    except clients.UnknownScope as exc:
        raise APIError(400, "VALIDATION_ERROR", "The request body is invalid.", {"scopes": str(exc)}) from None


def _client_id(client_id: str) -> str:
    if len(client_id) > CLIENT_ID_MAX:
        raise clients.client_not_found(client_id)
    return client_id


@blueprint.get("/clients")
@require_scope("admin")
def list_clients():
    limit = query_int("limit", 100, 1, 1000)
    offset = query_int("offset", 0, 0, 2**31 - 1)
    return jsonify(clients.list_clients(get_db(), limit, offset))


@blueprint.post("/clients")
@require_scope("admin")
def create_client():
    body = parse_body(ClientCreate)
    created = clients.create_client_view(get_db(), body.name, _scopes(body.scopes))
    response = jsonify(created)
    response.status_code = 201
    response.headers["Location"] = url_for("clients.get_client", client_id=created["client_id"])
    response.headers["Cache-Control"] = "no-store"
    return response


@blueprint.get("/clients/<client_id>")
@require_scope("admin")
def get_client(client_id: str):
    return jsonify(clients.get_client(get_db(), _client_id(client_id)))


@blueprint.patch("/clients/<client_id>")
@require_scope("admin")
def update_client(client_id: str):
    body = parse_body(ClientUpdate)
    scopes = None if body.scopes is None else _scopes(body.scopes)
    return jsonify(clients.update_client(get_db(), _client_id(client_id), name=body.name, scopes=scopes,
                                         disabled=body.disabled))


@blueprint.delete("/clients/<client_id>")
@require_scope("admin")
def delete_client(client_id: str):
    clients.delete_client(get_db(), _client_id(client_id))
    return "", 204


@blueprint.post("/clients/<client_id>/secrets")
@require_scope("admin")
def rotate_secret(client_id: str):
    body = parse_body(SecretRotation, optional=True) or SecretRotation()
    response = jsonify(clients.rotate_secret(get_db(), _client_id(client_id), body.previous_secret_expires_in))
    response.status_code = 201
    response.headers["Cache-Control"] = "no-store"
    return response


@blueprint.post("/clients/<client_id>/revoke-tokens")
@require_scope("admin")
def revoke_tokens(client_id: str):
    clients.revoke_client_tokens(get_db(), _client_id(client_id))
    return "", 204
