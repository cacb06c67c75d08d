"""Settings.from_env: documented names and defaults, one clear error per bad variable."""

import os

import pytest

from app.core.config import ConfigError, Settings

BASE = {"DATABASE_URL": "postgresql://u@h/db", "NATS_URL": "nats://h:4222", "JWT_SECRET": "x" * 40}


def parse(**extra):
    return Settings.from_env({**BASE, **extra})


def test_defaults_match_the_documentation():
    s = parse()
    assert (s.server_host, s.server_port, s.server_workers, s.server_threads) == ("0.0.0.0", 8443, 2, 4)
    assert (s.jwt_expiry_seconds, s.graceful_timeout_seconds) == (3600, 30)
    assert (s.rate_limit_per_minute, s.rate_limit_burst, s.trusted_proxy_hops) == (100, 20, 0)
    assert (s.heartbeat_timeout_seconds, s.default_message_ttl_ms) == (90, 300_000)
    assert (s.max_message_size_bytes, s.max_pending_commands_per_device) == (65_536, 100)
    assert (s.log_level, s.log_format, s.cors_origins, s.environment) == ("info", "json", (), "production")
    assert s.redis_url is None
    assert (s.max_state_bytes, s.state_history_hours, s.observe_seconds) == (32_768, 168, 30)
    assert (s.event_coalesce_ms, parse(UAIP_EVENT_COALESCE_MS="0").event_coalesce_ms) == (10, 0)
    assert (s.event_ring_events, s.event_ring_mb) == (4096, 8)
    ring = parse(UAIP_EVENT_RING_EVENTS="100000", UAIP_EVENT_RING_MB="64")
    assert (ring.event_ring_events, ring.event_ring_mb) == (100_000, 64)


@pytest.mark.parametrize(
    "name, value, fragment",
    [
        ("SERVER_PORT", "abc", "SERVER_PORT must be an integer"),
        ("SERVER_PORT", "70000", "SERVER_PORT must be between"),
        ("SERVER_WORKERS", "0", "SERVER_WORKERS must be between"),
        ("LOG_FORMAT", "xml", "LOG_FORMAT must be one of"),
        ("LOG_LEVEL", "loud", "LOG_LEVEL must be one of"),
        ("UAIP_ENV", "staging", "UAIP_ENV must be one of"),
        ("REDIS_URL", "http://x", "REDIS_URL must be a URL"),
        ("DATABASE_URL", "mysql://x", "DATABASE_URL must be a URL"),
        ("NATS_URL", "", "NATS_URL is required"),
        ("DATABASE_URL", "", "DATABASE_URL is required"),
        ("RATE_LIMIT_BURST", "1.5", "RATE_LIMIT_BURST must be an integer"),
        ("UAIP_PUBLIC_URL", "hub.example.com", "UAIP_PUBLIC_URL must look like"),
        ("UAIP_HEALTH_CACHE_SECONDS", "soon", "UAIP_HEALTH_CACHE_SECONDS must be a number"),
        ("UAIP_HEALTH_CACHE_SECONDS", "5", "UAIP_HEALTH_CACHE_SECONDS must be between 0.0 and 2.0"),
        ("UAIP_PUBLIC_URL", "ftp://hub.example.com", "UAIP_PUBLIC_URL must look like"),
        ("UAIP_PUBLIC_URL", "https://hub.example.com/api", "UAIP_PUBLIC_URL must be scheme://host[:port]"),
        ("UAIP_PUBLIC_URL", "https://user:pw@hub.example.com", "UAIP_PUBLIC_URL must be scheme://host[:port]"),
        ("UAIP_PUBLIC_URL", "https://hub.example.com:99999", "UAIP_PUBLIC_URL has an invalid port"),
        ("MAX_STATE_BYTES", "big", "MAX_STATE_BYTES must be an integer"),
        ("MAX_STATE_BYTES", "10", "MAX_STATE_BYTES must be between"),
        ("STATE_HISTORY_HOURS", "0", "STATE_HISTORY_HOURS must be between"),
        ("UAIP_OBSERVE_SECONDS", "600", "UAIP_OBSERVE_SECONDS must be between"),
        ("UAIP_EVENT_COALESCE_MS", "51", "UAIP_EVENT_COALESCE_MS must be between 0 and 50"),
        ("UAIP_EVENT_RING_EVENTS", "100", "UAIP_EVENT_RING_EVENTS must be between 256 and 1000000"),
        ("UAIP_EVENT_RING_MB", "0", "UAIP_EVENT_RING_MB must be between 1 and 4096"),
    ],
)
def test_bad_value_names_the_variable(name, value, fragment):
    with pytest.raises(ConfigError) as raised:
        parse(**{name: value})
    assert fragment in str(raised.value)
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize("secret", [None, "", "changeme", "secret", "your-secret-key", "short-but-random"])
def test_production_refuses_missing_or_placeholder_jwt_secret(secret):
    env = {k: v for k, v in BASE.items() if k != "JWT_SECRET"}
    if secret is not None:
        env["JWT_SECRET"] = secret
    with pytest.raises(ConfigError, match="JWT_SECRET"):
        Settings.from_env(env)


