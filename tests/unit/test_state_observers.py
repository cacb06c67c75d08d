"""Property observers are woken by the state-change notice (app/web/device_state.py): one notice names every
device a batch of reports changed; the one-device form older hubs send still works."""

from __future__ import annotations

import json

from app.web.device_state import Observers


class NoMessaging:
    def subscribe(self, *_args, **_kwargs) -> None:
        return None


def test_a_batch_notice_wakes_the_observers_of_every_device_it_names_and_no_other():
    observers = Observers(NoMessaging())
    with observers.watching("a") as a, observers.watching("b") as b, observers.watching("c") as c:
        observers._on_changed("uaip.internal.state.changed", json.dumps({"device_ids": ["a", "c", 7]}).encode())
        assert (a.is_set(), b.is_set(), c.is_set()) == (True, False, True)


def test_the_one_device_notice_and_bad_notices():
    observers = Observers(NoMessaging())
    with observers.watching("a") as a, observers.watching("b") as b:
        for bad in (b"not json", b"[]", b'{"device_ids": 5}', b"{}"):
            observers._on_changed("uaip.internal.state.changed", bad)
        assert not a.is_set() and not b.is_set()
        observers._on_changed("uaip.internal.state.changed", b'{"device_id": "b"}')
        assert not a.is_set() and b.is_set()
