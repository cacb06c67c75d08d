"""`uaip-hub` commands, built on Flask's CLI (so `flask --app wsgi ...` works too)."""

from __future__ import annotations

import json
import sys

import click
from flask import current_app
from flask.cli import FlaskGroup

from app import create_app
from app.config import ConfigError
from app.db import get_db
from app.migrate import migrate as apply_migrations
from app.services.clients import UnknownScope, create_client, upsert_client

BOOTSTRAP_CLIENT_NAME = "bootstrap-admin"


@click.group(cls=FlaskGroup, create_app=create_app, add_default_commands=True, add_version_option=False)
def cli() -> None:
    """UAIP Hub: REST hub for AI agents and IoT devices."""


@cli.command("migrate")
def migrate_command() -> None:
    """Apply database migrations (idempotent; safe from several pods at once)."""
    settings = current_app.config["SETTINGS"]
    applied = apply_migrations(settings.database_url)
    click.echo(f"applied {len(applied)} migration(s)" + (": " + ", ".join(applied) if applied else "; schema up to date"))
    if settings.bootstrap_client_id and settings.bootstrap_client_secret:
        upsert_client(get_db(), settings.bootstrap_client_id, settings.bootstrap_client_secret, BOOTSTRAP_CLIENT_NAME, ["admin"])
        click.echo(f"bootstrap client {settings.bootstrap_client_id} is ready (scope admin)")
    elif settings.bootstrap_client_id or settings.bootstrap_client_secret:
        raise click.UsageError("set both UAIP_BOOTSTRAP_CLIENT_ID and UAIP_BOOTSTRAP_CLIENT_SECRET, or neither")


@cli.command("create-client")
@click.option("--name", required=True, help="Human-readable client name.")
@click.option("--scopes", default="device:read", show_default=True, help='Space-separated, e.g. "device:read device:write".')
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
def create_client_command(name: str, scopes: str, as_json: bool) -> None:
    """Create an API client; its secret is printed once and never stored in clear."""
    if not name.strip() or len(name) > 256:
        raise click.BadParameter("must be 1-256 characters", param_hint="--name")
    try:
        client, secret = create_client(get_db(), name.strip(), scopes)
    except UnknownScope as exc:
        raise click.BadParameter(str(exc), param_hint="--scopes") from None
    if as_json:
        click.echo(json.dumps({"client_id": client.client_id, "client_secret": secret, "scopes": " ".join(client.scopes)}))
    else:
        click.echo(f"client_id:     {client.client_id}")
        click.echo(f"client_secret: {secret}")
        click.echo(f"scopes:        {' '.join(client.scopes)}")
        click.echo("Store the secret now: it cannot be shown again.", err=True)


def main() -> None:
    try:
        cli.main(prog_name="uaip-hub")
    except ConfigError as exc:
        sys.exit(f"uaip-hub: configuration error: {exc}")


if __name__ == "__main__":
    main()
