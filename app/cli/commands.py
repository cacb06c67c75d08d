"""The app's own commands, registered on `app.cli` by create_app: migrate, create-client, clients and relay.

Being the app's, they work through `flask --app wsgi ...` as well as through `uaip-hub ...` (app/cli/__init__.py adds
the
same command objects to its group, so its help needs no app). Each needs the hub's configuration: the app is
built when the command runs (`with_appcontext`), never to show its help.
"""

from __future__ import annotations

import json
import logging
import sys

import click
from flask import Flask, current_app
from flask.cli import with_appcontext

from app.cli.clients import checked_name, clients_group
from app.cli.operators import operators_group
from app.cli.relay import run_relay
from app.core import envfile
from app.core.audit_context import CLI_ACTOR, acting_as
from app.infra.db import get_db
from app.infra.messaging import get_messaging
from app.infra.migrate import migrate as apply_migrations
from app.services.clients import UnknownScope, create_client, upsert_client

BOOTSTRAP_CLIENT_NAME = "bootstrap-admin"
log = logging.getLogger(__name__)


@click.command("migrate")
@with_appcontext
def migrate_command() -> None:
    """Apply database migrations (idempotent; safe from several pods at once)."""
    settings = current_app.config["SETTINGS"]
    applied = apply_migrations(settings.database_url)
    click.echo(f"applied {len(applied)} migration(s)"
               + (": " + ", ".join(applied) if applied else "; schema up to date"))
    if settings.bootstrap_client_id and settings.bootstrap_client_secret:
        with acting_as(CLI_ACTOR):
            upsert_client(get_db(), settings.bootstrap_client_id, settings.bootstrap_client_secret,
                          BOOTSTRAP_CLIENT_NAME, ["admin"])
        click.echo(f"bootstrap client {settings.bootstrap_client_id} is ready (scope admin)")
    elif settings.bootstrap_client_id or settings.bootstrap_client_secret:
        raise click.UsageError("set both UAIP_BOOTSTRAP_CLIENT_ID and UAIP_BOOTSTRAP_CLIENT_SECRET, or neither")


@click.command("create-client")
@with_appcontext
@click.option("--name", required=True, help="Human-readable client name.")
@click.option("--scopes", default="device:read", show_default=True,
              help='Space-separated, e.g. "device:read device:write".')
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
def create_client_command(name: str, scopes: str, as_json: bool) -> None:
    """Create an API client; its secret is printed once and never stored in clear."""
    name = checked_name(name)
    try:
        with acting_as(CLI_ACTOR):
            client, secret = create_client(get_db(), name, scopes)
    except UnknownScope as exc:
        raise click.BadParameter(str(exc), param_hint="--scopes") from None
    if as_json:
        click.echo(json.dumps({"client_id": client.client_id, "client_secret": secret,
                               "scopes": " ".join(client.scopes)}))
    else:
        click.echo(f"client_id:     {client.client_id}")
        click.echo(f"client_secret: {secret}")
        click.echo(f"scopes:        {' '.join(client.scopes)}")
        click.echo("Store the secret now: it cannot be shown again.", err=True)


def stdout_logging(level: str = "info") -> None:
    """Log to stdout when nothing configured logging yet (create_app may already have: then this is a no-op)."""
    logging.basicConfig(level=level.upper(), stream=sys.stdout, format="%(asctime)s %(levelname)s %(name)s %(message)s")


@click.command("relay")
@with_appcontext
def relay_command() -> None:
    """Run the relay: device acks and heartbeats from NATS, redelivery, expiry, offline sweep (until SIGTERM)."""
    settings = current_app.config["SETTINGS"]
    stdout_logging(settings.log_level)
    for level, message in envfile.startup_notes():
        getattr(log, level)(message)
    sys.exit(run_relay(get_db(), get_messaging(), settings))


APP_COMMANDS = (migrate_command, create_client_command, clients_group, relay_command, operators_group)


def init_app(app: Flask) -> None:
    for command in APP_COMMANDS:
        app.cli.add_command(command)
