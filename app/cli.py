"""`uaip-hub` commands, built on Flask's CLI.

migrate, create-client and relay are the app's own commands (registered on `app.cli` by create_app), so
`flask --app wsgi migrate` works as well as `uaip-hub migrate`. simulate is a device-side client of a running
hub: it needs no hub configuration, so it lives on the `uaip-hub` group only.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading

import click
from flask import current_app
from flask import Flask
from flask.cli import FlaskGroup, with_appcontext

from app import create_app, tracing
from app.config import ConfigError
from app.db import get_db
from app.messaging import get_messaging
from app.migrate import migrate as apply_migrations
from app.services.clients import UnknownScope, create_client, upsert_client

BOOTSTRAP_CLIENT_NAME = "bootstrap-admin"


@click.group(cls=FlaskGroup, create_app=create_app, add_default_commands=True, add_version_option=False)
def cli() -> None:
    """UAIP Hub: REST hub for AI agents and IoT devices."""


@click.command("migrate")
@with_appcontext
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


@click.command("create-client")
@with_appcontext
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


def _default_logging(level: str = "info") -> None:
    """Log to stdout when nothing configured logging yet (create_app may already have: then this is a no-op)."""
    logging.basicConfig(level=level.upper(), stream=sys.stdout, format="%(asctime)s %(levelname)s %(name)s %(message)s")


@click.command("relay")
@with_appcontext
def relay_command() -> None:
    """Run the relay: device acks and heartbeats from NATS, redelivery, expiry, offline sweep (until SIGTERM)."""
    from app.relay import run_relay

    settings = current_app.config["SETTINGS"]
    _default_logging(settings.log_level)
    sys.exit(run_relay(get_db(), get_messaging(), settings))


@cli.command("simulate", with_appcontext=False)
@click.option("--devices", "count", type=click.IntRange(1, 10_000), default=1, show_default=True, help="How many devices.")
@click.option("--hub-url", envvar="UAIP_HUB_URL", default="http://127.0.0.1:8443", show_default=True)
@click.option("--nats-url", envvar="NATS_URL", default="nats://127.0.0.1:4222", show_default=True)
@click.option("--client-id", envvar="UAIP_CLIENT_ID", help="API client with device:write (or use --token).")
@click.option("--client-secret", envvar="UAIP_CLIENT_SECRET")
@click.option("--token", envvar="UAIP_TOKEN", help="A bearer token with device:write.")
@click.option("--prefix", help="Device id prefix (ids are PREFIX-1 … PREFIX-N); default sim-<random>.")
@click.option("--heartbeat-seconds", type=click.FloatRange(0.1, 3600), default=15.0, show_default=True)
def simulate_command(count: int, hub_url: str, nats_url: str, client_id: str | None, client_secret: str | None,
                     token: str | None, prefix: str | None, heartbeat_seconds: float) -> None:
    """Simulate devices: register them, heartbeat over NATS, execute commands and ack them (until Ctrl-C)."""
    from app.simulate import DeviceSimulator, HubError, fetch_token

    _default_logging(os.environ.get("LOG_LEVEL", "info"))
    hub_url = hub_url.rstrip("/")
    try:
        if token is None:
            if not (client_id and client_secret):
                raise click.UsageError("give --token, or --client-id and --client-secret (or UAIP_CLIENT_ID/SECRET)")
            token = fetch_token(hub_url, client_id, client_secret)
        simulator = DeviceSimulator.with_registration(
            hub_url, nats_url, count, token=token, prefix=prefix, heartbeat_seconds=heartbeat_seconds)
    except (HubError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    tracing.start(tracing.SIMULATOR_SERVICE)
    with simulator:
        click.echo(f"simulating {count} device(s): {', '.join(simulator.device_ids[:5])}{' …' if count > 5 else ''}")
        stop.wait()
    tracing.shutdown()
    click.echo(f"stopped; {len(simulator.received)} command(s) received, {len(simulator.outcomes)} answered")


APP_COMMANDS = (migrate_command, create_client_command, relay_command)


def init_app(app: Flask) -> None:
    for command in APP_COMMANDS:
        app.cli.add_command(command)


def main() -> None:
    try:
        cli.main(prog_name="uaip-hub")
    except ConfigError as exc:
        sys.exit(f"uaip-hub: configuration error: {exc}")


if __name__ == "__main__":
    main()
