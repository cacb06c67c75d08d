"""`uaip-hub` before any configuration exists (help works, commands fail with one line) and its `.env` file.

Each command runs as a real subprocess in an empty directory of its own, so nothing but what the test gives
reaches it: no configuration variable, and no .env but the one the test writes.
"""

import json
import subprocess

import pytest

from app.cli import cli
from tests.conftest import UAIP_HUB

COMMANDS = ("migrate", "create-client", "relay", "simulate")


def uaip_hub(args, env, cwd, timeout=60):
    return subprocess.run([UAIP_HUB, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def test_help_lists_every_command_with_an_empty_environment(tmp_path):
    result = uaip_hub(["--help"], {}, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout.startswith("Usage: uaip-hub")
    listed = {line.split()[0] for line in result.stdout.split("Commands:")[1].splitlines() if line.strip()}
    assert set(COMMANDS) <= listed, result.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_each_commands_help_works_with_an_empty_environment(tmp_path, command):
    result = uaip_hub([command, "--help"], {}, tmp_path)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert result.stdout.startswith(f"Usage: uaip-hub {command}")


@pytest.mark.parametrize("command", ["migrate", "relay", "routes"])
def test_a_command_that_needs_configuration_says_so_in_one_line(tmp_path, command):
    result = uaip_hub([command], {}, tmp_path)
    assert result.returncode != 0
    assert result.stderr == "uaip-hub: configuration error: DATABASE_URL is required but not set\n"


def test_a_mistyped_command_is_named_not_mistaken_for_missing_configuration(tmp_path):
    result = uaip_hub(["migrat"], {}, tmp_path)
    assert result.returncode == 2 and "No such command 'migrat'" in result.stderr and "Traceback" not in result.stderr


def test_uaip_hub_offers_every_command_the_app_registers(app):
    """The group never builds the app to find a command, so it must hold every one the app has itself."""
    assert set(app.cli.commands) <= set(cli.commands)


def test_dotenv_in_the_working_directory_is_read_and_the_environment_wins(tmp_path, hub_env):
    """The .env gives what the environment lacks (NATS_URL and JWT_SECRET are required); its DATABASE_URL points
    nowhere, so migrate succeeds only because the environment's DATABASE_URL wins. The syntax is the old hub's."""
    (tmp_path / ".env").write_text(
        "# written for the old hub\n"
        f"export NATS_URL={hub_env['NATS_URL']}\n"
        f"JWT_SECRET=\"{hub_env['JWT_SECRET']}\"\n"
        "DATABASE_URL=postgresql://nobody@127.0.0.1:1/nowhere\n"
    )
    env = {"DATABASE_URL": hub_env["DATABASE_URL"], "LOG_FORMAT": "json"}
    migrated = uaip_hub(["migrate"], env, tmp_path)
    assert migrated.returncode == 0, migrated.stderr
    assert "schema up to date" in migrated.stdout
    created = uaip_hub(["create-client", "--name", "from-dotenv", "--json"], env, tmp_path)
    assert created.returncode == 0 and json.loads(created.stdout)["scopes"] == "device:read", created.stderr


def test_without_the_dotenv_the_same_command_lacks_configuration(tmp_path, hub_env):
    """The counter-check of the test above: the environment alone is not enough."""
    result = uaip_hub(["migrate"], {"DATABASE_URL": hub_env["DATABASE_URL"]}, tmp_path)
    assert result.returncode != 0 and result.stderr.startswith("uaip-hub: configuration error: NATS_URL")


def test_env_file_option_wins_over_dotenv(tmp_path, hub_env):
    """`uaip-hub --env-file FILE` (Flask's option): FILE before ./.env, the environment before both."""
    (tmp_path / ".env").write_text("NATS_URL=nats://127.0.0.1:1\nJWT_SECRET=placeholder\n")
    (tmp_path / "hub.env").write_text(f"NATS_URL={hub_env['NATS_URL']}\nJWT_SECRET={hub_env['JWT_SECRET']}\n")
    result = uaip_hub(["--env-file", "hub.env", "migrate"], {"DATABASE_URL": hub_env["DATABASE_URL"]}, tmp_path)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("how", ["dotenv", "--env-file"])
def test_a_file_cannot_switch_a_command_to_development(tmp_path, hub_env, how):
    """UAIP_ENV comes from the real environment only: without JWT_SECRET, a file's UAIP_ENV=development leaves
    the command in production, which refuses to run and says why."""
    settings = f"NATS_URL={hub_env['NATS_URL']}\nUAIP_ENV=development\n"
    (tmp_path / (".env" if how == "dotenv" else "hub.env")).write_text(settings)
    args = ["migrate"] if how == "dotenv" else ["--env-file", "hub.env", "migrate"]
    result = uaip_hub(args, {"DATABASE_URL": hub_env["DATABASE_URL"]}, tmp_path)
    assert result.returncode != 0, result.stdout
    assert "UAIP_ENV" in result.stderr and "is ignored" in result.stderr, result.stderr
    assert "configuration error: JWT_SECRET is required in production" in result.stderr, result.stderr
    relaxed = uaip_hub(args, {"DATABASE_URL": hub_env["DATABASE_URL"], "UAIP_ENV": "development"}, tmp_path)
    assert relaxed.returncode == 0, relaxed.stderr  # from the real environment it still counts
