"""What the rate limiter costs Redis, at a small and a huge per-minute limit (run: `python -m bench.limiter`).

The hub's cost promise: a client allowed 1,000,000 requests per minute costs Redis what one allowed 100 does. Two
gunicorns run the full pipeline's ping view (`bench.apps:ping_full()`) on one private Redis, one configured with
100/min (burst 20), the other with 1,000,000/min (burst 1,000,000). Each round sends both the same work with `hey`
— 100 new clients x 20 requests, all admitted — in A/B order, and reads Redis's own accounting for it
(`INFO commandstats`, reset before each batch):

- Redis time per request: the EVALSHA calls' total time (the whole script, the commands it runs included) divided
  by the requests sent;
- round trips per request: the commands clients sent (every command counted, less those the script runs inside
  Redis and this benchmark's own CONFIG RESETSTAT) divided by the requests sent.

Then two one-client cases: 2,000 requests from one client at 1,000,000/min (all admitted: the case that made the old
moving-window list grow to one entry per request) and at 100/min (20 admitted, the rest refused), and the client's
key afterwards (type, fields, MEMORY USAGE bytes). The machine may be shared: figures are what this run saw.
"""

from __future__ import annotations

import json
import secrets
import uuid

import redis

from bench.apps import PING
from bench.harness import Gunicorn, hey, median

SCRIPT_COMMANDS = {"hmget", "hset", "pexpire", "time"}  # what the limiter's script runs inside Redis
OWN_COMMANDS = {"config|resetstat"}


def _tokens(jwt_secret: str, count: int) -> list[tuple[str, str]]:
    from app.auth.tokens import issue_token

    ids = [f"bench-limiter-{uuid.uuid4().hex[:10]}" for _ in range(count)]
    return [(client_id, issue_token(client_id, ["device:read"], jwt_secret, 3600)[0]) for client_id in ids]


def _batch(store: redis.Redis, url: str, tokens: list[tuple[str, str]], per_client: int) -> dict:
    """Send `per_client` requests for each token; Redis's accounting for exactly that work."""
    statuses: dict[int, int] = {}
    store.config_resetstat()
    for _, token in tokens:
        result = hey(url, requests=per_client, concurrency=min(4, per_client),
                     headers={"Authorization": f"Bearer {token}"})
        for code, count in result.statuses.items():
            statuses[code] = statuses.get(code, 0) + count
    stats = {name.removeprefix("cmdstat_"): entry for name, entry in store.info("commandstats").items()}
    sent = len(tokens) * per_client
    client_commands = sum(e["calls"] for name, e in stats.items() if name not in SCRIPT_COMMANDS | OWN_COMMANDS)
    return {"sent": sent, "statuses": statuses,
            "redis_usec_per_request": stats.get("evalsha", {"usec": 0})["usec"] / sent,
            "round_trips_per_request": client_commands / sent}


def _key(store: redis.Redis, prefix: str, client_id: str) -> dict:
    from app.ratelimit.hooks import STRATEGY

    key = f"{prefix}:limits:{STRATEGY}:client:{client_id}"
    kind = store.type(key).decode()
    return {"type": kind, "fields": store.hlen(key) if kind == "hash" else None, "bytes": store.memory_usage(key)}


def measure(rounds: int = 3, clients: int = 100, per_client: int = 20, one_client_requests: int = 2000) -> dict:
    from tests.support.servers import RedisServer
    from tests.support.services import NATS_URL, POSTGRES_ADMIN_URL

    jwt_secret = secrets.token_urlsafe(48)
    base = {
        "DATABASE_URL": POSTGRES_ADMIN_URL,  # the ping view never queries; the pool is lazy
        "NATS_URL": NATS_URL,
        "JWT_SECRET": jwt_secret,
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "warning",
    }
    limits = {"100": ("100", "20"), "1000000": ("1000000", "1000000")}
    with RedisServer() as server:
        store = redis.Redis.from_url(server.url)
        envs = {name: {**base, "REDIS_URL": server.url, "RATE_LIMIT_PER_MINUTE": per_minute, "RATE_LIMIT_BURST": burst,
                       "UAIP_REDIS_KEY_PREFIX": f"uaip-bench-{uuid.uuid4().hex[:8]}"}
                for name, (per_minute, burst) in limits.items()}
        samples: dict[str, list[dict]] = {name: [] for name in limits}
        with Gunicorn(envs["100"], target="bench.apps:ping_full()") as small, \
                Gunicorn(envs["1000000"], target="bench.apps:ping_full()") as huge:
            servers = {"100": small, "1000000": huge}
            for hub in servers.values():  # warm-up (its own ip: bucket): connections, script load
                hey(f"{hub.url}{PING}", requests=50, concurrency=4)
            for _ in range(rounds):
                for name, hub in servers.items():  # A, B, A, B, ...: drift in machine load hits both alike
                    samples[name].append(_batch(store, f"{hub.url}{PING}", _tokens(jwt_secret, clients), per_client))
            one_client = {}
            for name, hub in servers.items():
                (client_id, token), = tokens = _tokens(jwt_secret, 1)
                one_client[name] = {**_batch(store, f"{hub.url}{PING}", tokens, one_client_requests),
                                    "key": _key(store, envs[name]["UAIP_REDIS_KEY_PREFIX"], client_id)}
    figures: dict = {}
    for name, batches in samples.items():
        figures[name] = {
            "redis_usec_per_request": median([b["redis_usec_per_request"] for b in batches]),
            "round_trips_per_request": median([b["round_trips_per_request"] for b in batches]),
            "statuses": [b["statuses"] for b in batches],
            "one_client": one_client[name],
        }
    figures["usec_ratio_1000000_vs_100"] = (figures["1000000"]["redis_usec_per_request"]
                                           / figures["100"]["redis_usec_per_request"])
    figures.update(rounds=rounds, clients=clients, per_client=per_client)
    return figures


def main() -> None:
    print(json.dumps(measure(), indent=2))


if __name__ == "__main__":
    main()
