"""`uaip-hub clients ...` as a real subprocess: every command, --json output, errors, and its effect on tokens."""

from __future__ import annotations

import json

from tests.conftest import run_cli

TOKEN = "/api/v1/auth/token"


def _ok(args, env) -> str:
    result = run_cli(args, env)
    assert result.returncode == 0, result.stderr
    return result.stdout


def _json(args, env) -> dict:
    out = _ok([*args, "--json"], env)
    assert len(out.strip().splitlines()) == 1  # exactly one JSON object
    return json.loads(out)


def _token_status(client, client_id, secret) -> int:
    return client.post(TOKEN, data={"grant_type": "client_credentials", "client_id": client_id,
                                    "client_secret": secret}).status_code


def test_the_whole_life_of_a_client(client, hub_env):
    created = _json(["clients", "create", "--name", "cli agent", "--scopes", "device:read message:read"], hub_env)
    assert set(created) >= {"client_id", "client_secret", "scopes"}
    assert created["scopes"] == "device:read message:read"
    client_id, first = created["client_id"], created["client_secret"]
    assert _token_status(client, client_id, first) == 200

    listed = _json(["clients", "list"], hub_env)
    assert client_id in [c["client_id"] for c in listed["clients"]]
    assert first not in json.dumps(listed)
    assert client_id in _ok(["clients", "list"], hub_env)

    shown = _json(["clients", "show", client_id], hub_env)
    assert shown["name"] == "cli agent" and shown["disabled"] is False and len(shown["secrets"]) == 1
    assert "client_secret" not in shown

    updated = _json(["clients", "update", client_id, "--name", "renamed", "--scopes", "device:read"], hub_env)
    assert updated["name"] == "renamed" and updated["scopes"] == ["device:read"]

    rotated = _json(["clients", "rotate-secret", client_id, "--previous-expires-in", "0"], hub_env)
    assert set(rotated) >= {"secret_id", "client_secret"}
    assert _token_status(client, client_id, first) == 401
    assert _token_status(client, client_id, rotated["client_secret"]) == 200

    assert _json(["clients", "update", client_id, "--disable"], hub_env)["disabled"] is True
    assert _token_status(client, client_id, rotated["client_secret"]) == 401
    assert "disabled:   no" in _ok(["clients", "update", client_id, "--enable"], hub_env)
    assert _token_status(client, client_id, rotated["client_secret"]) == 200

    assert _ok(["clients", "revoke-tokens", client_id], hub_env).strip()
    assert _ok(["clients", "delete", client_id], hub_env).strip()
    assert _token_status(client, client_id, rotated["client_secret"]) == 401
    missing = run_cli(["clients", "show", client_id], hub_env)
    assert missing.returncode == 1 and "not found" in missing.stderr


def test_revoke_tokens_from_the_cli_refuses_earlier_tokens(client, hub_env, api_client_factory):
    client_id, secret = api_client_factory("device:read")
    token = client.post(TOKEN, data={"grant_type": "client_credentials", "client_id": client_id,
                                     "client_secret": secret}).json["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    assert client.get("/api/v1/devices?limit=1", headers=headers).status_code == 200
    _ok(["clients", "revoke-tokens", client_id], hub_env)
    assert client.get("/api/v1/devices?limit=1", headers=headers).status_code == 401


def test_errors_are_one_line_and_change_nothing(hub_env):
    bad_scope = run_cli(["clients", "create", "--name", "x", "--scopes", "root"], hub_env)
    assert bad_scope.returncode == 2 and "root" in bad_scope.stderr
    unknown = run_cli(["clients", "revoke-tokens", "client_nope"], hub_env)
    assert unknown.returncode == 1 and "client_nope" in unknown.stderr
    out_of_range = run_cli(["clients", "rotate-secret", "client_nope", "--previous-expires-in", "604801"], hub_env)
    assert out_of_range.returncode == 2


def test_create_client_keeps_working(hub_env):
    created = json.loads(_ok(["create-client", "--name", "old way", "--scopes", "device:read", "--json"], hub_env))
    assert set(created) == {"client_id", "client_secret", "scopes"}
    assert _json(["clients", "show", created["client_id"]], hub_env)["name"] == "old way"


def test_names_from_the_cli_follow_the_apis_rule(hub_env):
    created = _json(["clients", "create", "--name", "cli\u200b agent\u202e", "--scopes", "device:read"], hub_env)
    assert _json(["clients", "show", created["client_id"]], hub_env)["name"] == "cli agent"
    updated = _json(["clients", "update", created["client_id"], "--name", "re\u2066named\ufe0f"], hub_env)
    assert updated["name"] == "renamed"
    old_way = json.loads(_ok(["create-client", "--name", "\u200bold way", "--json"], hub_env))
    assert _json(["clients", "show", old_way["client_id"]], hub_env)["name"] == "old way"

    before = _json(["clients", "list"], hub_env)["total"]
    for args in (["clients", "create", "--name", "\u200b\u202e", "--scopes", "device:read"],
                 ["clients", "create", "--name", "a\u0007b", "--scopes", "device:read"],
                 ["create-client", "--name", "\u2066\u2069"],
                 ["clients", "update", created["client_id"], "--name", "\u200d"]):
        refused = run_cli(args, hub_env)
        assert refused.returncode == 2 and "--name" in refused.stderr, (args, refused.stderr)
    assert _json(["clients", "list"], hub_env)["total"] == before
    assert _json(["clients", "show", created["client_id"]], hub_env)["name"] == "renamed"
