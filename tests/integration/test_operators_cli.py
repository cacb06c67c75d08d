"""`uaip-hub operators create|list|disable|reset-password` as real subprocesses on the test database; each result
is checked by signing in through the console."""

from __future__ import annotations

import json
import os
import re
import subprocess
import uuid
from pathlib import Path

from tests.conftest import UAIP_HUB
from tests.support.console import sign_in


def operators_cli(args: list[str], env: dict[str, str], stdin: str = "") -> subprocess.CompletedProcess:
    full_env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp"),
                "PYTHONPATH": str(Path(__file__).resolve().parents[2]), "UAIP_ENV_FILE": "", **env}
    return subprocess.run([UAIP_HUB, "operators", *args], env=full_env, input=stdin, capture_output=True, text=True,
                          timeout=60)


def email() -> str:
    return f"cli-{uuid.uuid4().hex[:8]}@example.test"


def test_create_with_password_from_stdin_then_sign_in(hub_env, app):
    address = email()
    result = operators_cli(["create", "--email", address, "--role", "viewer"], hub_env, stdin="correct horse 42\n")
    assert result.returncode == 0, result.stderr
    assert "correct horse 42" not in result.stdout and "password:" not in result.stdout
    assert sign_in(app.test_client(), address, "correct horse 42").status_code == 303


def test_empty_stdin_generates_a_password_printed_once(hub_env, app):
    address = email()
    result = operators_cli(["create", "--email", address.upper(), "--role", "admin"], hub_env)
    assert result.returncode == 0, result.stderr
    password = re.search(r"^password: (\S+)$", result.stdout, re.M).group(1)
    assert sign_in(app.test_client(), address, password).status_code == 303  # emails are case-insensitive

    listed = operators_cli(["list", "--json"], hub_env)
    assert listed.returncode == 0 and password not in listed.stdout
    mine = [o for o in json.loads(listed.stdout)["operators"] if o["email"] == address]
    assert mine == [{"email": address, "role": "admin", "disabled": False, "created_at": mine[0]["created_at"]}]
    assert "hash" not in listed.stdout and "scrypt" not in listed.stdout


def test_generate_flag_ignores_stdin(hub_env, app):
    address = email()
    result = operators_cli(["create", "--email", address, "--role", "viewer", "--generate"], hub_env,
                           stdin="typed-password\n")
    password = re.search(r"^password: (\S+)$", result.stdout, re.M).group(1)
    assert password != "typed-password"
    assert sign_in(app.test_client(), address, password).status_code == 303


def test_disable_and_reset_password(hub_env, app):
    address = email()
    created = operators_cli(["create", "--email", address, "--role", "admin"], hub_env, stdin="first-pass-1\n")
    assert created.returncode == 0, created.stderr
    browser = app.test_client()
    assert sign_in(browser, address, "first-pass-1").status_code == 303
    assert browser.get("/console/").status_code == 200

    reset = operators_cli(["reset-password", address], hub_env, stdin="second-pass-2\n")
    assert reset.returncode == 0, reset.stderr
    assert browser.get("/console/").status_code == 302  # the old session ended with the old password
    assert sign_in(app.test_client(), address, "first-pass-1").status_code == 401
    assert sign_in(app.test_client(), address, "second-pass-2").status_code == 303

    assert operators_cli(["disable", address], hub_env).returncode == 0
    assert sign_in(app.test_client(), address, "second-pass-2").status_code == 401


def test_bad_input_is_one_clear_error(hub_env):
    for args, stdin, expected in (
        (["create", "--email", "not-an-email", "--role", "admin"], "long-enough-1\n", "not an email"),
        (["create", "--email", email(), "--role", "root"], "long-enough-1\n", "root"),
        (["create", "--email", email(), "--role", "admin"], "short\n", "8 to 256"),
        (["disable", email()], "", "no operator"),
    ):
        result = operators_cli(args, hub_env, stdin=stdin)
        assert result.returncode != 0 and expected in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr
    address = email()
    first = operators_cli(["create", "--email", address, "--role", "admin"], hub_env, stdin="long-enough-1\n")
    assert first.returncode == 0, first.stderr
    again = operators_cli(["create", "--email", address, "--role", "admin"], hub_env, stdin="long-enough-1\n")
    assert again.returncode != 0 and "already exists" in again.stderr


def test_an_email_with_invisible_characters_is_refused(hub_env):
    address = email().replace("@", "\u200b@")
    result = operators_cli(["create", "--email", address, "--role", "admin"], hub_env, stdin="long-enough-1\n")
    assert result.returncode != 0 and "invisible characters" in result.stderr and "\\u200b" in result.stderr
    assert "Traceback" not in result.stderr
    listed = operators_cli(["list", "--json"], hub_env)
    assert address.replace("\u200b", "") not in listed.stdout and address not in listed.stdout
