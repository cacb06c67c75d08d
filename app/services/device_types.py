"""Device types: every SQL statement about them, and the typed check every command entry point goes through.

A type is `{"device_type", "description", "commands", "properties", "version", "created_at", "updated_at"}`;
`commands` maps a command name to `{"description", "params", "result"?, "safe", "idempotent"}` and `properties`
(state properties, docs/state.md) a name to `{"description", "schema", "writable", "observable", "unit"?}`,
schemas already accepted by app/schemas/rules.py. `version` counts changes (a PUT that changes nothing keeps it),
and the ETag is `"<version>"`.

Typed commands are validated *before* the submit transaction takes the device's row lock (`precheck_command`),
so a costly check never holds a lock another request needs (the relay's heartbeat batch updates that row). The
transaction then reads the device under its lock, with its type's version (the type row locked FOR KEY SHARE, so
a PUT of the type waits for the submit and a submit that waited for a PUT reads the new version), and
`check_command` compares: the same type version → the precheck's verdict stands; another one (the type or the
device's type changed meanwhile) → the params are checked again, against the version now current. A replaced
type therefore takes effect on every worker and pod with the next command. What is cached, per process, is the
compiled validator of each (type, version) seen, and which type version each device had when last seen (only a
hint for the precheck: a stale hint costs a second check, never a wrong verdict). A type that is deleted and
declared again starts at version 1 again, so the cache keys also hold the type's `created_at`.

Deleting a type that devices still have is refused. Registering a device (or changing its type) takes a KEY
SHARE lock on its type's row (`registry.hold_type`), and DELETE locks the row FOR UPDATE before counting devices, so a
device registered while its type is being deleted is either counted (409) or registered after the type is gone.
"""

from __future__ import annotations

import dataclasses
import threading
from collections import OrderedDict
from typing import Any

from psycopg2.extras import Json

from app.core.errors import APIError
from app.core.etags import parse_if_match
from app.core.timestamps import timestamp
from app.infra.db import Database
from app.schemas.validation import MAX_COLLECTED_ERRORS, compile_schema, params_errors
from app.services.audit import record_audit
from app.services.registry import DEVICE_COLUMNS, device_not_found, device_view, etag_for

TYPE_COLUMNS = "name, description, commands, properties, version, created_at, updated_at"
CACHED_TYPES = 256
CACHED_DEVICES = 16_384


def type_view(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "device_type": row["name"],
        "description": row["description"],
        "commands": row["commands"],
        "properties": row["properties"],
        "version": row["version"],
        "created_at": timestamp(row["created_at"]),
        "updated_at": timestamp(row["updated_at"]),
    }


def type_not_found(name: str) -> APIError:
    return APIError(404, "DEVICE_TYPE_NOT_FOUND", f"Device type '{name}' was not found.", {"device_type": name})


def precondition_failed(name: str, current_version: int | None) -> APIError:
    if current_version is None:
        return APIError(412, "PRECONDITION_FAILED", f"Device type '{name}' does not exist, so If-Match cannot match.",
                        {"device_type": name, "current_etag": None})
    return APIError(
        412, "PRECONDITION_FAILED", f"Device type '{name}' has changed since you read it (If-Match does not match).",
        {"device_type": name, "current_etag": etag_for(current_version)},
    )


def _already_exists(name: str, current_version: int) -> APIError:
    return APIError(412, "PRECONDITION_FAILED", f"Device type '{name}' already exists (If-None-Match).",
                    {"device_type": name, "current_etag": etag_for(current_version)})


@dataclasses.dataclass(frozen=True)
class Preconditions:
    """Conditional-request headers of a PUT or DELETE, parsed. `if_match`: None = no header, "*" = any existing
    version, else the versions listed (a tag this hub never issued can never match). `if_none_match` likewise."""

    if_match: str | frozenset[int] | None = None
    if_none_match: str | frozenset[int] | None = None

    @classmethod
    def from_headers(cls, if_match: str | None, if_none_match: str | None = None) -> Preconditions:
        return cls(parse_if_match(if_match), parse_if_match(if_none_match))

    def check(self, name: str, current_version: int | None) -> None:
        """412 unless the request may proceed on a type at `current_version` (None: it does not exist).
        RFC 9110 §13.1.1: If-Match, even `*`, is false when there is no current representation."""
        if self.if_match is not None:
            if current_version is None or (self.if_match != "*" and current_version not in self.if_match):
                raise precondition_failed(name, current_version)
        if self.if_none_match is not None and current_version is not None:
            if self.if_none_match == "*" or current_version in self.if_none_match:
                raise _already_exists(name, current_version)


