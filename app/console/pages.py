"""The console's pages and the changes an admin makes from them. Each view reads its query, calls services and
renders a template; every list is paged (50 rows), so a page stays fast however many devices the hub has.

Viewers see overview, devices, device pages, commands and the clients list; every POST that changes something
needs the admin role (403 otherwise, before anything runs). Operators and audit are admin-only pages.
"""

from __future__ import annotations

import json
from typing import Any

from flask import current_app, redirect, render_template, request, url_for

from app.console import state_view
from app.console.base import blueprint
from app.console.chart import line_chart
from app.console.forms import FormValueError, fields_for_object, parse_fields, parse_json_object
from app.console.session import ConsoleError, admin_only, current_operator, signed_in
from app.core.errors import APIError
from app.core.json_input import is_identifier
from app.core.statuses import DEVICE_STATUSES, STATUSES
from app.core.text import NotAName, visible_name
from app.infra.db import get_db
from app.schemas.thing_description import thing_description
from app.services import audit, oauth, operators, registry
from app.services import clients as client_service
from app.services import console as console_queries
from app.services.clients import UnknownScope, create_client
from app.services.commands.messages import list_device_commands
from app.services.commands.submit import CommandSpec
from app.services.device_types import get_device_with_type
from app.web.delivery import deliver
from app.web.urls import public_base_url

PAGE = 50


def _settings():
    return current_app.config["SETTINGS"]


def _page() -> int:
    try:
        return max(0, min(int(request.args.get("page", "0")), 100_000))
    except ValueError:
        return 0


def _choice(name: str, allowed: tuple[str, ...]) -> str | None:
    value = request.args.get(name) or None
    return value if value in allowed else None


def _identifier(name: str) -> str | None:
    value = (request.args.get(name) or "").strip()
    return value if value and is_identifier(value) else None


NOTICES = {
    "command-sent": "Command submitted; it appears under Recent commands.",
    "desired-set": "Desired state updated.",
    "client-disabled": "Client disabled: it gets no new tokens.",
    "client-enabled": "Client enabled.",
    "tokens-revoked": "Every token of the client issued so far is revoked.",
    "operator-updated": "Operator updated.",
    "grant-revoked": "Grant revoked: the agent's tokens no longer work.",
}


def _notices() -> list[str]:
    """The confirmation of the change that redirected here (`?notice=<key>`: only the hub's own sentences)."""
    notice = NOTICES.get(request.args.get("notice", ""))
    return [notice] if notice else []


# --- overview ----------------------------------------------------------------------------------------------------


def _overview_live() -> dict[str, Any]:
    db = get_db()
    return {
        "device_counts": registry.count_devices_by_status(db, _settings().heartbeat_timeout_seconds),
        "command_counts": console_queries.command_counts_last_hour(db),
        "activity": console_queries.recent_activity(db),
    }


@blueprint.get("/", strict_slashes=False)
@signed_in
def overview():
    return render_template("console/overview.html", page="Overview", **_overview_live())


# --- devices -----------------------------------------------------------------------------------------------------


def _devices_live() -> dict[str, Any]:
    status, device_type = _choice("status", DEVICE_STATUSES), _identifier("type")
    page = _page()
    devices, total = registry.list_devices(
        get_db(), status=status, device_type=device_type, capability=_identifier("capability"),
        limit=PAGE, offset=page * PAGE, timeout=_settings().heartbeat_timeout_seconds,
    )
    return {"devices": devices, "total": total, "page_no": page, "has_next": (page + 1) * PAGE < total,
            "status": status, "device_type": device_type, "statuses": DEVICE_STATUSES}


@blueprint.get("/devices")
@signed_in
def devices():
    return render_template("console/devices.html", page="Devices", **_devices_live())


def _writable_properties(device_type: dict[str, Any] | None) -> dict[str, Any]:
    declared = (device_type or {}).get("properties") or {}
    return {name: spec for name, spec in declared.items() if isinstance(spec, dict) and spec.get("writable")}


def _numeric_properties(device_type: dict[str, Any] | None, state: dict[str, Any] | None) -> list[str]:
    declared = (device_type or {}).get("properties") or {}
    names = [name for name, spec in declared.items()
             if isinstance(spec, dict) and (spec.get("schema") or {}).get("type") in ("number", "integer")]
    if not names and state:
        names = [name for name, value in (state.get("reported") or {}).items()
                 if isinstance(value, (int, float)) and not isinstance(value, bool)]
    return names


def _device_commands(device_id: str) -> dict[str, Any]:
    commands, total = list_device_commands(get_db(), device_id, status=None, limit=20, offset=0)
    return {"commands": commands, "commands_total": total, "commands_device": device_id}


