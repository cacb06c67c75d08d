"""The relay's inbox: NATS messages queued per device and taken in turns, so one device's flood cannot delay the
others (docs/nats-security.md, "Whatever arrives, the relay goes on").

The NATS thread puts each message in its device's queue (a deque append under a lock: microseconds, so the
NATS connection keeps up with any flood the network carries). The relay's main thread takes batches round-robin:
at most PER_TURN messages of a device, then the next device, until the batch is full. A device that published
ten thousand junk acks therefore contributes at most PER_TURN messages to the batch that also carries another
device's ack, and that ack waits for at most one batch.

Bounds: at most `per_device` queued messages per device and `total` overall; beyond that a message is refused
(the caller counts it). The device id is the one in the subject: without the auth callout a publisher can use
many ids, and then only the overall bound holds (docs/nats-security.md).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")

FULL = "inbox_full"  # refusal reasons, labels of uaip_nats_messages_dropped_total
DEVICE_BACKLOG = "device_backlog"


class FairInbox(Generic[T]):
    def __init__(self, total: int, per_device: int, per_turn: int) -> None:
        self.total, self.per_device, self.per_turn = total, per_device, per_turn
        self._queues: dict[str, deque[tuple[T, int]]] = {}
        self._turns: deque[str] = deque()  # devices with queued messages, in the order they are served
        self._size = 0
        self._ready = threading.Condition(threading.Lock())

    def put(self, device_id: str, item: T, size: int = 0) -> str | None:
        """Queue `item` (of `size` bytes) for `device_id`; None, or why it was refused."""
        with self._ready:
            if self._size >= self.total:
                return FULL
            queue = self._queues.get(device_id)
            if queue is None:
                queue = self._queues[device_id] = deque()
                self._turns.append(device_id)
            elif len(queue) >= self.per_device:
                return DEVICE_BACKLOG
            queue.append((item, size))
            self._size += 1
            self._ready.notify()
        return None

    def take(self, max_items: int, max_bytes: int, timeout: float = 0.0) -> list[T]:
        """Up to `max_items` messages (and about `max_bytes`: at least one message however large), devices
        served in turn; waits up to `timeout` seconds for the first one."""
        deadline = time.monotonic() + timeout
        with self._ready:
            while self._size == 0:
                left = deadline - time.monotonic()
                if left <= 0 or not self._ready.wait(left):
                    if self._size == 0:
                        return []
            batch: list[T] = []
            taken_bytes = 0
            while self._turns and len(batch) < max_items and (not batch or taken_bytes < max_bytes):
                device_id = self._turns.popleft()
                queue = self._queues[device_id]
                for _ in range(min(self.per_turn, max_items - len(batch))):
                    if not queue or (batch and taken_bytes >= max_bytes):
                        break
                    item, size = queue.popleft()
                    batch.append(item)
                    taken_bytes += size
                if queue:
                    self._turns.append(device_id)  # back of the line
                else:
                    del self._queues[device_id]
            self._size -= len(batch)
            return batch

    def qsize(self) -> int:
        with self._ready:
            return self._size

    def empty(self) -> bool:
        return self.qsize() == 0
