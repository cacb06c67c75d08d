"""Settings read once from the environment.

Every variable, its default and its range are listed in docs/api.md, "Configuration"; the old Rust hub's
variables keep their names there, so an `.env` written for the old hub keeps working. Parsing is strict on
purpose: a typo in a deployment should stop start-up with one line naming the variable, not surface later as odd
behaviour under load.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import secrets
from collections.abc import Callable, Mapping, MutableMapping
from typing import TypeVar
from urllib.parse import urlsplit

T = TypeVar("T")
log = logging.getLogger(__name__)

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
# The fixed secret older versions signed with in development mode; still refused as a JWT_SECRET in production.
DEVELOPMENT_JWT_SECRET = "uaip-development-only-secret-do-not-use-in-production"
# Where a gunicorn master leaves the random development secret for its workers (`development_secret`).
GENERATED_SECRET_ENV = "UAIP_GENERATED_DEV_SECRET"

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


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    value = _raw(env, name)
    if value is None:
        return default
    if value.lower() in ("true", "1", "yes", "on"):
        return True
    if value.lower() in ("false", "0", "no", "off"):
        return False
    raise ConfigError(f"{name} must be true or false, got {value!r}")


_BASE32 = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")


def _nkey_seed(env: Mapping[str, str], name: str, kind: str, noun: str) -> str | None:
    """An nkey seed (58 base32 characters starting with S and the key kind's letter: SA… an account, SX… a curve
    key). The checksum is checked where the key is used (app/infra/nats_callout.py)."""
    value = _raw(env, name)
    if value is None:
        return None
    if len(value) != 58 or not value.startswith("S" + kind) or not set(value) <= _BASE32:
        raise ConfigError(f"{name} must be {noun} (an nkey seed of 58 characters starting with S{kind})")
    return value


def _list(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    value = _raw(env, name) or ""
    return tuple(item.strip() for item in value.split(",") if item.strip())


def _check_strength(name: str, secret: str) -> None:
    """The production rule for secrets an attacker must not guess: no known placeholder, at least 32 characters."""
    if secret.lower() in KNOWN_DEFAULT_SECRETS or secret == DEVELOPMENT_JWT_SECRET:
        raise ConfigError(f"{name} is a known placeholder value; generate a random secret")
    if len(secret) < MIN_SECRET_LENGTH:
        raise ConfigError(f"{name} must be at least {MIN_SECRET_LENGTH} characters long")


def development_secret(env: MutableMapping[str, str] | None = None) -> tuple[str, bool]:
    """The random secret development mode signs with when JWT_SECRET is unset, and whether this call made it.

    Kept in `env` (os.environ) under GENERATED_SECRET_ENV, so a gunicorn master that calls this before forking
    gives every worker the same one (a token issued by one worker verifies on the others) and keeps it across
    SIGHUP; a new start makes a new one. Never a fixed value: a published development secret would let anyone
    sign admin tokens for a hub that ended up in development mode by mistake."""
    env = os.environ if env is None else env
    existing = _raw(env, GENERATED_SECRET_ENV)
    if existing is not None:
        return existing, False
    env[GENERATED_SECRET_ENV] = secrets.token_urlsafe(32)
    return env[GENERATED_SECRET_ENV], True


def share_development_secret() -> bool:
    """In a process about to start others (the gunicorn master): make the development secret now, when
    development mode will need one, so every child inherits it. True when this call made it (say so in the log)."""
    if (_raw(os.environ, "UAIP_ENV") or "").lower() != "development" or _raw(os.environ, "JWT_SECRET") is not None:
        return False
    return development_secret()[1]


def _jwt_secret(env: Mapping[str, str], environment: str) -> str:
    secret = _raw(env, "JWT_SECRET")
    if environment == "development":
        if secret is not None:
            return secret
        shared = _raw(env, GENERATED_SECRET_ENV)
        if shared is not None:
            return shared
        generated, made = development_secret()
        if made:
            log.warning("UAIP_ENV=development and JWT_SECRET unset: tokens are signed with a random secret made for "
                        "this process (they stop working when it restarts)")
        return generated
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


INSTANCE_PATTERN = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}$")
DEFAULT_RELAY_QUEUE_GROUP = "uaip-relay"
METRICS_DIR_PREFIX = "/tmp/uaip-metrics-"


def instance_name(env: Mapping[str, str]) -> str:
    """What tells this hub apart from others on the same host: UAIP_INSTANCE, else its SERVER_PORT (two API
    servers on one host cannot share a port). Names the per-instance defaults (metrics directory, drain file)."""
    name = _raw(env, "UAIP_INSTANCE")
    if name is None:
        return str(_int(env, "SERVER_PORT", 8443, 1, 65_535))
    if not INSTANCE_PATTERN.fullmatch(name):
        raise ConfigError(f"UAIP_INSTANCE must be 1-64 of A-Z a-z 0-9 . _ - (not starting with '.'), got {name!r}")
    return name


def default_metrics_dir(env: Mapping[str, str]) -> str:
    """PROMETHEUS_MULTIPROC_DIR when unset: one directory per instance, so starting one hub never wipes the
    metric files of another on the same host."""
    return METRICS_DIR_PREFIX + instance_name(env)


def _default_queue_group(env: Mapping[str, str]) -> str:
    """uaip-relay, or uaip-relay-<UAIP_INSTANCE>: relays of different hubs sharing one NATS must not split each
    other's acks between them (a queue group hands each message to one member)."""
    name = _raw(env, "UAIP_INSTANCE")
    return DEFAULT_RELAY_QUEUE_GROUP if name is None else f"{DEFAULT_RELAY_QUEUE_GROUP}-{instance_name(env)}"