@blueprint.get("/devices/<device_id>")
@signed_in
def device(device_id: str):
    device, device_type = get_device_with_type(get_db(), device_id, _settings().heartbeat_timeout_seconds)
    state = state_view.load_state(device_id)
    numeric = _numeric_properties(device_type, state)
    chosen = request.args.get("property") if request.args.get("property") in numeric else (numeric or [None])[0]
    chart = None
    if chosen:
        history = state_view.load_history(device_id, chosen)
        chart = line_chart(history) if history else None
    command_forms = {
        name: {"description": spec.get("description", ""), "fields": fields_for_object(spec.get("params"))}
        for name, spec in ((device_type or {}).get("commands") or {}).items()
    }
    desired_fields = {name: fields_for_object({"type": "object", "properties": {name: spec.get("schema", {})}})[0]
                      for name, spec in _writable_properties(device_type).items()}
    td = json.dumps(thing_description(device, device_type, public_base_url()), indent=2, ensure_ascii=False)
    return render_template(
        "console/device.html", page="Devices", device=device, device_type=device_type, state=state,
        numeric=numeric, chosen=chosen, chart=chart,
        command_forms=command_forms, desired_fields=desired_fields, td=td, notices=_notices(),
        **_device_commands(device_id),
    )


@blueprint.post("/devices/<device_id>/commands")
@signed_in
@admin_only
def send_command(device_id: str):
    device, device_type = get_device_with_type(get_db(), device_id, _settings().heartbeat_timeout_seconds)
    name = request.form.get("command", "").strip()
    try:
        declared = ((device_type or {}).get("commands") or {}).get(name)
        fields = fields_for_object(declared.get("params")) if declared else None
        if fields is not None:
            params = parse_fields(fields, request.form, prefix="param.")
        else:
            params = parse_json_object(request.form.get("params"), "params")
    except FormValueError as exc:
        raise ConsoleError(400, str(exc)) from None
    if not name or not is_identifier(name):
        raise ConsoleError(400, "A command name is 1-128 letters, digits and . _ : -")
    operator = current_operator()
    spec = CommandSpec(device_id=device_id, command=name, params=params, qos=1, priority=5,
                       ttl_ms=_settings().default_message_ttl_ms, source="console")
    submitted, _ = deliver(spec, client_id=f"operator:{operator.email}", wait_seconds=0, idempotency=None)
    return redirect(url_for("console.device", device_id=device_id, notice="command-sent",
                            message_id=submitted.message_id), code=303)


@blueprint.post("/devices/<device_id>/desired")
@signed_in
@admin_only
def set_desired(device_id: str):
    _, device_type = get_device_with_type(get_db(), device_id, _settings().heartbeat_timeout_seconds)
    writable = _writable_properties(device_type)
    try:
        if writable:
            fields = fields_for_object({"type": "object",
                                        "properties": {n: s.get("schema", {}) for n, s in writable.items()}})
            patch = parse_fields(fields, request.form, prefix="desired.")
        else:
            patch = parse_json_object(request.form.get("desired"), "desired")
    except FormValueError as exc:
        raise ConsoleError(400, str(exc)) from None
    if not patch:
        raise ConsoleError(400, "Nothing to set: fill in at least one value.")
    state_view.set_desired(device_id, patch, f"operator:{current_operator().email}")  # 422s: the error page
    return redirect(url_for("console.device", device_id=device_id, notice="desired-set"), code=303)


# --- commands ----------------------------------------------------------------------------------------------------


@blueprint.get("/commands")
@signed_in
def commands():
    status, device_id, page = _choice("status", STATUSES), _identifier("device_id"), _page()
    rows, has_next = console_queries.list_commands(get_db(), status=status, device_id=device_id, limit=PAGE,
                                                   offset=page * PAGE)
    return render_template("console/commands.html", page="Commands", commands=rows, has_next=has_next,
                           page_no=page, status=status, device_id=device_id, statuses=STATUSES)


# --- clients -----------------------------------------------------------------------------------------------------


@blueprint.get("/clients")
@signed_in
def clients():
    page = _page()
    found = client_service.list_clients(get_db(), limit=PAGE, offset=page * PAGE, newest_first=True)
    total = found["total"]
    return render_template("console/clients.html", page="Clients", clients=found["clients"], total=total,
                           page_no=page,
                           has_next=(page + 1) * PAGE < total, scopes=operators.ROLE_SCOPES["admin"],
                           notices=_notices(), shown_secret=None)


@blueprint.post("/clients")
@signed_in
@admin_only
def create_client_submit():
    try:
        name = visible_name(request.form.get("name", ""))  # the API's rule for client names
    except NotAName as exc:
        raise ConsoleError(400, f"A client name {exc}.") from None
    if len(name) > 256:
        raise ConsoleError(400, "A client name has 1 to 256 characters.")
    try:
        client, secret = create_client(get_db(), name, request.form.getlist("scopes"))
    except UnknownScope as exc:
        raise ConsoleError(400, str(exc)) from None
    if not client.scopes:
        raise ConsoleError(400, "Choose at least one scope.")
    # The secret is rendered into this one answer (not a redirect: it must not survive in a flash or a URL).
    return render_template("console/secret.html", page="Clients", client_id=client.client_id, name=client.name,
                           secret=secret, action="created")