def test_development_relaxes_only_the_secret_rule():
    env = {k: v for k, v in BASE.items() if k != "JWT_SECRET"}
    s = Settings.from_env({**env, "UAIP_ENV": "development"})
    assert len(s.jwt_secret) >= 32
    with pytest.raises(ConfigError, match="SERVER_PORT"):
        Settings.from_env({**env, "UAIP_ENV": "development", "SERVER_PORT": "x"})


def test_lists_and_multiple_nats_urls():
    s = parse(CORS_ORIGINS=" https://a.example, https://b.example ,", NATS_URL="nats://a:4222,nats://b:4222")
    assert s.cors_origins == ("https://a.example", "https://b.example")
    assert s.nats_url == "nats://a:4222,nats://b:4222"


def test_repr_hides_secrets():
    s = parse(REDIS_URL="redis://:pw@h/0", UAIP_BOOTSTRAP_CLIENT_SECRET="boot-secret-" + "b" * 32)
    text = repr(s)
    assert "x" * 40 not in text and "boot-secret" not in text and "postgresql://" not in text and ":pw@" not in text


@pytest.mark.parametrize(
    "value, expected",
    [
        ("https://Hub.Example.COM/", "https://hub.example.com"),
        ("HTTP://hub.example.com:8443", "http://hub.example.com:8443"),
        ("https://[::1]:9000", "https://[::1]:9000"),
    ],
)
def test_public_url_is_normalised_for_exact_comparison(value, expected):
    assert parse(UAIP_PUBLIC_URL=value).public_url == expected
    assert parse().public_url is None


@pytest.mark.parametrize("threads, waiters, per_client",
                         [(1, 0, 0), (2, 1, 1), (3, 1, 1), (4, 2, 1), (8, 4, 2), (16, 8, 4)])
def test_waiter_bounds_default_to_half_the_threads_and_half_of_that_per_client(threads, waiters, per_client):
    s = parse(SERVER_THREADS=str(threads))
    assert (s.max_waiters, s.max_waiters_per_client) == (waiters, per_client)
    assert s.server_threads - s.max_waiters >= 1  # a thread always stays free for probes


def test_waiter_bounds_can_be_set_but_always_leave_a_thread_free():
    s = parse(UAIP_MAX_WAITERS="3", UAIP_MAX_WAITERS_PER_CLIENT="3")
    assert (s.max_waiters, s.max_waiters_per_client) == (3, 3)
    assert parse(UAIP_MAX_WAITERS="0").max_waiters_per_client == 0
    with pytest.raises(ConfigError, match="UAIP_MAX_WAITERS must be between 0 and 3"):
        parse(UAIP_MAX_WAITERS="4")
    with pytest.raises(ConfigError, match="UAIP_MAX_WAITERS_PER_CLIENT must be between 0 and 2"):
        parse(UAIP_MAX_WAITERS_PER_CLIENT="3")


@pytest.mark.parametrize(
    "secret, fragment",
    [("changeme", "known placeholder"), ("ChangeMe", "known placeholder"), ("your-secret-key", "known placeholder"),
     ("uaip-development-only-secret-do-not-use-in-production", "known placeholder"),
     ("short-but-random-1", "at least 32 characters"), ("b" * 31, "at least 32 characters")],
)
def test_production_refuses_a_weak_bootstrap_client_secret(secret, fragment):
    """The bootstrap client is an admin credential: the JWT_SECRET rule, with one line naming the variable."""
    with pytest.raises(ConfigError) as raised:
        parse(UAIP_BOOTSTRAP_CLIENT_ID="boot-admin", UAIP_BOOTSTRAP_CLIENT_SECRET=secret)
    message = str(raised.value)
    assert message.startswith("UAIP_BOOTSTRAP_CLIENT_SECRET ") and fragment in message and "\n" not in message
    assert secret not in message  # the line names the variable, never the secret


def test_bootstrap_client_secret_rules_pass_strong_and_relax_in_development():
    strong = "s" * 32
    assert parse(UAIP_BOOTSTRAP_CLIENT_SECRET=strong).bootstrap_client_secret == strong
    assert parse(UAIP_ENV="development", UAIP_BOOTSTRAP_CLIENT_SECRET="dev").bootstrap_client_secret == "dev"
    assert parse().bootstrap_client_secret is None