def default_max_waiters(threads: int) -> int:
    """`?wait=N` requests one worker lets wait at once: half its threads (rounded down), so at least as many
    threads stay free for probes and every other request. With one thread nobody waits (the answer is 202)."""
    return threads // 2


def default_max_waiters_per_client(max_waiters: int) -> int:
    """Waiting requests of one API client in one worker: half the worker's waiter slots (rounded up), so one
    client cannot take every slot from the others."""
    return (max_waiters + 1) // 2


def default_max_streams(threads: int) -> int:
    """Event streams one worker serves at once: half its threads (at least one), so probes and ordinary requests
    always find a thread while every stream slot is taken."""
    return max(1, threads // 2)


@dataclasses.dataclass(frozen=True)
class Settings:
    """Typed, validated configuration. `repr` hides secrets so a logged Settings leaks nothing."""

    database_url: str = dataclasses.field(repr=False)
    nats_url: str = dataclasses.field(repr=False)  # may carry the hub's NATS user and password
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
    relay_queue_group: str = DEFAULT_RELAY_QUEUE_GROUP
    instance: str = "8443"
    relay_metrics_port: int = 9464
    # Whether UAIP_RELAY_METRICS_PORT was set: a taken port the operator asked for stops the relay (exit 2); the
    # default port taken (another relay on the host) only costs this relay its /metrics (docs/operations.md).
    relay_metrics_port_explicit: bool = False
    # `?wait=N` bounds, per worker process (docs/api.md, "Commands and messages"): a waiting request holds a
    # gthread thread.
    max_waiters: int = 2
    max_waiters_per_client: int = 1
    # NATS auth callout (docs/nats-security.md): the relay admits devices to NATS with their own credentials.
    nats_auth_callout: bool = False
    nats_callout_issuer_seed: str | None = dataclasses.field(default=None, repr=False)
    nats_callout_account: str = "UAIP"
    nats_callout_xkey_seed: str | None = dataclasses.field(default=None, repr=False)
    # Event streams (docs/events.md): how long events are kept for resuming, how long one stream lasts, and the
    # stream slots per worker process (each open stream holds a gthread thread).
    event_retention_hours: float = 24.0
    stream_max_seconds: float = 300.0
    max_streams: int = 2
    max_streams_per_client: int = 4
    # The least time between two event batches that wake streams (app/services/event_feed.py): a few ms gather
    # a steady flow into fewer wake-ups and writes, which keeps ordinary requests fast while every slot is taken.
    event_coalesce_ms: int = 10
    # Each worker's ring of recent events (app/services/event_ring.py): streams and long polls whose position is
    # inside it read memory, older ones PostgreSQL. Bounded by count and by stored size.
    event_ring_events: int = 4096
    event_ring_mb: int = 8
    # Device state (docs/state.md): the largest side, how long reported history is kept, how long a property
    # observer waits for a change.
    max_state_bytes: int = 32_768
    state_history_hours: int = 168
    observe_seconds: int = 30
    audit_retention_days: int = 90

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Parse the process environment (or `env`); raise ConfigError naming the first bad variable."""
        env = os.environ if env is None else env
        environment = _choice(env, "UAIP_ENV", "production", ENVIRONMENTS)
        threads = _int(env, "SERVER_THREADS", 4, 1, 256)
        max_waiters = _int(env, "UAIP_MAX_WAITERS", default_max_waiters(threads), 0, threads - 1)
        auth_callout = _bool(env, "NATS_AUTH_CALLOUT", False)
        issuer_seed = _nkey_seed(env, "NATS_CALLOUT_ISSUER_SEED", "A", "an account seed")
        if auth_callout and issuer_seed is None:
            raise ConfigError("NATS_CALLOUT_ISSUER_SEED is required when NATS_AUTH_CALLOUT=true")
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
            relay_queue_group=_raw(env, "UAIP_RELAY_QUEUE_GROUP") or _default_queue_group(env),
            instance=instance_name(env),
            relay_metrics_port=_int(env, "UAIP_RELAY_METRICS_PORT", 9464, 0, 65_535),
            relay_metrics_port_explicit=_raw(env, "UAIP_RELAY_METRICS_PORT") is not None,
            max_waiters=max_waiters,
            max_waiters_per_client=_int(env, "UAIP_MAX_WAITERS_PER_CLIENT", default_max_waiters_per_client(max_waiters),
                                        0, max_waiters),
            nats_auth_callout=auth_callout,
            nats_callout_issuer_seed=issuer_seed,
            nats_callout_account=_raw(env, "NATS_CALLOUT_ACCOUNT") or "UAIP",
            nats_callout_xkey_seed=_nkey_seed(env, "NATS_CALLOUT_XKEY_SEED", "X", "a curve (xkey) seed"),
            event_retention_hours=_float(env, "EVENT_RETENTION_HOURS", 24.0, 0.0001, 24 * 366),
            stream_max_seconds=_float(env, "UAIP_STREAM_MAX_SECONDS", 300.0, 1.0, 86_400),
            max_streams=_int(env, "UAIP_MAX_STREAMS", default_max_streams(threads), 1, max(1, threads - 1)),
            max_streams_per_client=_int(env, "UAIP_MAX_STREAMS_PER_CLIENT", 4, 1, 10_000),
            event_coalesce_ms=_int(env, "UAIP_EVENT_COALESCE_MS", 10, 0, 50),
            event_ring_events=_int(env, "UAIP_EVENT_RING_EVENTS", 4096, 256, 1_000_000),
            event_ring_mb=_int(env, "UAIP_EVENT_RING_MB", 8, 1, 4096),
            max_state_bytes=_int(env, "MAX_STATE_BYTES", 32_768, 256, 1024 * 1024),
            state_history_hours=_int(env, "STATE_HISTORY_HOURS", 168, 1, 24 * 3660),
            observe_seconds=_int(env, "UAIP_OBSERVE_SECONDS", 30, 1, 300),
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
