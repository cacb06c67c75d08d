"""Settings read once from the environment.

Every variable, its default and its range are listed in docs/api.md, "Configuration"; the old Rust hub's
variables keep their names there, so an `.env` written for the old hub keeps working. Parsing is strict on
purpose: a typo in a deployment should stop start-up with one line naming the variable, not surface later as odd
behaviour under load.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from typing import TypeVar
from urllib.parse import urlsplit

T = TypeVar("T")

# Secrets that appear in examples and old manifests: refusing them in production is the point of the rule.
KNOWN_DEFAULT_SECRETS = frozenset(
    {
        "",
        "secret",
        "changeme",
        "change-me",
        "change_me",
        "your-secret-key",
        "your-secret-key-change-in-production",
        "dev-secret",
        "development",
        "jwt-secret",
        "uaip-dev-secret",
    }
)
MIN_SECRET_LENGTH = 32
DEVELOPMENT_JWT_SECRET = "uaip-development-only-secret-do-not-use-in-production"

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
LOG_FORMATS = ("json", "text")
ENVIRONMENTS = ("production", "development")


class ConfigError(ValueError):
    """A bad or missing environment variable; the message is the one line an operator sees."""


def _raw(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name)
    if value is None:
        return None
    value = value.strip()
    return value or None


def _required(env: Mapping[str, str], name: str) -> str:
    value = _raw(env, name)
    if value is None:
        raise ConfigError(f"{name} is required but not set")
    return value


def _number(env: Mapping[str, str], name: str, default, minimum, maximum, kind: type, noun: str):
    value = _raw(env, name)
    if value is None:
        return default
    try:
        number = kind(value)
    except ValueError:
        raise ConfigError(f"{name} must be {noun}, got {value!r}") from None
    if not minimum <= number <= maximum:
        raise ConfigError(f"{name} must be between {minimum} and {maximum}, got {number}")
    return number


def _int(env: Mapping[str, str], name: str, default: int, minimum: int, maximum: int) -> int:
    return _number(env, name, default, minimum, maximum, int, "an integer")


def _float(env: Mapping[str, str], name: str, default: float, minimum: float, maximum: float) -> float:
    return _number(env, name, default, minimum, maximum, float, "a number")


def _choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    value = (_raw(env, name) or default).lower()
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


def _url(env: Mapping[str, str], name: str, schemes: tuple[str, ...], required: bool) -> str | None:
    value = _required(env, name) if required else _raw(env, name)
    if value is None:
        return None
    for part in value.split(","):
        scheme = part.strip().split("://", 1)[0].lower() if "://" in part else ""
        if scheme not in schemes:
            raise ConfigError(f"{name} must be a URL starting with {' or '.join(s + '://' for s in schemes)}")
    return value


def _public_url(env: Mapping[str, str], name: str) -> str | None:
    """`scheme://host[:port]` with no path, normalised (scheme and host lower-cased, no trailing slash): it is
    compared exactly against token audiences and published in discovery documents."""
    value = _raw(env, name)
    if value is None:
        return None
    parts = urlsplit(value)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{name} must look like https://hub.example.com (scheme and host), got {value!r}")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username or parts.password:
        raise ConfigError(f"{name} must be scheme://host[:port] without a path, query or credentials, got {value!r}")
    try:
        port = parts.port
    except ValueError:
        raise ConfigError(f"{name} has an invalid port, got {value!r}") from None
    host = parts.hostname.lower()
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    return f"{parts.scheme.lower()}://{host}" + (f":{port}" if port is not None else "")


def _list(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    value = _raw(env, name) or ""
    return tuple(item.strip() for item in value.split(",") if item.strip())


def _check_strength(name: str, secret: str) -> None:
    """The production rule for secrets an attacker must not guess: no known placeholder, at least 32 characters."""
    if secret.lower() in KNOWN_DEFAULT_SECRETS or secret == DEVELOPMENT_JWT_SECRET:
        raise ConfigError(f"{name} is a known placeholder value; generate a random secret")
    if len(secret) < MIN_SECRET_LENGTH:
        raise ConfigError(f"{name} must be at least {MIN_SECRET_LENGTH} characters long")


def _jwt_secret(env: Mapping[str, str], environment: str) -> str:
    secret = _raw(env, "JWT_SECRET")
    if environment == "development":
        return secret or DEVELOPMENT_JWT_SECRET
    if secret is None:
        raise ConfigError("JWT_SECRET is required in production (set UAIP_ENV=development to run without one)")
    _check_strength("JWT_SECRET", secret)
    return secret


def _previous_secrets(env: Mapping[str, str], environment: str) -> tuple[str, ...]:
    """Older signing secrets that still verify tokens (key rotation); in production each obeys the JWT_SECRET rule."""
    secrets = _list(env, "JWT_PREVIOUS_SECRETS")
    if environment != "development":
        for secret in secrets:
            _check_strength("JWT_PREVIOUS_SECRETS (each entry)", secret)
    return secrets


def _bootstrap_secret(env: Mapping[str, str], environment: str) -> str | None:
    """The bootstrap client is an admin credential: in production its secret obeys the JWT_SECRET rule."""
    secret = _raw(env, "UAIP_BOOTSTRAP_CLIENT_SECRET")
    if secret is not None and environment != "development":
        _check_strength("UAIP_BOOTSTRAP_CLIENT_SECRET", secret)
    return secret


def default_max_waiters(threads: int) -> int:
    """`?wait=N` requests one worker lets wait at once: half its threads (rounded down), so at least as many
    threads stay free for probes and every other request. With one thread nobody waits (the answer is 202)."""
    return threads // 2


def default_max_waiters_per_client(max_waiters: int) -> int:
    """Waiting requests of one API client in one worker: half the worker's waiter slots (rounded up), so one
    client cannot take every slot from the others."""
    return (max_waiters + 1) // 2


@dataclasses.dataclass(frozen=True)
class Settings:
    """Typed, validated configuration. `repr` hides secrets so a logged Settings leaks nothing."""

    database_url: str = dataclasses.field(repr=False)
    nats_url: str
    jwt_secret: str = dataclasses.field(repr=False)
    jwt_previous_secrets: tuple[str, ...] = dataclasses.field(default=(), repr=False)
    redis_url: str | None = dataclasses.field(default=None, repr=False)
    redis_key_prefix: str = "uaip"
    environment: str = "production"
    jwt_expiry_seconds: int = 3600
    server_host: str = "0.0.0.0"
    server_port: int = 8443
    server_workers: int = 2
    server_threads: int = 4
    graceful_timeout_seconds: int = 30
    rate_limit_per_minute: int = 100
    rate_limit_burst: int = 20
    trusted_proxy_hops: int = 0
    heartbeat_timeout_seconds: int = 90
    default_message_ttl_ms: int = 300_000
    max_message_size_bytes: int = 65_536
    max_pending_commands_per_device: int = 100
    log_level: str = "info"
    log_format: str = "json"
    cors_origins: tuple[str, ...] = ()
    public_url: str | None = None
    bootstrap_client_id: str | None = None
    bootstrap_client_secret: str | None = dataclasses.field(default=None, repr=False)
    # Relay tuning (not in the old hub; docs/api.md, "Configuration"). Tests shorten the intervals.
    relay_sweep_seconds: float = 2.0
    health_cache_seconds: float = 2.0
    command_retry_seconds: float = 10.0
    relay_queue_group: str = "uaip-relay"
    relay_metrics_port: int = 9464
    # `?wait=N` bounds, per worker process (docs/api.md, "Commands and messages"): a waiting request holds a
    # gthread thread.
    max_waiters: int = 2
    max_waiters_per_client: int = 1
    audit_retention_days: int = 90

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Parse the process environment (or `env`); raise ConfigError naming the first bad variable."""
        env = os.environ if env is None else env
        environment = _choice(env, "UAIP_ENV", "production", ENVIRONMENTS)
        threads = _int(env, "SERVER_THREADS", 4, 1, 256)
        max_waiters = _int(env, "UAIP_MAX_WAITERS", default_max_waiters(threads), 0, threads - 1)
        return cls(
            database_url=_url(env, "DATABASE_URL", ("postgresql", "postgres"), required=True),
            redis_url=_url(env, "REDIS_URL", ("redis", "rediss", "unix"), required=False),
            redis_key_prefix=_raw(env, "UAIP_REDIS_KEY_PREFIX") or "uaip",
            nats_url=_url(env, "NATS_URL", ("nats", "tls", "ws", "wss"), required=True),
            jwt_secret=_jwt_secret(env, environment),
            jwt_previous_secrets=_previous_secrets(env, environment),
            environment=environment,
            jwt_expiry_seconds=_int(env, "JWT_EXPIRY_SECONDS", 3600, 60, 86_400 * 7),
            server_host=_raw(env, "SERVER_HOST") or "0.0.0.0",
            server_port=_int(env, "SERVER_PORT", 8443, 1, 65_535),
            server_workers=_int(env, "SERVER_WORKERS", 2, 1, 64),
            server_threads=threads,
            graceful_timeout_seconds=_int(env, "GRACEFUL_TIMEOUT_SECONDS", 30, 1, 3600),
            rate_limit_per_minute=_int(env, "RATE_LIMIT_PER_MINUTE", 100, 1, 1_000_000),
            rate_limit_burst=_int(env, "RATE_LIMIT_BURST", 20, 1, 1_000_000),
            trusted_proxy_hops=_int(env, "TRUSTED_PROXY_HOPS", 0, 0, 10),
            heartbeat_timeout_seconds=_int(env, "HEARTBEAT_TIMEOUT_SECONDS", 90, 1, 86_400),
            default_message_ttl_ms=_int(env, "DEFAULT_MESSAGE_TTL_MS", 300_000, 1_000, 86_400_000),
            max_message_size_bytes=_int(env, "MAX_MESSAGE_SIZE_BYTES", 65_536, 1_024, 16 * 1024 * 1024),
            max_pending_commands_per_device=_int(env, "MAX_PENDING_COMMANDS_PER_DEVICE", 100, 1, 100_000),
            log_level=_choice(env, "LOG_LEVEL", "info", LOG_LEVELS),
            log_format=_choice(env, "LOG_FORMAT", "json", LOG_FORMATS),
            cors_origins=_list(env, "CORS_ORIGINS"),
            public_url=_public_url(env, "UAIP_PUBLIC_URL"),
            bootstrap_client_id=_raw(env, "UAIP_BOOTSTRAP_CLIENT_ID"),
            bootstrap_client_secret=_bootstrap_secret(env, environment),
            relay_sweep_seconds=_float(env, "UAIP_RELAY_SWEEP_SECONDS", 2.0, 0.05, 3600),
            # Each worker probes each dependency at most once per period; longer would make health answers stale.
            health_cache_seconds=_float(env, "UAIP_HEALTH_CACHE_SECONDS", 2.0, 0.0, 2.0),
            command_retry_seconds=_float(env, "UAIP_COMMAND_RETRY_SECONDS", 10.0, 0.1, 3600),
            relay_queue_group=_raw(env, "UAIP_RELAY_QUEUE_GROUP") or "uaip-relay",
            relay_metrics_port=_int(env, "UAIP_RELAY_METRICS_PORT", 9464, 0, 65_535),
            max_waiters=max_waiters,
            max_waiters_per_client=_int(env, "UAIP_MAX_WAITERS_PER_CLIENT", default_max_waiters_per_client(max_waiters),
                                        0, max_waiters),
            audit_retention_days=_int(env, "AUDIT_RETENTION_DAYS", 90, 1, 36_500),
        )


def load_settings(overrides: Mapping[str, object] | None = None) -> Settings:
    """Settings from the environment with `overrides` (same variable names) layered on top: tests and tools
    configure the app exactly the way an operator does, so there is one parsing path to trust."""
    env: dict[str, str] = dict(os.environ)
    env.update({name: str(value) for name, value in (overrides or {}).items()})
    return Settings.from_env(env)


def env_or_exit(read: Callable[[], T]) -> T:
    """Run `read`; on ConfigError print the one clear line and exit 1 (used by gunicorn.conf.py and the CLI)."""
    try:
        return read()
    except ConfigError as exc:
        raise SystemExit(f"uaip-hub: configuration error: {exc}") from None
