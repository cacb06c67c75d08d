"""How the relay cuts its inbox into batches (Relay._take): an `acknowledged` ack waits briefly for the outcome
that usually follows it, so both apply in one transaction; anything else is taken as it is."""

import json
import queue

from app.cli.relay import OUTCOME_LINGER_SECONDS, Relay
from app.core.config import load_settings


class ArrivesWhileWaiting(queue.Queue):
    """An inbox where `later` messages arrive while the relay waits on it: one per blocking get."""

    def __init__(self, now, later=()) -> None:
        super().__init__()
        for message in now:
            self.put(message)
        self.later = list(later)
        self.waits: list[float] = []

    def get(self, block=True, timeout=None):
        if block and timeout is not None:
            self.waits.append(timeout)
            if self.later and self.empty():
                self.put(self.later.pop(0))
        return super().get(block, timeout)


def ack(status: str, device: str = "d1") -> tuple[str, bytes, None]:
    return f"uaip.devices.{device}.acks", json.dumps({"message_id": "m", "status": status}).encode(), None


def heartbeat(device: str = "d1") -> tuple[str, bytes, None]:
    return f"uaip.devices.{device}.heartbeat", b"{}", None


def relay_with(inbox: queue.Queue) -> Relay:
    relay = Relay(None, None, load_settings({"DATABASE_URL": "postgresql://x/y", "NATS_URL": "nats://x",
                                              "UAIP_ENV": "development"}))
    relay.inbox = inbox
    return relay


def test_an_acknowledged_ack_waits_for_its_outcome_and_they_go_together():
    inbox = ArrivesWhileWaiting([ack("acknowledged")], later=[ack("completed"), ack("acknowledged", "d2")])
    assert relay_with(inbox)._take(0) == [ack("acknowledged"), ack("completed")]
    assert len(inbox.waits) == 1 and 0 < inbox.waits[0] <= OUTCOME_LINGER_SECONDS  # no wait after the outcome
    assert inbox.later == [ack("acknowledged", "d2")]  # not waited for: left for the next batch


def test_outcomes_heartbeats_and_mixed_batches_are_taken_at_once():
    for now in ([ack("completed")], [ack("failed")], [heartbeat()], [ack("acknowledged"), ack("failed", "d2")]):
        inbox = ArrivesWhileWaiting(now, later=[ack("completed", "d9")])
        assert relay_with(inbox)._take(0) == now
        assert inbox.waits == []


def test_the_wait_is_bounded_when_no_outcome_comes():
    inbox = ArrivesWhileWaiting([ack("acknowledged")], later=[heartbeat(), ack("acknowledged", "d2")])
    batch = relay_with(inbox)._take(0)
    # Whatever arrived within the linger joined the batch; every wait was within it, and then it stopped.
    assert batch == [ack("acknowledged"), heartbeat(), ack("acknowledged", "d2")][:len(batch)]
    assert 1 <= len(inbox.waits) <= 3 and all(0 < wait <= OUTCOME_LINGER_SECONDS for wait in inbox.waits)
