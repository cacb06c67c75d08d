"""W3C Web of Things Thing Descriptions (TD 1.1) of devices, built from the device and its declared type.

Properties `status` and `last_seen` are read through `GET /api/v1/devices/{id}/properties/{name}`; so is each
state property the type declares (docs/state.md), which a writable one is also written through (PUT, the desired
value) and an observable one observed through (`.../observe`, long poll); each declared
command is an action (`synchronous: false`: the invocation answers when the command is stored and queued, the
outcome is the message at the answer's `Location`) invoked through `POST /api/v1/devices/{id}/commands/{command}{?wait}`
(a URI template: a consumer fills `wait` to get the outcome in the answer) and followed through its `queryaction`
form, `GET /api/v1/messages/{message_id}`. Every href is absolute, every form names the OAuth2 scope it needs.

A command's params and result schemas are JSON Schema 2020-12; a TD data schema is a smaller vocabulary, so each
schema is translated (`data_schema`): local `$ref`s are inlined and `allOf` merged into one schema, a `type` list
becomes `oneOf`, `anyOf` becomes `oneOf`, `prefixItems` becomes TD's list form of `items`, duplicate `enum`
values are dropped; keywords TD has no term for (`additionalProperties`, `patternProperties`, `not`,
`if`/`then`/`else`, `dependent*`, `contains`, `uniqueItems`, ...) are left out. The TD describes; the hub still
validates every command against the declared schema itself. Titles and descriptions lose control characters.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from app.core.statuses import DEVICE_STATUSES
from app.core.text import scrub, without_controls
from app.schemas.rules import local_resolver
from app.schemas.validation import canonical

TD_CONTEXT = "https://www.w3.org/2022/wot/td/v1.1"
MEDIA_TYPE = "application/td+json"
SECURITY_NAME = "oauth2_sc"

# TD 1.1 data schema terms copied as they are (their 2020-12 meaning is the same).
COPIED_TERMS = ("const", "default", "readOnly", "writeOnly", "format", "contentEncoding", "contentMediaType",
                "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf", "minLength", "maxLength",
                "pattern", "minItems", "maxItems", "required")
TEXT_TERMS = ("title", "description")

DEVICE_URN_PREFIX = "urn:uaip:device:"


def device_urn(device_id: str) -> str:
    """A device's URI: its Thing Description's `id`, and the resource an MCP `subscriptions/listen` names."""
    return DEVICE_URN_PREFIX + device_id


def _merge(into: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """`extra`'s terms added to `into` where `into` has none; properties merged, `required` united."""
    for key, value in extra.items():
        if key == "properties" and "properties" in into:
            into["properties"] = {**value, **into["properties"]}
        elif key == "required" and "required" in into:
            into["required"] = list(dict.fromkeys([*into["required"], *value]))
        else:
            into.setdefault(key, value)
    return into


def _unique(values: list[Any]) -> list[Any]:
    seen, unique = set(), []
    for value in values:
        key = canonical(value)
        if key not in seen:
            seen.add(key)
            unique.append(value)
    return unique


def _translate(schema: Any, resolve: Callable[[str], Any]) -> dict[str, Any]:
    if not isinstance(schema, dict):
        return {}  # `true` (anything goes); a `false` subschema is left out by the caller
    out: dict[str, Any] = {}
    for term in TEXT_TERMS:
        if isinstance(schema.get(term), str):
            out[term] = without_controls(schema[term])
    for term in COPIED_TERMS:
        if term in schema:
            out[term] = schema[term]
    if isinstance(schema.get("unit"), str):
        out["unit"] = schema["unit"]
    if schema.get("enum"):
        out["enum"] = _unique(schema["enum"])
    kind = schema.get("type")
    if isinstance(kind, str):
        out["type"] = kind
    elif isinstance(kind, list) and len(kind) == 1:
        out["type"] = kind[0]
    alternatives = schema.get("oneOf") or schema.get("anyOf")
    if alternatives:
        out["oneOf"] = [_translate(branch, resolve) for branch in alternatives if branch is not False]
    elif isinstance(kind, list) and len(kind) > 1:
        out["oneOf"] = [{"type": each} for each in kind]
    if isinstance(schema.get("properties"), dict):
        out["properties"] = {name: _translate(child, resolve) for name, child in schema["properties"].items()
                             if child is not False}
    if schema.get("prefixItems"):
        out["items"] = [_translate(child, resolve) for child in schema["prefixItems"]]
        if schema.get("items") is False:
            out.setdefault("maxItems", len(schema["prefixItems"]))
    elif "items" in schema and schema["items"] is not False:
        out["items"] = _translate(schema["items"], resolve)
    if "$ref" in schema:
        _merge(out, _translate(resolve(schema["$ref"]), resolve))
    for part in schema.get("allOf", ()):
        _merge(out, _translate(part, resolve))
    return out


def data_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """A declared params/result schema (accepted by app/schemas/rules.py: local, acyclic refs) as a TD data schema."""
    return _translate(schema, local_resolver(schema))


def _form(href: str, op: str, scope: str) -> dict[str, Any]:
    return {"href": href, "op": op, "contentType": "application/json", "scopes": [scope]}


