"""`uaip-hub clients ...`: the client management of the REST API (docs/clients.md) from the command line.

The same service functions as the API, so the same rules (two live secrets, revocation, audit). The audit log names
the actor `cli`. Nothing prompts; with `--json` a command prints exactly one JSON object on stdout.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import click
import pydantic
from flask.cli import with_appcontext

from app.api.models import ClientName
from app.core.audit_context import CLI_ACTOR, acting_as
from app.core.errors import APIError
from app.infra.db import get_db
from app.services import clients as service

PAGE = 1000
CLIENT_NAME = pydantic.TypeAdapter(ClientName)  # the API's rule for `name`, so both store the same


def _run(work: Callable[[], Any]) -> Any:
    """Run a service call as the CLI actor; a refused one ends the command with its sentence (exit status 1)."""
    try:
        with acting_as(CLI_ACTOR):
            return work()
    except APIError as exc:
        raise click.ClickException(exc.message) from None
    except service.UnknownScope as exc:
        raise click.BadParameter(str(exc), param_hint="--scopes") from None


def checked_name(value: str | None) -> str | None:
    """`--name` by the API's rule for client names (`uaip-hub clients` and `create-client`)."""
    if value is None:
        return None
    try:
        return CLIENT_NAME.validate_python(value)
    except pydantic.ValidationError:
        raise click.BadParameter("must be 1-256 printable characters, some of them visible (invisible characters "
                                 "are removed)", param_hint="--name") from None


def _print_client(client: dict[str, Any]) -> None:
    click.echo(f"client_id:  {client['client_id']}")
    click.echo(f"name:       {client['name']}")
    click.echo(f"scopes:     {' '.join(client['scopes'])}")
    click.echo(f"disabled:   {'yes' if client['disabled'] else 'no'}")
    click.echo(f"created_at: {client['created_at']}")
    for secret in client["secrets"]:
        click.echo(f"secret:     {secret['secret_id']} created {secret['created_at']} "
                   f"expires {secret['expires_at'] or 'never'} last used {secret['last_used_at'] or 'never'}")


json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")


@click.group("clients")
def clients_group() -> None:
    """Manage API clients: list, create, show, update, rotate-secret, revoke-tokens, delete."""


@clients_group.command("list")
@json_option
@with_appcontext
def list_command(as_json: bool) -> None:
    """List every client (never a secret)."""
    found: list[dict[str, Any]] = []
    while True:
        page = _run(lambda: service.list_clients(get_db(), PAGE, len(found)))
        found.extend(page["clients"])
        if not page["clients"] or len(found) >= page["total"]:
            break
    if as_json:
        click.echo(json.dumps({"clients": found, "total": len(found)}))
        return
    for client in found:
        state = "disabled" if client["disabled"] else "enabled"
        click.echo(f"{client['client_id']}  {state:8}  {' '.join(client['scopes']) or '-'}  {client['name']}")


@clients_group.command("create")
@click.option("--name", required=True, help="Human-readable client name.")
@click.option("--scopes", default="device:read", show_default=True,
              help='Space-separated, e.g. "device:read device:write".')
@json_option
@with_appcontext
def create_command(name: str, scopes: str, as_json: bool) -> None:
    """Create a client; its secret is printed once and never stored in clear."""
    created = _run(lambda: service.create_client_view(get_db(), checked_name(name), scopes))
    if as_json:
        click.echo(json.dumps({"client_id": created["client_id"], "client_secret": created["client_secret"],
                               "scopes": " ".join(created["scopes"]), "name": created["name"],
                               "secret_id": created["secrets"][0]["secret_id"]}))
        return
    click.echo(f"client_id:     {created['client_id']}")
    click.echo(f"client_secret: {created['client_secret']}")
    click.echo(f"scopes:        {' '.join(created['scopes'])}")
    click.echo("Store the secret now: it cannot be shown again.", err=True)


@clients_group.command("show")
@click.argument("client_id")
@json_option
@with_appcontext
def show_command(client_id: str, as_json: bool) -> None:
    """Show one client and its live secrets (ids and times, never the secrets)."""
    client = _run(lambda: service.get_client(get_db(), client_id))
    if as_json:
        click.echo(json.dumps(client))
    else:
        _print_client(client)


@clients_group.command("update")
@click.argument("client_id")
@click.option("--name", help="New name.")
@click.option("--scopes", help='The new scopes, space-separated (removing one revokes the client\'s tokens).')
@click.option("--disable/--enable", "disabled", default=None,
              help="Disable (revokes its tokens; the token endpoint refuses it) or enable again.")
@json_option
@with_appcontext
def update_command(client_id: str, name: str | None, scopes: str | None, disabled: bool | None,
                   as_json: bool) -> None:
    """Change a client's name, scopes or disabled state."""
    client = _run(lambda: service.update_client(get_db(), client_id, name=checked_name(name), scopes=scopes,
                                                disabled=disabled))
    if as_json:
        click.echo(json.dumps(client))
    else:
        _print_client(client)


@clients_group.command("rotate-secret")
@click.argument("client_id")
@click.option("--previous-expires-in", "previous_expires_in", show_default=True,
              type=click.IntRange(0, service.MAX_PREVIOUS_SECRET_SECONDS),
              default=service.DEFAULT_PREVIOUS_SECRET_SECONDS,
              help="Seconds the previous secret keeps working (0: it ends now).")
@json_option
@with_appcontext
def rotate_secret_command(client_id: str, previous_expires_in: int, as_json: bool) -> None:
    """Give the client a new secret, printed once; the previous one works for --previous-expires-in seconds."""
    rotated = _run(lambda: service.rotate_secret(get_db(), client_id, previous_expires_in))
    if as_json:
        click.echo(json.dumps({"client_id": client_id, **rotated}))
        return
    click.echo(f"secret_id:     {rotated['secret_id']}")
    click.echo(f"client_secret: {rotated['client_secret']}")
    click.echo("Store the secret now: it cannot be shown again.", err=True)


@clients_group.command("revoke-tokens")
@click.argument("client_id")
@with_appcontext
def revoke_tokens_command(client_id: str) -> None:
    """Refuse every token issued to the client so far."""
    _run(lambda: service.revoke_client_tokens(get_db(), client_id))
    click.echo(f"revoked every token of {client_id}")


@clients_group.command("delete")
@click.argument("client_id")
@with_appcontext
def delete_command(client_id: str) -> None:
    """Delete the client; its tokens are refused from now on."""
    _run(lambda: service.delete_client(get_db(), client_id))
    click.echo(f"deleted {client_id}")
