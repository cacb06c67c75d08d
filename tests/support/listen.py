"""Listen on NATS subjects in a test and look at what arrived (polling with deadlines, never sleeping)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

from app.infra.messaging import Messaging
from tests.support.services import wait_for


class NatsCollector:
    """Collects JSON messages on the given subjects: `with NatsCollector(url, [subject]) as c: ...`."""

    def __init__(self, nats_url: str, subjects: list[str]) -> None:
        self.messaging = Messaging([nats_url], name="uaip-test-listener")
        self.subjects = subjects
        self.messages: list[tuple[str, Any]] = []
        self._lock = threading.Lock()

    def _on(self, subject: str, data: bytes) -> None:
        try:
            body = json.loads(data)
        except ValueError:
            body = data
        with self._lock:
            self.messages.append((subject, body))

    def __enter__(self) -> NatsCollector:
        assert self.messaging.wait_connected(10), "test listener could not connect to NATS"
        for subject in self.subjects:
            self.messaging.subscribe(subject, self._on)
        self.messaging.flush()  # the server has our subscriptions before the test publishes anything
        return self

    def __exit__(self, *exc) -> None:
        self.messaging.close()

    def bodies(self, predicate: Callable[[str, Any], bool] = lambda s, b: True) -> list[Any]:
        with self._lock:
            return [body for subject, body in self.messages if predicate(subject, body)]

    def wait_for(self, predicate: Callable[[str, Any], bool], count: int = 1, timeout: float = 10.0) -> list[Any]:
        return wait_for(lambda: (found := self.bodies(predicate)) and len(found) >= count and found,
                        timeout=timeout, message=f"{count} NATS message(s) on {self.subjects}")
