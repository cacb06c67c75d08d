"""app/infra/messaging.py publishing on a real NATS server: a publish handed over without waiting (`wait=False`, the
command and final-status paths) arrives, in order with waited ones, and still fails at once without NATS."""

import json
import threading
import uuid

import pytest

from app.infra.messaging import Messaging, MessagingUnavailable
from tests.support.services import NATS_URL, free_port, wait_for


def test_publishes_not_waited_for_arrive_in_order(run_id):
    subject = f"uaip.test.{run_id}.{uuid.uuid4().hex[:8]}"
    received, lock = [], threading.Lock()
    subscriber, publisher = Messaging([NATS_URL]), Messaging([NATS_URL])
    try:
        assert subscriber.wait_connected(10) and publisher.wait_connected(10)
        subscriber.subscribe(subject, lambda _subject, data: (lock.acquire(), received.append(json.loads(data)["n"]),
                                                              lock.release()))
        subscriber.flush()
        for n in range(300):
            publisher.publish(subject, {"n": n}, wait=n % 7 == 0)  # mostly handed over, now and then waited for
        publisher.flush()
        wait_for(lambda: len(received) == 300, timeout=10, message="every message")
    finally:
        publisher.close()
        subscriber.close()
    assert received == list(range(300))


def test_a_publish_not_waited_for_still_fails_at_once_without_nats():
    nowhere = Messaging([f"nats://127.0.0.1:{free_port()}"])
    try:
        with pytest.raises(MessagingUnavailable):
            nowhere.publish("uaip.test.nowhere", {"n": 1}, wait=False)
        with pytest.raises(MessagingUnavailable):
            nowhere.publish("uaip.test.nowhere", {"n": 2}, wait=False)  # after the first attempt: no wait at all
    finally:
        nowhere.close()
