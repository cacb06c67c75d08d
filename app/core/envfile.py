"""The `.env` file of the working directory, read at start-up by gunicorn.conf.py (in the master, before the
settings are checked) and by every `uaip-hub` command, so the old hub's `.env` files keep working.

Rules, the same for every process: the file is `./.env` (not a parent directory's, not `.flaskenv`), or the path
in `UAIP_ENV_FILE` (empty: read no file; tests use that so a developer's `.env` never leaks into them); a variable
already set in the environment wins over the file; the syntax is python-dotenv's (`KEY=value`, `export
KEY=value`, quotes, `#` comments, `${VAR}` expansion). Reading it again in the same process (gunicorn re-reads its
config file on SIGHUP) picks up the file's new values and forgets variables removed from it, while variables that
came from the real environment are still never touched.
"""

from __future__ import annotations

import os

from dotenv import dotenv_values

from app.core.config import ConfigError

PATH_ENV = "UAIP_ENV_FILE"
DEFAULT_PATH = ".env"

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
    return taken