def test_nats_auth_callout_settings():
    from app.infra.nats_callout import AccountKey, CurveKey

    assert parse().nats_auth_callout is False and parse().nats_callout_account == "UAIP"
    seed, xkey = AccountKey.generate(), CurveKey.generate()
    s = parse(NATS_AUTH_CALLOUT="true", NATS_CALLOUT_ISSUER_SEED=seed, NATS_CALLOUT_XKEY_SEED=xkey,
              NATS_CALLOUT_ACCOUNT="DEVICES")
    assert (s.nats_auth_callout, s.nats_callout_issuer_seed, s.nats_callout_xkey_seed, s.nats_callout_account) == \
        (True, seed, xkey, "DEVICES")
    assert seed not in repr(s) and xkey not in repr(s)
    for env, fragment in (({"NATS_AUTH_CALLOUT": "yes please"}, "NATS_AUTH_CALLOUT must be true or false"),
                          ({"NATS_AUTH_CALLOUT": "true"}, "NATS_CALLOUT_ISSUER_SEED is required"),
                          ({"NATS_CALLOUT_ISSUER_SEED": xkey}, "NATS_CALLOUT_ISSUER_SEED must be an account seed"),
                          ({"NATS_CALLOUT_XKEY_SEED": seed}, "NATS_CALLOUT_XKEY_SEED must be a curve")):
        with pytest.raises(ConfigError, match=fragment):
            parse(**env)


def test_nats_url_credentials_stay_out_of_repr():
    assert "hub-pass" not in repr(parse(NATS_URL="nats://uaip-hub:hub-pass@nats:4222"))
def test_development_never_signs_with_the_published_secret(monkeypatch):
    """Without JWT_SECRET, development mode signs with a random secret of this start, never a fixed constant."""
    from app.core import config

    monkeypatch.delenv(config.GENERATED_SECRET_ENV, raising=False)
    env = {k: v for k, v in BASE.items() if k != "JWT_SECRET"}
    first = Settings.from_env({**env, "UAIP_ENV": "development"}).jwt_secret
    assert first != config.DEVELOPMENT_JWT_SECRET and len(first) >= 32
    assert Settings.from_env({**env, "UAIP_ENV": "development"}).jwt_secret == first  # one per process start
    monkeypatch.delenv(config.GENERATED_SECRET_ENV)
    assert Settings.from_env({**env, "UAIP_ENV": "development"}).jwt_secret != first  # a new start, a new one


def test_a_master_shares_its_development_secret_with_its_children(monkeypatch):
    from app.core import config

    monkeypatch.delenv(config.GENERATED_SECRET_ENV, raising=False)
    monkeypatch.delenv("JWT_SECRET", raising=False)
    monkeypatch.setenv("UAIP_ENV", "development")
    assert config.share_development_secret() is True
    shared = os.environ[config.GENERATED_SECRET_ENV]
    assert config.share_development_secret() is False  # kept across a SIGHUP re-read
    env = {k: v for k, v in BASE.items() if k != "JWT_SECRET"}
    child = {**env, "UAIP_ENV": "development", config.GENERATED_SECRET_ENV: shared}  # what a worker inherits
    assert Settings.from_env(child).jwt_secret == shared


def test_production_ignores_a_generated_development_secret(monkeypatch):
    from app.core import config

    monkeypatch.delenv("UAIP_ENV", raising=False)
    assert config.share_development_secret() is False
    env = {k: v for k, v in BASE.items() if k != "JWT_SECRET"}
    with pytest.raises(ConfigError, match="JWT_SECRET is required"):
        Settings.from_env({**env, config.GENERATED_SECRET_ENV: "x" * 43})


def test_per_instance_defaults_follow_uaip_instance_or_the_port():
    from app.core.config import default_metrics_dir

    assert parse().instance == "8443" and parse(SERVER_PORT="9000").instance == "9000"
    assert default_metrics_dir({"SERVER_PORT": "9000"}) == "/tmp/uaip-metrics-9000"
    assert default_metrics_dir({}) == "/tmp/uaip-metrics-8443"
    assert default_metrics_dir({"UAIP_INSTANCE": "eu1", "SERVER_PORT": "9000"}) == "/tmp/uaip-metrics-eu1"
    assert parse().relay_queue_group == "uaip-relay"
    s = parse(UAIP_INSTANCE="eu1")
    assert s.instance == "eu1" and s.relay_queue_group == "uaip-relay-eu1"
    assert parse(UAIP_INSTANCE="eu1", UAIP_RELAY_QUEUE_GROUP="mine").relay_queue_group == "mine"


def test_the_relay_metrics_port_knows_whether_it_was_set():
    # no per-instance default: a taken default port is an error line, a taken explicit port stops the relay
    default = parse(UAIP_INSTANCE="eu1")
    assert default.relay_metrics_port == 9464 and default.relay_metrics_port_explicit is False
    assert parse(UAIP_RELAY_METRICS_PORT=" ").relay_metrics_port_explicit is False
    explicit = parse(UAIP_RELAY_METRICS_PORT="9464")
    assert explicit.relay_metrics_port == 9464 and explicit.relay_metrics_port_explicit is True
    assert parse(UAIP_RELAY_METRICS_PORT="0").relay_metrics_port == 0


@pytest.mark.parametrize("name", ["../etc", "a/b", ".hidden", "x" * 65, "two words"])
def test_uaip_instance_must_be_a_safe_file_name_part(name):
    with pytest.raises(ConfigError, match="UAIP_INSTANCE must be"):
        parse(UAIP_INSTANCE=name)
