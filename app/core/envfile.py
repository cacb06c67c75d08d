"""The `.env` file of the working directory, read at start-up by gunicorn.conf.py (in the master, before the
settings are checked) and by every `uaip-hub` command, so the old hub's `.env` files keep working.

Rules, the same for every process: the file is `./.env` (not a parent directory's, not `.flaskenv`), or the path
in `UAIP_ENV_FILE` (empty: read no file; tests use that so a developer's `.env` never leaks into them); a variable
already set in the environment wins over the file; the syntax is python-dotenv's (`KEY=value`, `export
KEY=value`, quotes, `#` comments, `${VAR}` expansion). Reading it again in the same process (gunicorn re-reads its
config file on SIGHUP) picks up the file's new values and forgets variables removed from it, while variables that
came from the real environment are still never touched.

A file never lowers security: `UAIP_ENV` (whose `development` relaxes the secret rules) and the generated
development secret are taken from the real environment only; a file that sets them is ignored for those names,
with a warning. Which names came from the file is logged (names only, never values): `startup_notes`.
"""

from __future__ import annotations

import os

from dotenv import dotenv_values

from app.core.config import GENERATED_SECRET_ENV, ConfigError, Settings

PATH_ENV = "UAIP_ENV_FILE"
DEFAULT_PATH = ".env"

# Names a file may not set: the real environment alone decides them (see the module docstring).
REAL_ENVIRONMENT_ONLY = ("UAIP_ENV", GENERATED_SECRET_ENV)

# What the last read did, for the start-up log: (path, names taken, names ignored).
last_read: tuple[str | None, list[str], list[str]] = (None, [], [])

# Names this process took from the file (so a re-read may change or drop them: they are not the environment's).
_from_file: set[str] = set()


def env_file_path() -> str | None:
    """The file to read: UAIP_ENV_FILE when set (None when it is empty), else ./.env."""
    path = os.environ.get(PATH_ENV, DEFAULT_PATH).strip()
    return path or None


def load_env_file() -> list[str]:
    """Copy the file's variables into os.environ where the environment does not set them already; returns the
    names taken from the file. No ./.env, nothing to do; a file named by UAIP_ENV_FILE must exist (ConfigError)."""
    named = bool(os.environ.get(PATH_ENV, "").strip())
    path = env_file_path()
    raw: dict[str, str | None] = {}
    if path is not None and (named or os.path.isfile(path)):
        if not os.path.isfile(path):
            raise ConfigError(f"{PATH_ENV} names {path}, which is not a file")
        try:
            raw = dotenv_values(path)
        except OSError as exc:
            raise ConfigError(f"cannot read the env file {path}: {exc.strerror or exc}") from None
    values = {name: value for name, value in raw.items() if value is not None}  # a bare `NAME` line sets nothing
    ignored = sorted(name for name in REAL_ENVIRONMENT_ONLY if name in values)
    for name in ignored:
        del values[name]
    for name in sorted(_from_file - values.keys()):
        os.environ.pop(name, None)
        _from_file.discard(name)
    taken = []
    for name, value in values.items():
        if name in os.environ and name not in _from_file:
            continue  # the environment wins
        os.environ[name] = value
        _from_file.add(name)
        taken.append(name)
    global last_read
    last_read = (path if raw else None, sorted(_from_file), ignored)
    return taken


# The real environment's values of REAL_ENVIRONMENT_ONLY when this module was first imported: before any file
# loader ran (Flask's `--env-file` option loads its file into os.environ before the CLI's callback runs).
_real_values = {name: os.environ.get(name) for name in REAL_ENVIRONMENT_ONLY}


def undo_other_loaders() -> list[str]:
    """Put back the real environment's values of REAL_ENVIRONMENT_ONLY where another file loader changed them;
    returns those names (the CLI warns about each)."""
    changed = []
    for name, value in _real_values.items():
        if os.environ.get(name) != value:
            changed.append(name)
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    return changed


def startup_notes() -> list[tuple[str, str]]:
    """(level, message) lines about the last read, for the process's log once logging is set up: which variables
    came from the file (names only), and which names the file set but the hub ignored."""
    path, names, ignored = last_read
    notes = []
    if names:
        notes.append(("info", f"variables read from {path}: {', '.join(names)}"))
    for name in ignored:
        notes.append(("warning", f"{name} in {path} is ignored: it is taken from the real environment only"))
    return notes


def read_settings() -> Settings:
    """Settings.from_env(); a bad setting still stops start-up with one line, which then also names what the file
    tried and was refused (UAIP_ENV=development from a .env, then "JWT_SECRET is required in production")."""
    try:
        return Settings.from_env()
    except ConfigError as exc:
        refused = [message for level, message in startup_notes() if level == "warning"]
        raise ConfigError("; ".join([str(exc), *refused])) from None
