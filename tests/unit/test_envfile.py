"""./.env at start-up (app/core/envfile.py): the file fills in what the environment leaves unset, never more."""

import os

import pytest

from app.core import envfile
from app.core.config import ConfigError

# The syntax of the old hub's .env files: comments, `export`, quotes, blank lines.
OLD_HUB_STYLE = """\
# UAIP Hub settings
export UAIP_TEST_DOTENV_URL=postgresql://hub@db:5432/uaip
UAIP_TEST_DOTENV_QUOTED="two words"   # a comment after the value
UAIP_TEST_DOTENV_SINGLE='$not_expanded'

UAIP_TEST_DOTENV_WINS=from-file
UAIP_TEST_DOTENV_BARE
"""


@pytest.fixture(autouse=True)
def clean_environment(tmp_path, monkeypatch):
    """Each test runs in an empty directory with a fresh record of what came from a file; os.environ is put back
    exactly as it was afterwards (load_env_file writes it directly)."""
    saved = dict(os.environ)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(envfile, "_from_file", set())
    os.environ.pop(envfile.PATH_ENV, None)
    for name in list(os.environ):
        if name.startswith("UAIP_TEST_DOTENV_"):
            del os.environ[name]
    yield
    os.environ.clear()
    os.environ.update(saved)


def test_file_fills_in_what_the_environment_leaves_unset(tmp_path):
    (tmp_path / ".env").write_text(OLD_HUB_STYLE)
    os.environ["UAIP_TEST_DOTENV_WINS"] = "from-environment"
    taken = envfile.load_env_file()
    assert sorted(taken) == ["UAIP_TEST_DOTENV_QUOTED", "UAIP_TEST_DOTENV_SINGLE", "UAIP_TEST_DOTENV_URL"]
    assert os.environ["UAIP_TEST_DOTENV_URL"] == "postgresql://hub@db:5432/uaip"
    assert os.environ["UAIP_TEST_DOTENV_QUOTED"] == "two words"
    assert os.environ["UAIP_TEST_DOTENV_SINGLE"] == "$not_expanded"
    assert os.environ["UAIP_TEST_DOTENV_WINS"] == "from-environment"
    assert "UAIP_TEST_DOTENV_BARE" not in os.environ  # a name without `=` sets nothing


def test_reading_again_follows_the_file_and_still_leaves_the_environment_alone(tmp_path):
    """What gunicorn does on SIGHUP: the file changed, its variables follow; the environment's stay."""
    env_file = tmp_path / ".env"
    env_file.write_text("UAIP_TEST_DOTENV_A=1\nUAIP_TEST_DOTENV_B=1\nUAIP_TEST_DOTENV_WINS=file\n")
    os.environ["UAIP_TEST_DOTENV_WINS"] = "environment"
    envfile.load_env_file()
    env_file.write_text("UAIP_TEST_DOTENV_A=2\nUAIP_TEST_DOTENV_WINS=file-again\n")
    assert envfile.load_env_file() == ["UAIP_TEST_DOTENV_A"]
    assert os.environ["UAIP_TEST_DOTENV_A"] == "2"
    assert "UAIP_TEST_DOTENV_B" not in os.environ  # removed from the file, so gone
    assert os.environ["UAIP_TEST_DOTENV_WINS"] == "environment"


def test_no_file_changes_nothing():
    before = dict(os.environ)
    assert envfile.load_env_file() == []
    assert dict(os.environ) == before


def test_only_the_working_directory_counts(tmp_path, monkeypatch):
    (tmp_path / ".env").write_text("UAIP_TEST_DOTENV_PARENT=1\n")
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")
    assert envfile.load_env_file() == []
    assert "UAIP_TEST_DOTENV_PARENT" not in os.environ


def test_uaip_env_file_names_another_file_or_none(tmp_path):
    (tmp_path / ".env").write_text("UAIP_TEST_DOTENV_DEFAULT=1\n")
    (tmp_path / "hub.env").write_text("UAIP_TEST_DOTENV_NAMED=1\n")
    os.environ[envfile.PATH_ENV] = str(tmp_path / "hub.env")
    assert envfile.load_env_file() == ["UAIP_TEST_DOTENV_NAMED"]
    os.environ[envfile.PATH_ENV] = ""
    assert envfile.load_env_file() == []
    assert "UAIP_TEST_DOTENV_DEFAULT" not in os.environ and "UAIP_TEST_DOTENV_NAMED" not in os.environ


def test_a_named_file_that_is_missing_is_a_configuration_error(tmp_path):
    os.environ[envfile.PATH_ENV] = str(tmp_path / "missing.env")
    with pytest.raises(ConfigError, match="UAIP_ENV_FILE names .*missing.env, which is not a file"):
        envfile.load_env_file()


def test_a_file_cannot_choose_development_mode(tmp_path):
    """UAIP_ENV (and the generated development secret) come from the real environment only: a stray .env with
    UAIP_ENV=development must not relax the production rules."""
    os.environ.pop("UAIP_ENV", None)
    os.environ.pop("UAIP_GENERATED_DEV_SECRET", None)
    (tmp_path / ".env").write_text("UAIP_ENV=development\nUAIP_GENERATED_DEV_SECRET=known\nUAIP_TEST_DOTENV_A=1\n")
    assert envfile.load_env_file() == ["UAIP_TEST_DOTENV_A"]
    assert "UAIP_ENV" not in os.environ and "UAIP_GENERATED_DEV_SECRET" not in os.environ
    notes = envfile.startup_notes()
    assert ("info", "variables read from .env: UAIP_TEST_DOTENV_A") in notes
    warnings = [message for level, message in notes if level == "warning"]
    assert any(message.startswith("UAIP_ENV in .env is ignored") for message in warnings), notes
    assert not any("development" in message or "known" in message for _, message in notes)  # names, never values


def test_the_real_environment_still_chooses_development(tmp_path):
    os.environ["UAIP_ENV"] = "development"
    (tmp_path / ".env").write_text("UAIP_ENV=production\n")
    assert envfile.load_env_file() == []
    assert os.environ["UAIP_ENV"] == "development"


def test_values_another_loader_put_there_are_undone(monkeypatch):
    """Flask's --env-file loads its file before the CLI callback; the callback puts the real UAIP_ENV back."""
    monkeypatch.setattr(envfile, "_real_values", {"UAIP_ENV": None, "UAIP_GENERATED_DEV_SECRET": None})
    os.environ.pop("UAIP_GENERATED_DEV_SECRET", None)
    os.environ["UAIP_ENV"] = "development"
    assert envfile.undo_other_loaders() == ["UAIP_ENV"]
    assert "UAIP_ENV" not in os.environ
