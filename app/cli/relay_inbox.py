"""The relay's inbox: NATS messages queued per device and taken in turns, so one device's flood cannot delay the
others (docs/nats-security.md, "Whatever arrives, the relay goes on").

The NATS thread puts each message in its device's queue (a deque append under a lock: microseconds, so the
NATS connection keeps up with any flood the network carries). The relay's main thread takes batches round-robin:
at most PER_TURN messages of a device, then the next device, until the batch is full. A device that published
ten thousand junk acks therefore contributes at most PER_TURN messages to the batch that also carries another
device's ack, and that ack waits for at most one batch.

Bounds: at most `per_device` queued messages per device and `total` overall, and each device may queue at most
`rate` messages a second on average (`burst` at once, a token bucket); beyond that a message is refused (the
caller counts it). The rate bound is what keeps a flood cheap: its excess is refused on the NATS thread in
microseconds instead of being parsed and looked up by the main thread, which would hold the interpreter's lock
the NATS thread needs to read on. An honest device is far below it (two acks per command, at most
MAX_PENDING_COMMANDS_PER_DEVICE open commands, a heartbeat every few seconds). The device id is the one in the
subject: without the auth callout a publisher can use many ids, and then only the overall bound holds
(docs/nats-security.md).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")

FULL = "inbox_full"  # refusal reasons, labels of uaip_nats_messages_dropped_total
DEVICE_BACKLOG = "device_backlog"
DEVICE_RATE = "device_rate"
BUDGETS_MAX = 10_000  # device budgets kept; past that, full (idle) ones are forgotten


class FairInbox(Generic[T]):
    def __init__(self, total: int, per_device: int, per_turn: int, rate: float = float("inf"),
                 burst: int = 0) -> None:
        self.total, self.per_device, self.per_turn = total, per_device, per_turn
        self.rate, self.burst = rate, float(burst or per_device)
        self._budgets: dict[str, list[float]] = {}  # device id → [tokens, time of the last refill]
        self._queues: dict[str, deque[tuple[T, int]]] = {}
        self._turns: deque[str] = deque()  # devices with queued messages, in the order they are served
        self._size = 0
        self._ready = threading.Condition(threading.Lock())

    def put(self, device_id: str, item: T, size: int = 0) -> str | None:
        """Queue `item` (of `size` bytes) for `device_id`; None, or why it was refused."""
        with self._ready:
            if self._size >= self.total:
                return FULL
            if self.rate != float("inf") and not self._spend(device_id):
                return DEVICE_RATE
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

    def _spend(self, device_id: str) -> bool:
        """Take one token from the device's bucket (lock held); False when it is empty."""
        now = time.monotonic()
        budget = self._budgets.get(device_id)
        if budget is None:
            if len(self._budgets) >= BUDGETS_MAX:
                self._forget_idle(now)
            budget = self._budgets[device_id] = [self.burst, now]
        else:
            budget[0] = min(self.burst, budget[0] + (now - budget[1]) * self.rate)
            budget[1] = now
        if budget[0] < 1:
            return False
        budget[0] -= 1
        return True

    def _forget_idle(self, now: float) -> None:
        """Drop the budgets that have refilled completely: those devices start again from a full bucket anyway."""
        for device_id, (tokens, stamp) in list(self._budgets.items()):
            if tokens + (now - stamp) * self.rate >= self.burst:
                del self._budgets[device_id]
        if len(self._budgets) >= BUDGETS_MAX:  # all busy (a spoofed-id flood): start over rather than grow
            self._budgets.clear()

    def qsize(self) -> int:
        with self._ready:
            return self._size

    def empty(self) -> bool:
        return self.qsize() == 0
