"""The `uaip-hub` command: a Flask CLI group on top of the app factory.

It holds the app's own commands (migrate, create-client, relay: app/cli/commands.py, the same objects create_app
registers on `app.cli` for `flask --app wsgi ...`) and simulate, a device-side client of a running hub that needs
no hub configuration. The group never builds the app to list or find a command, so `uaip-hub --help` and
`uaip-hub COMMAND --help` work with no configuration at all; a command that needs the app builds it when it runs,
and a bad or missing setting then ends it with one line (`uaip-hub: configuration error: ...`).

Before a command runs, `./.env` is read (app/core/envfile.py): variables already in the environment win, and so do
those of a file given with `--env-file`.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

import click
from flask.cli import AppGroup, FlaskGroup

from app import create_app
from app.cli.commands import APP_COMMANDS, stdout_logging
from app.cli.examples import EXAMPLES
from app.core.config import ConfigError
from app.core.envfile import load_env_file, startup_notes, undo_other_loaders
from app.telemetry import tracing


class HubGroup(FlaskGroup):
    """FlaskGroup (`--app`, `--env-file`, run/shell/routes) whose commands are all its own, so looking one up
    or listing them never builds the app. FlaskGroup would build it for both, to find the app's commands."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        for param in self.params:
            if param.name == "env_file":  # Flask's text names .flaskenv, which the hub does not read
                param.help = ("Load environment variables from this file, taking precedence over ./.env; variables "
                              "set in the environment take precedence over both.")

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        return AppGroup.get_command(self, ctx, name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(AppGroup.list_commands(self, ctx))


# load_dotenv=False: Flask's own loader also reads .flaskenv and parent directories' .env; the hub reads
# ./.env only, the same way in gunicorn and here.
@click.group(cls=HubGroup, create_app=create_app, add_default_commands=True, add_version_option=False,
             load_dotenv=False)
def cli() -> None:
    """UAIP Hub: REST hub for AI agents and IoT devices."""
    # Here, after the options were parsed (so `--env-file FILE` was read first and wins) and before the command's
    # own options read their environment variables.
    for name in undo_other_loaders():
        click.echo(f"uaip-hub: {name} from --env-file is ignored: it is taken from the real environment only",
                   err=True)
    load_env_file()
    for level, message in startup_notes():
        if level == "warning":  # the relay logs the full notes; every command says what the file could not do
            click.echo(f"uaip-hub: {message}", err=True)


for _command in APP_COMMANDS:
    cli.add_command(_command)


@cli.command("simulate", with_appcontext=False)
@click.option("--devices", "count", type=click.IntRange(1, 10_000), default=1, show_default=True,
              help="How many devices.")
@click.option("--hub-url", envvar="UAIP_HUB_URL", default="http://127.0.0.1:8443", show_default=True)
@click.option("--nats-url", envvar="NATS_URL", default="nats://127.0.0.1:4222", show_default=True)
@click.option("--client-id", envvar="UAIP_CLIENT_ID", help="API client with device:write (or use --token).")
@click.option("--client-secret", envvar="UAIP_CLIENT_SECRET")
@click.option("--token", envvar="UAIP_TOKEN", help="A bearer token with device:write.")
@click.option("--prefix", help="Device id prefix (ids are PREFIX-1 … PREFIX-N); default sim-<random>.")
@click.option("--heartbeat-seconds", type=click.FloatRange(0.1, 3600), default=15.0, show_default=True)
@click.option("--state-seconds", type=click.FloatRange(0.1, 3600), default=5.0, show_default=True,
              help="How often an example that plays state (thermostat) reports it over NATS.")
@click.option("--example", type=click.Choice(sorted(EXAMPLES)),
              help="Declare this example device type (needs the admin scope) and play it, e.g. thermostat.")
def simulate_command(count: int, hub_url: str, nats_url: str, client_id: str | None, client_secret: str | None,
                     token: str | None, prefix: str | None, heartbeat_seconds: float, state_seconds: float,
                     example: str | None) -> None:
    """Simulate devices: register them, heartbeat over NATS, execute commands and ack them (until Ctrl-C)."""
    from app.cli.simulate import DeviceSimulator, HubError, fetch_token

    stdout_logging(os.environ.get("LOG_LEVEL", "info"))
    hub_url = hub_url.rstrip("/")
    try:
        if token is None:
            if not (client_id and client_secret):
                raise click.UsageError("give --token, or --client-id and --client-secret (or UAIP_CLIENT_ID/SECRET)")
            token = fetch_token(hub_url, client_id, client_secret)
        simulator = DeviceSimulator.with_registration(
            hub_url, nats_url, count, token=token, prefix=prefix, heartbeat_seconds=heartbeat_seconds,
            state_seconds=state_seconds, example=EXAMPLES.get(example))
    except (HubError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    tracing.start(tracing.SIMULATOR_SERVICE)
    with simulator:
        kind = f" of type {example}" if example else ""
        shown = ", ".join(simulator.device_ids[:5]) + (" …" if count > 5 else "")
        click.echo(f"simulating {count} device(s){kind}: {shown}")
        stop.wait()
    tracing.shutdown()
    click.echo(f"stopped; {len(simulator.received)} command(s) received, {len(simulator.outcomes)} answered")


@cli.command("nats-keys", with_appcontext=False)
@click.option("--xkey", is_flag=True, help="Also make the curve key pair of an encrypted callout (xkey).")
def nats_keys_command(xkey: bool) -> None:
    """Print new keys for the NATS auth callout (docs/nats-security.md): the seeds go to the relay's settings, the
    public keys into the NATS server's auth_callout block. Nothing is stored."""
    from app.infra.nats_callout import AccountKey, CurveKey

    seed = AccountKey.generate()
    click.echo(f"NATS_CALLOUT_ISSUER_SEED={seed}")
    click.echo(f"# auth_callout {{ issuer: {AccountKey(seed).public_key} }}")
    if xkey:
        curve_seed = CurveKey.generate()
        click.echo(f"NATS_CALLOUT_XKEY_SEED={curve_seed}")
        click.echo(f"# auth_callout {{ xkey: {CurveKey(curve_seed).public_key} }}")


def main() -> None:
    try:
        cli.main(prog_name="uaip-hub")
    except ConfigError as exc:
        sys.exit(f"uaip-hub: configuration error: {exc}")


if __name__ == "__main__":
    main()