def _properties(device_url: str) -> dict[str, Any]:
    def form(name: str) -> list[dict[str, Any]]:
        return [_form(f"{device_url}/properties/{name}", "readproperty", "device:read")]

    return {
        "status": {
            "title": "Status", "type": "string", "enum": list(DEVICE_STATUSES), "readOnly": True,
            "observable": False, "forms": form("status"),
            "description": "pending until the first heartbeat, then online, offline (no heartbeat in time) or error.",
        },
        "last_seen": {
            "title": "Last seen", "oneOf": [{"type": "string", "format": "date-time"}, {"type": "null"}],
            "readOnly": True, "observable": False, "forms": form("last_seen"),
            "description": "When the device last sent a heartbeat (RFC 3339), or null if it never did.",
        },
    }


def _state_property(device_url: str, name: str, declared: dict[str, Any]) -> dict[str, Any]:
    """A declared state property: its value schema as a TD data schema, `readOnly` unless writable, and the forms
    to read it, write it (writable only) and observe it (observable only): by long poll first, the form a WoT
    consumer picks by default, then as Server-Sent Events on the same href."""
    href = f"{device_url}/properties/{quote(name, safe='')}"
    writable, observable = declared.get("writable", False), declared.get("observable", True)
    prop: dict[str, Any] = {"title": name}
    schema = declared.get("schema", {})
    prop.update({key: value for key, value in (data_schema(schema) if isinstance(schema, dict) else {}).items()
                 if key not in ("readOnly", "writeOnly")})
    if declared.get("description"):
        prop["description"] = without_controls(declared["description"])
    if declared.get("unit"):
        prop["unit"] = without_controls(declared["unit"])
    prop.update(readOnly=not writable, writeOnly=False, observable=observable)
    forms = [_form(href, "readproperty", "device:read")]
    if writable:
        forms.append(_form(href, "writeproperty", "device:command"))
    if observable:
        observe = _form(f"{href}/observe", "observeproperty", "device:read")
        observe["subprotocol"] = "longpoll"
        stream = _form(f"{href}/observe", "observeproperty", "device:read")
        stream.update(subprotocol="sse", contentType="text/event-stream")
        forms += [observe, stream]
    prop["forms"] = forms
    return prop


# The action forms' URI variables (TD 1.1 §5.3.1.4: an href may be a URI template, RFC 6570): `wait` is the
# invocation's long poll (seconds the answer waits for the device's outcome), `message_id` the id of an invocation
# the answer gave, for the `queryaction` form that follows it.
ACTION_URI_VARIABLES = {
    "wait": {"type": "integer", "minimum": 0, "maximum": 30,
             "description": "Seconds to wait for the device's outcome before answering (default 0: answer at once)."},
    "message_id": {"type": "string", "description": "The message_id of an invocation's answer (queryaction)."},
}


def _action(base_url: str, device_url: str, name: str, command: dict[str, Any]) -> dict[str, Any]:
    action: dict[str, Any] = {"title": name}
    if command.get("description"):
        action["description"] = without_controls(command["description"])
    action.update(
        safe=command.get("safe", False), idempotent=command.get("idempotent", False), synchronous=False,
        input=data_schema(command["params"]),
    )
    if command.get("result") is not None:
        action["output"] = data_schema(command["result"])
    action["uriVariables"] = ACTION_URI_VARIABLES
    invoke = _form(f"{device_url}/commands/{quote(name, safe='')}{{?wait}}", "invokeaction", "device:command")
    invoke["response"] = {"contentType": "application/json"}
    query = _form(f"{base_url}/api/v1/messages/{{message_id}}", "queryaction", "message:read")
    query["htv:methodName"] = "GET"
    action["forms"] = [invoke, query]
    return action


def thing_description(device: dict[str, Any], device_type: dict[str, Any] | None, base_url: str) -> dict[str, Any]:
    """The TD of `device` (a §4 device object) whose type is `device_type` (the type object, None = undeclared)."""
    device_url = f"{base_url}/api/v1/devices/{quote(device['device_id'], safe='')}"
    if device_type is not None:
        about = f"A device of type '{device_type['device_type']}'"
        if device_type["description"]:
            about += ": " + without_controls(device_type["description"])
    else:
        about = (f"A device of type '{without_controls(device['device_type'])}', which declares no commands (any "
                 "command is accepted)")
    td: dict[str, Any] = {
        "@context": TD_CONTEXT,
        "id": device_urn(device["device_id"]),
        "title": without_controls(device["name"]) or device["device_id"],
        "description": about.rstrip(".") + ". Actions take query parameters wait (0-30 s), qos (0-2), "
                       "priority (0-10) and ttl_ms, and an Idempotency-Key header; they answer 202 with the "
                       "message's Location, or "
                       "200 with the finished message when wait is given.",
        "created": device["registered_at"],
        "modified": device["updated_at"],
        "securityDefinitions": {
            SECURITY_NAME: {
                "scheme": "oauth2", "flow": "client", "token": f"{base_url}/api/v1/auth/token",
                "scopes": ["device:read", "device:command", "message:read"],
            },
        },
        "security": [SECURITY_NAME],
        "properties": _properties(device_url),
    }
    if device_type is not None:
        for name, declared in (device_type.get("properties") or {}).items():
            td["properties"][name] = _state_property(device_url, name, declared)
    if device_type is not None:
        td["version"] = {"instance": str(device_type["version"])}
        td["actions"] = {name: _action(base_url, device_url, name, command)
                         for name, command in device_type["commands"].items()}
    # Every string written by a client (enum values, defaults and examples too), keys included (app/core/text.py).
    return scrub(td)