@blueprint.post("/clients/<client_id>/rotate-secret")
@signed_in
@admin_only
def rotate_secret(client_id: str):
    try:
        rotated = client_service.rotate_secret(get_db(), client_id)
    except APIError as exc:
        raise ConsoleError(exc.status, exc.message) from None
    return render_template("console/secret.html", page="Clients", client_id=client_id, name=None,
                           secret=rotated["client_secret"], action="rotated")


@blueprint.post("/clients/<client_id>/disable")
@signed_in
@admin_only
def disable_client(client_id: str):
    disabled = request.form.get("disabled", "true") != "false"
    try:
        client_service.update_client(get_db(), client_id, disabled=disabled)  # disabling revokes its tokens
    except APIError as exc:
        raise ConsoleError(exc.status, exc.message) from None
    return redirect(url_for("console.clients", notice="client-disabled" if disabled else "client-enabled"),
                    code=303)


@blueprint.post("/clients/<client_id>/revoke-tokens")
@signed_in
@admin_only
def revoke_client_tokens(client_id: str):
    try:
        client_service.revoke_client_tokens(get_db(), client_id)
    except APIError as exc:
        raise ConsoleError(exc.status, exc.message) from None
    return redirect(url_for("console.clients", notice="tokens-revoked"), code=303)


# --- operators, audit, grants ------------------------------------------------------------------------------------


@blueprint.get("/operators")
@signed_in
@admin_only
def operators_page():
    return render_template("console/operators.html", page="Operators", operators=operators.list_operators(get_db()),
                           roles=operators.ROLES, notices=_notices())


@blueprint.post("/operators")
@signed_in
@admin_only
def create_operator_submit():
    password = operators.generate_password()
    try:
        created = operators.create_operator(get_db(), request.form.get("email", ""), request.form.get("role", ""),
                                            password)
    except operators.OperatorError as exc:
        raise ConsoleError(409 if isinstance(exc, operators.OperatorExists) else 400, str(exc)) from None
    return render_template("console/secret.html", page="Operators", client_id=created.email, name=created.role,
                           secret=password, action="operator")


@blueprint.post("/operators/<email>")
@signed_in
@admin_only
def update_operator_submit(email: str):
    role = request.form.get("role") or None
    disabled = {"true": True, "false": False}.get(request.form.get("disabled", ""))
    if email == current_operator().email and (disabled or role == "viewer"):
        raise ConsoleError(400, "You cannot disable or demote yourself; ask another admin.")
    try:
        operators.update_operator(get_db(), email, role=role, disabled=disabled)
    except operators.OperatorError as exc:
        raise ConsoleError(404 if isinstance(exc, operators.UnknownOperator) else 400, str(exc)) from None
    return redirect(url_for("console.operators_page", notice="operator-updated"), code=303)


@blueprint.get("/audit")
@signed_in
@admin_only
def audit_page():
    cursor = request.args.get("cursor") or None
    try:
        before_id = audit.decode_cursor(cursor) if cursor else None
    except APIError:
        before_id = None  # a mangled cursor in the address bar: start at the newest entries
    found = audit.list_audit(get_db(), actor=request.args.get("actor") or None,
                             action=request.args.get("action") or None, target=request.args.get("target") or None,
                             limit=PAGE, before_id=before_id)
    return render_template("console/audit.html", page="Audit", available=True, entries=found["entries"],
                           next_cursor=found["next_cursor"], filters=request.args)


@blueprint.get("/grants")
@signed_in
def grants():
    operator = current_operator()
    everyone = operator.is_admin and request.args.get("all") == "1"
    rows = oauth.list_grants(get_db(), None if everyone else operator.email)
    return render_template("console/grants.html", page="Grants", grants=rows, everyone=everyone, notices=_notices())


@blueprint.post("/grants/<grant_id>/revoke")
@signed_in
def revoke_grant(grant_id: str):
    """Operators revoke their own grants (viewers too: it only takes away); admins anyone's."""
    operator = current_operator()
    if not oauth.revoke_grant(get_db(), grant_id, None if operator.is_admin else operator.email):
        raise ConsoleError(404, "No such live grant of yours.")
    return redirect(url_for("console.grants", notice="grant-revoked"), code=303)


# --- live parts (refreshed by static/console.js when the event stream says something changed) -----------------

LIVE = {
    "overview": ("console/_overview_live.html", _overview_live),
    "devices": ("console/_devices_table.html", _devices_live),
}


@blueprint.get("/live/<name>")
@signed_in
def live(name: str):
    if name == "device-state":
        device_id = _identifier("device_id")
        if device_id is None:
            raise ConsoleError(400, "device_id is required.")
        device, device_type = get_device_with_type(get_db(), device_id, _settings().heartbeat_timeout_seconds)
        return render_template("console/_device_state.html", device=device, device_type=device_type,
                               state=state_view.load_state(device_id))
    if name == "device-commands":
        device_id = _identifier("device_id")
        if device_id is None:
            raise ConsoleError(400, "device_id is required.")
        return render_template("console/_device_commands.html", **_device_commands(device_id))
    if name not in LIVE:
        raise ConsoleError(404, "No such live part.")
    template, load = LIVE[name]
    return render_template(template, **load())
