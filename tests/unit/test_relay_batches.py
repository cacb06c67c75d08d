"""How the relay cuts its inbox into batches (Relay._take): an `acknowledged` ack waits briefly for the outcome
that usually follows it, so both apply in one transaction; anything else is taken as it is. And how the inbox
serves devices in turns (FairInbox), so one device's flood cannot push another device's ack back."""

import json

from prometheus_client import REGISTRY

from app.cli.relay import DEVICE_INBOX_MAX, OUTCOME_LINGER_SECONDS, PER_TURN, Relay
from app.cli.relay_inbox import DEVICE_BACKLOG, DEVICE_RATE, FULL, FairInbox
from app.core.config import load_settings
from app.infra.subjects import device_id_from_subject


class ArrivesWhileWaiting(FairInbox):
    """An inbox where `later` messages arrive while the relay waits on it: one per waiting take."""

    def __init__(self, now, later=()) -> None:
        super().__init__(1000, 1000, 16)
        for message in now:
            self.add(message)
        self.later = list(later)
        self.waits: list[float] = []

    def add(self, message) -> None:
        assert self.put(device_id_from_subject(message[0]), message, len(message[1])) is None

    def take(self, max_items, max_bytes, timeout=0.0):
        if timeout > 0:
            self.waits.append(timeout)
            if self.later and self.empty():
                self.add(self.later.pop(0))
        return super().take(max_items, max_bytes, timeout)


def ack(status: str, device: str = "d1") -> tuple[str, bytes, None]:
    return f"uaip.devices.{device}.acks", json.dumps({"message_id": "m", "status": status}).encode(), None


def heartbeat(device: str = "d1") -> tuple[str, bytes, None]:
    return f"uaip.devices.{device}.heartbeat", b"{}", None


def relay_with(inbox: FairInbox) -> Relay:
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


# --- the inbox: devices served in turns ------------------------------------------------------------------


def test_a_flooding_device_gives_way_to_another_device_within_one_batch():
    inbox = FairInbox(total=100_000, per_device=50_000, per_turn=PER_TURN)
    for n in range(20_000):
        assert inbox.put("flood", ("flood", n), 10) is None
    assert inbox.put("quiet", ("quiet", 0), 10) is None
    batch = inbox.take(500, 1 << 20)
    assert ("quiet", 0) in batch and len(batch) == 500
    # The flood's own order is kept, and the rest of it is still queued.
    assert [n for who, n in batch if who == "flood"] == list(range(499))
    assert inbox.qsize() == 20_000 - 499


def test_turns_take_at_most_per_turn_messages_of_a_device_before_the_next():
    inbox = FairInbox(total=1000, per_device=1000, per_turn=3)
    for n in range(6):
        inbox.put("a", ("a", n))
    for n in range(2):
        inbox.put("b", ("b", n))
    assert inbox.take(100, 1 << 20) == [("a", 0), ("a", 1), ("a", 2), ("b", 0), ("b", 1), ("a", 3), ("a", 4),
                                         ("a", 5)]
    assert inbox.empty()


def test_bounds_per_device_and_overall_refuse_and_say_why():
    inbox = FairInbox(total=5, per_device=3, per_turn=16)
    assert [inbox.put("a", n) for n in range(4)] == [None, None, None, DEVICE_BACKLOG]
    assert [inbox.put("b", n) for n in range(3)] == [None, None, FULL]
    assert inbox.qsize() == 5


def test_a_batch_stops_at_its_byte_budget_but_always_takes_one_message():
    inbox = FairInbox(total=100, per_device=100, per_turn=16)
    for n in range(10):
        inbox.put("big", n, 400_000)
    assert inbox.take(500, 1_000_000) == [0, 1, 2]
    inbox.put("huge", "x", 5_000_000)
    assert inbox.take(500, 1_000_000)[0] == 3


def test_take_waits_for_the_first_message_only_up_to_its_timeout():
    assert FairInbox(10, 10, 1).take(10, 100, timeout=0.01) == []


def dropped(kind: str, reason: str) -> float:
    return REGISTRY.get_sample_value("uaip_nats_messages_dropped_total",
                                     {"subject_kind": kind, "reason": reason}) or 0.0


def test_the_relay_bounds_one_device_and_counts_what_it_refuses():
    backlog, too_large = dropped("acks", "device_backlog"), dropped("heartbeat", "too_large")
    relay = relay_with(FairInbox(100_000, DEVICE_INBOX_MAX, PER_TURN))
    for _ in range(DEVICE_INBOX_MAX + 5):
        relay._receive("uaip.devices.noisy.acks", b"{}")
    relay._receive("uaip.devices.calm.acks", b"{}")
    relay._receive("uaip.devices.calm.heartbeat", b"x" * (relay.settings.max_message_size_bytes + 1))
    assert relay.inbox.qsize() == DEVICE_INBOX_MAX + 1
    assert dropped("acks", "device_backlog") == backlog + 5 and dropped("heartbeat", "too_large") == too_large + 1


def test_a_device_over_its_rate_is_refused_until_its_budget_refills(monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr("app.cli.relay_inbox.time.monotonic", lambda: clock[0])
    inbox = FairInbox(total=10_000, per_device=10_000, per_turn=16, rate=100, burst=50)
    assert [inbox.put("a", n) for n in range(51)] == [None] * 50 + [DEVICE_RATE]
    assert inbox.put("b", 0) is None  # another device has its own budget
    clock[0] += 0.1  # 10 more tokens
    assert [inbox.put("a", n) for n in range(11)] == [None] * 10 + [DEVICE_RATE]
