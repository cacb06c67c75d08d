"""Device types (docs/device-types.md): declare the commands a type's devices accept, with JSON Schemas.

PUT and DELETE need `admin`, reading needs `device:read`. A PUT body is `{"description", "commands"}`; each
command's schemas are checked by app/schemas/rules.py (400 INVALID_SCHEMA naming the command, the schema and the
place in it). Conditional requests follow RFC 9110: `If-Match` (412 on mismatch, and when the type does not
exist — even for `*`), `If-None-Match: *` on PUT (create only), `If-None-Match` on GET (304).
"""

from __future__ import annotations

import re
from typing import Any

import pydantic
from flask import Blueprint, current_app, jsonify, request, url_for

from app.api.models import (
    MAX_PROPERTIES,
    PROPERTY_NAME_PATTERN,
    RESERVED_PROPERTIES,
    TYPE_NAME,
    DeviceTypeBody,
    PropertyDeclaration,
)
from app.core.errors import APIError
from app.infra.db import get_db
from app.infra.messaging import get_messaging
from app.schemas.rules import SchemaProblem, check_schema
from app.services import device_types
from app.services.commands import retype
from app.services.registry import etag_for
from app.web.authz import require_scope
from app.web.parsing import if_none_match_hits, parse_body, query_int

blueprint = Blueprint("device_types", __name__)
PROPERTY_NAME = re.compile(PROPERTY_NAME_PATTERN)


def _is_type_name(name: str) -> bool:
    try:
        TYPE_NAME.validate_python(name)
        return True
    except pydantic.ValidationError:
        return False


def checked_type_name(name: str) -> str:
    """A name that cannot exist is simply not found; it never reaches SQL."""
    if not _is_type_name(name):
        raise device_types.type_not_found(name[:64])
    return name


def _declared_commands(body: DeviceTypeBody) -> dict[str, Any]:
    """The commands as stored (defaults filled in), after every schema passed app/schemas/rules.py."""
    declared = {}
    for name, command in body.commands.items():
        stored = {"description": command.description, "params": command.params}
        if command.result is not None:
            stored["result"] = command.result
        stored.update(safe=command.safe, idempotent=command.idempotent)
        for kind in ("params", "result"):
            if kind in stored:
                try:
                    check_schema(stored[kind])
                except SchemaProblem as problem:
                    raise APIError(
                        400, "INVALID_SCHEMA", f"Command '{name}': the {kind} schema is refused: {problem.problem}",
                        {"command": name, "schema": kind, "pointer": problem.at, "problem": problem.problem},
                    ) from None
        declared[name] = stored
    return declared


def _refused_property(name: str, problem: str, pointer: str = "") -> APIError:
    return APIError(400, "INVALID_SCHEMA", f"Property '{name[:64]}' is refused: {problem}",
                    {"property": name[:64], "pointer": pointer, "problem": problem})


def _declared_properties(body: DeviceTypeBody) -> dict[str, Any]:
    """The state properties as stored (defaults filled in); 400 INVALID_SCHEMA naming the first bad one."""
    if len(body.properties) > MAX_PROPERTIES:
        raise APIError(400, "INVALID_SCHEMA", f"A device type declares at most {MAX_PROPERTIES} properties; this one "
                       f"declares {len(body.properties)}.", {"properties": len(body.properties),
                                                            "max_properties": MAX_PROPERTIES})
    declared = {}
    for name, raw in body.properties.items():
        if not PROPERTY_NAME.fullmatch(name):
            raise _refused_property(name, f"a property name must match {PROPERTY_NAME_PATTERN}.")
        if name in RESERVED_PROPERTIES:
            raise _refused_property(name, f"'{name}' is reserved: every device's Thing Description has it.")
        try:
            declaration = PropertyDeclaration.model_validate(raw)
        except pydantic.ValidationError as exc:
            error = exc.errors(include_url=False, include_context=False, include_input=False)[0]
            where = ".".join(str(part) for part in error["loc"]) or "declaration"
            raise _refused_property(name, f"{where}: {error['msg']}") from None
        try:
            check_schema(declaration.schema_, object_root=False)
        except SchemaProblem as problem:
            raise _refused_property(name, f"the schema is refused: {problem.problem}", problem.at) from None
        stored = {"description": declaration.description, "schema": declaration.schema_,
                  "writable": declaration.writable, "observable": declaration.observable}
        if declaration.unit is not None:
            stored["unit"] = declaration.unit
        declared[name] = stored
    return declared


def _type_response(device_type: dict[str, Any], status: int = 200):
    response = jsonify(device_type)
    response.status_code = status
    response.headers["ETag"] = etag_for(device_type["version"])
    return response


def _preconditions() -> device_types.Preconditions:
    headers = request.headers
    return device_types.Preconditions.from_headers(headers.get("If-Match"), headers.get("If-None-Match"))


@blueprint.put("/device-types/<device_type>")
@require_scope("admin")
def put_device_type(device_type: str):
    name = device_type
    if not _is_type_name(name):
        raise APIError(400, "VALIDATION_ERROR", "The device type name is invalid.",
                       {"device_type": "must be 1-64 characters of A-Z a-z 0-9 . _ : -"})
    body = parse_body(DeviceTypeBody)
    commands = _declared_commands(body)
    properties = _declared_properties(body)
    stored, created = retype.put_device_type(get_db(), get_messaging(), name, body.description, commands,
                                             _preconditions(), properties)
    response = _type_response(stored, 201 if created else 200)
    if created:
        response.headers["Location"] = url_for("device_types.get_device_type", device_type=name)
    return response


@blueprint.get("/device-types")
@require_scope("device:read")
def list_device_types():
    limit = query_int("limit", 100, 1, 1000)
    offset = query_int("offset", 0, 0, 10_000_000)
    items, total = device_types.list_device_types(get_db(), limit=limit, offset=offset)
    return jsonify({"device_types": items, "total": total, "limit": limit, "offset": offset})


@blueprint.get("/device-types/<device_type>")
@require_scope("device:read")
def get_device_type(device_type: str):
    found = device_types.get_device_type(get_db(), checked_type_name(device_type))
    etag = etag_for(found["version"])
    if if_none_match_hits(etag):
        response = current_app.response_class(status=304)
        response.headers["ETag"] = etag
        return response
    return _type_response(found)


@blueprint.delete("/device-types/<device_type>")
@require_scope("admin")
def delete_device_type(device_type: str):
    device_types.delete_device_type(get_db(), checked_type_name(device_type), _preconditions())
    return "", 204