# --- CRUD ------------------------------------------------------------------------------------------------


def find_device_type(db: Database, name: str) -> dict[str, Any] | None:
    """The type's public object, or None when no type of that name is declared (its devices are free-form)."""

    def query(cur):
        cur.execute(f"SELECT {TYPE_COLUMNS} FROM device_types WHERE name = %s", (name,))
        return cur.fetchone()

    row = db.transaction(query)
    return type_view(row) if row is not None else None


def get_device_with_type(db: Database, device_id: str, timeout: int) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """A device and its type's public object (None when undeclared), read in one transaction; 404 for no device.
    What a Thing Description and MCP's `get_device` are made of."""

    def query(cur):
        cur.execute(f"SELECT {DEVICE_COLUMNS} FROM devices WHERE device_id = %(id)s",
                    {"id": device_id, "timeout": timeout})
        device = cur.fetchone()
        if device is None:
            return None, None
        cur.execute(f"SELECT {TYPE_COLUMNS} FROM device_types WHERE name = %s", (device["device_type"],))
        return device, cur.fetchone()

    device, device_type = db.transaction(query)
    if device is None:
        raise device_not_found(device_id)
    return device_view(device), (type_view(device_type) if device_type is not None else None)


def get_device_type(db: Database, name: str) -> dict[str, Any]:
    found = find_device_type(db, name)
    if found is None:
        raise type_not_found(name)
    return found


def list_device_types(db: Database, *, limit: int, offset: int) -> tuple[list[dict[str, Any]], int]:
    def query(cur):
        cur.execute(f"SELECT {TYPE_COLUMNS} FROM device_types ORDER BY name LIMIT %s OFFSET %s", (limit, offset))
        rows = cur.fetchall()
        if offset == 0 and len(rows) < limit:
            return rows, len(rows)
        cur.execute("SELECT count(*) AS total FROM device_types")
        return rows, cur.fetchone()["total"]

    rows, total = db.transaction(query)
    return [type_view(row) for row in rows], total


def put_device_type(
    db: Database, name: str, description: str, commands: dict[str, Any], preconditions: Preconditions,
    properties: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], bool]:
    """Create or replace the type; returns (type, created). The version only moves when something changed."""
    values = {"name": name, "description": description, "commands": Json(commands),
              "properties": Json(properties or {})}

    def work(cur):
        row, created = put(cur)
        record_audit(cur, "device_type.put", f"device_type:{name}", {"version": row["version"], "created": created,
                                                                      "commands": sorted(commands)})
        return row, created

    def put(cur):
        cur.execute("SELECT version FROM device_types WHERE name = %(name)s FOR UPDATE", values)
        current = cur.fetchone()
        if current is None:
            preconditions.check(name, None)
            cur.execute(
                "INSERT INTO device_types (name, description, commands, properties) VALUES (%(name)s, "
                "%(description)s, %(commands)s, %(properties)s) ON CONFLICT (name) DO NOTHING "
                f"RETURNING {TYPE_COLUMNS}",
                values,
            )
            created = cur.fetchone()
            if created is not None:
                return created, True
            # A concurrent PUT created it first (the INSERT waited for it): replace that one.
            cur.execute("SELECT version FROM device_types WHERE name = %(name)s FOR UPDATE", values)
            current = cur.fetchone()
        preconditions.check(name, current["version"])
        cur.execute(
            "UPDATE device_types SET description = %(description)s, commands = %(commands)s, "
            "properties = %(properties)s, version = version + 1, updated_at = now() WHERE name = %(name)s "
            "AND (description, commands::jsonb, properties::jsonb) IS DISTINCT FROM "
            f"(%(description)s, %(commands)s::jsonb, %(properties)s::jsonb) RETURNING {TYPE_COLUMNS}",
            values,
        )
        replaced = cur.fetchone()
        if replaced is None:  # nothing changed
            cur.execute(f"SELECT {TYPE_COLUMNS} FROM device_types WHERE name = %(name)s", values)
            replaced = cur.fetchone()
        return replaced, False

    row, created = db.transaction(work)
    return type_view(row), created


