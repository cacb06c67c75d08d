"""`uaip-hub operators create|list|disable|reset-password`: the people who may use the console (docs/console.md).

Passwords are read from stdin (one line, so `echo "$PW" | uaip-hub operators create ...` and a prompt-free
pipeline both work); with empty stdin, or `--generate`, a password is generated and printed once. Nothing prints
a stored password: only hashes are kept.
"""

from __future__ import annotations

import json
import sys

import click
from flask.cli import with_appcontext

from app.core import audit_context
from app.infra.db import get_db
from app.services.operators import (
    ROLES,
    OperatorError,
    create_operator,
    disable_operator,
    generate_password,
    list_operators,
    reset_password,
)


def _password(generate: bool) -> tuple[str, bool]:
    """(password, generated): stdin's first line unless --generate or stdin is empty (or a terminal)."""
    if generate or sys.stdin is None or sys.stdin.isatty():
        return generate_password(), True
    line = sys.stdin.readline().rstrip("\r\n")
    return (line, False) if line else (generate_password(), True)


def _fail(exc: Exception) -> None:
    raise click.ClickException(str(exc))


@click.group("operators")
def operators_group() -> None:
    """Console operators: create, list, disable, reset-password."""


@operators_group.command("create")
@with_appcontext
@click.option("--email", required=True, help="The operator's email address (their sign-in name).")
@click.option("--role", required=True, type=click.Choice(ROLES), help="admin changes things; viewer only reads.")
@click.option("--generate", is_flag=True, help="Generate the password (printed once) instead of reading stdin.")
def create_command(email: str, role: str, generate: bool) -> None:
    """Create an operator; the password comes from stdin, or is generated and printed once."""
    audit_context.set_actor("cli")
    password, generated = _password(generate)
    try:
        operator = create_operator(get_db(), email, role, password)
    except OperatorError as exc:
        _fail(exc)
    click.echo(f"operator {operator.email} created (role {operator.role})")
    if generated:
        click.echo(f"password: {password}")
        click.echo("Store the password now: it cannot be shown again.", err=True)


@operators_group.command("list")
@with_appcontext
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object {\"operators\": [...]}.")
def list_command(as_json: bool) -> None:
    """List operators (email, role, disabled, created_at); never a password."""
    operators = list_operators(get_db())
    if as_json:
        click.echo(json.dumps({"operators": [operator.view() for operator in operators]}))
        return
    for operator in operators:
        state = "disabled" if operator.disabled else "active"
        click.echo(f"{operator.email}\t{operator.role}\t{state}\t{operator.created_at}")


@operators_group.command("disable")
@with_appcontext
@click.argument("email")
def disable_command(email: str) -> None:
    """Disable an operator: their sessions end and their desktop-agent grants are revoked."""
    audit_context.set_actor("cli")
    try:
        operator = disable_operator(get_db(), email)
    except OperatorError as exc:
        _fail(exc)
    click.echo(f"operator {operator.email} disabled")


@operators_group.command("reset-password")
@with_appcontext
@click.argument("email")
@click.option("--generate", is_flag=True, help="Generate the password (printed once) instead of reading stdin.")
def reset_password_command(email: str, generate: bool) -> None:
    """Set a new password (stdin, or generated and printed once); the operator's sessions and grants end."""
    audit_context.set_actor("cli")
    password, generated = _password(generate)
    try:
        operator = reset_password(get_db(), email, password)
    except OperatorError as exc:
        _fail(exc)
    click.echo(f"password of {operator.email} reset")
    if generated:
        click.echo(f"password: {password}")
        click.echo("Store the password now: it cannot be shown again.", err=True)
