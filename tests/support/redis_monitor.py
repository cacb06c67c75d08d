"""What a Redis server was asked while some code ran, seen from the server itself (MONITOR).

Use a private server (tests/support/servers.py RedisServer): MONITOR sees every client of the server.
"""

from __future__ import annotations

import collections
import threading
import uuid
from collections.abc import Callable

import redis


def commands_during(url: str, action: Callable[[], object]) -> collections.Counter:
    """Run `action` and count the commands the server received meanwhile, by upper-case name. Commands a Lua
    script ran inside the server are counted apart, as "lua:<NAME>": they are not round trips."""
    marker = f"monitor-done-{uuid.uuid4().hex}"
    stopper = redis.Redis.from_url(url)
    stopper.ping()  # connect now, so its connection set-up is not counted
    seen: collections.Counter = collections.Counter()
    failure: list[BaseException] = []

    def run():
        try:
            action()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            failure.append(exc)
        finally:
            stopper.echo(marker)

    with redis.Redis.from_url(url).monitor() as monitor:
        runner = threading.Thread(target=run)
        runner.start()
        for command in monitor.listen():
            if marker in command["command"]:
                break
            name = command["command"].split()[0].strip('"').upper()
            seen[f"lua:{name}" if command.get("client_type") == "lua" else name] += 1
        runner.join()
    stopper.close()
    if failure:
        raise failure[0]
    return seen


def round_trips(counts: collections.Counter) -> int:
    """Commands clients sent (each a round trip), leaving out what scripts ran inside the server."""
    return sum(count for name, count in counts.items() if not name.startswith("lua:"))