def delete_device_type(db: Database, name: str, preconditions: Preconditions) -> None:
    """Delete the type; 404 if unknown, 412 on If-Match mismatch, 409 DEVICE_TYPE_IN_USE while devices have it."""

    def work(cur):
        cur.execute("SELECT version FROM device_types WHERE name = %s FOR UPDATE", (name,))
        current = cur.fetchone()
        if current is None:
            raise type_not_found(name)
        preconditions.check(name, current["version"])
        # A new statement, so a new snapshot: it sees every device registered before the lock above was granted.
        cur.execute("SELECT count(*) AS n FROM devices WHERE device_type = %s", (name,))
        in_use = cur.fetchone()["n"]
        if in_use:
            raise APIError(
                409, "DEVICE_TYPE_IN_USE",
                f"Device type '{name}' is still the type of {in_use} device(s); change or delete them first.",
                {"device_type": name, "devices": in_use},
            )
        cur.execute("DELETE FROM device_types WHERE name = %s", (name,))
        record_audit(cur, "device_type.delete", f"device_type:{name}", {"version": current["version"]})

    db.transaction(work)


# --- typed commands --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class CompiledType:
    name: str
    version: int
    created_at: Any
    validators: dict[str, Any]  # command name → compiled params validator

    @property
    def key(self) -> tuple:
        return (self.name, self.version, self.created_at)


class LRU:
    """A bounded, thread-safe LRU map, per process."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[tuple, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple, default: Any = None) -> Any:
        with self._lock:
            if key not in self._items:
                return default
            self._items.move_to_end(key)
            return self._items[key]

    def put(self, key: tuple, value: Any) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


compiled_types = LRU(CACHED_TYPES)  # (scope, type, version, created_at) → CompiledType
device_type_hints = LRU(CACHED_DEVICES)  # (scope, device_id) → (type, version, created_at), or None if undeclared
_UNKNOWN = object()

# Joined into the submit's device read (`d` = devices, locked FOR UPDATE): the type's identity, never its (possibly
# large) schemas. Its row is locked FOR KEY SHARE: a PUT of the type (which locks it FOR UPDATE first) waits until
# this submit commits, and a submit that waited for a PUT reads the version that PUT made.
DEVICE_TYPE_JOIN = ("LEFT JOIN LATERAL (SELECT version, created_at FROM device_types WHERE name = d.device_type "
                    "FOR KEY SHARE) t ON true")
DEVICE_TYPE_COLUMNS = "t.version AS type_version, t.created_at AS type_created_at"


def type_key(device: dict[str, Any]) -> tuple | None:
    """(type, version, created_at) of a device row read with DEVICE_TYPE_COLUMNS; None for an undeclared type."""
    if device["type_version"] is None:
        return None
    return (device["device_type"], device["type_version"], device["type_created_at"])


def _compile(row: dict[str, Any]) -> CompiledType:
    return CompiledType(
        row["name"], row["version"], row["created_at"],
        {command: compile_schema(declaration["params"]) for command, declaration in row["commands"].items()},
    )


def compiled_type(cur, scope: str, name: str, version: int, created_at: Any) -> CompiledType | None:
    """The compiled validators of type `name` at (version, created_at) if cached, else of the version the database
    holds now (which is at least as current); None when the type is not declared (any more)."""
    found = compiled_types.get((scope, name, version, created_at))
    if found is not None:
        return found
    cur.execute("SELECT name, version, created_at, commands FROM device_types WHERE name = %s", (name,))
    row = cur.fetchone()
    if row is None:
        return None
    compiled = _compile(row)
    compiled_types.put((scope, *compiled.key), compiled)
    return compiled


def _compiled_type(cur, scope: str, device: dict[str, Any]) -> CompiledType | None:
    return compiled_type(cur, scope, device["device_type"], device["type_version"], device["type_created_at"])


def command_problem(compiled: CompiledType, command: str, params: Any, pointer_prefix: str) -> APIError | None:
    """422 UNKNOWN_COMMAND or INVALID_PARAMS when the command does not fit the type; None when it does."""
    validator = compiled.validators.get(command)
    if validator is None:
        return APIError(
            422, "UNKNOWN_COMMAND",
            f"Device type '{compiled.name}' (version {compiled.version}) has no command '{command}'.",
            {"device_type": compiled.name, "type_version": compiled.version, "command": command,
             "commands": sorted(compiled.validators)},
        )
    errors, found = params_errors(validator, params, pointer_prefix)
    if not errors:
        return None
    shown = str(found)
    if found > len(errors):
        shown = f"the first {len(errors)} of {'at least ' if found >= MAX_COLLECTED_ERRORS else ''}{found}"
    return APIError(
        422, "INVALID_PARAMS",
        f"The params of '{command}' do not match device type '{compiled.name}' (version {compiled.version}): "
        f"{shown} error(s), listed in details.errors.",
        {"device_type": compiled.name, "type_version": compiled.version, "command": command, "errors": errors},
    )


@dataclasses.dataclass(frozen=True)
class Prechecked:
    """A command checked before the submit transaction: against which type version (`key`, None = the device's
    type is undeclared), and the verdict (`problem`, None = valid)."""

    key: tuple | None
    problem: APIError | None = None


def _read_unlocked(cur, scope: str, device_id: str):
    cur.execute("SELECT d.device_type, t.version AS type_version, t.created_at AS type_created_at FROM devices d "
                "LEFT JOIN device_types t ON t.name = d.device_type WHERE d.device_id = %s", (device_id,))
    device = cur.fetchone()
    if device is None:
        return None
    if type_key(device) is None:
        return None, None
    compiled = _compiled_type(cur, scope, device)
    return (compiled.key, compiled) if compiled is not None else (None, None)


def precheck_command(db: Database, scope: str, device_id: str, command: str, params: Any,
                     pointer_prefix: str) -> Prechecked | None:
    """Check a command against the device's type without any lock (and without a database round trip when this
    process knows the device and its type). None when the device does not exist: the submit transaction answers
    404, after its Idempotency-Key check. The transaction confirms the verdict with `check_command`."""
    key = device_type_hints.get((scope, device_id), _UNKNOWN)
    compiled = compiled_types.get((scope, *key)) if isinstance(key, tuple) else None
    if key is _UNKNOWN or (key is not None and compiled is None):
        found = db.transaction(lambda cur: _read_unlocked(cur, scope, device_id))
        if found is None:
            return None
        key, compiled = found
    if key is None:
        return Prechecked(None)
    return Prechecked(key, command_problem(compiled, command, params, pointer_prefix))


def check_command(cur, scope: str, device: dict[str, Any], command: str, params: Any, pointer_prefix: str,
                  prechecked: Prechecked | None = None) -> int | None:
    """Inside the submit transaction, after the device read under its lock (which joined DEVICE_TYPE_COLUMNS):
    raise 422 UNKNOWN_COMMAND or INVALID_PARAMS when the command does not fit the device's type, and return the
    type version it was checked against (None for an undeclared type). The precheck's verdict stands when it was
    made against the version read now; otherwise the params are checked again here. `scope` tells databases apart
    in the per-process caches (the database URL)."""
    key = type_key(device)
    device_type_hints.put((scope, device["device_id"]), key)
    if key is None:
        return None
    if prechecked is not None and prechecked.key == key:
        problem = prechecked.problem
    else:
        compiled = _compiled_type(cur, scope, device)
        if compiled is None:  # cannot happen while the type row is locked; be safe
            return None
        problem = command_problem(compiled, command, params, pointer_prefix)
        key = compiled.key
    if problem is not None:
        raise problem
    return key[1]
