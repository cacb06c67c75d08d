"""The `?wait=N` bounds: a worker lets at most `max_waiters` requests wait, at most `max_per_client` of them from one
API client; slots come back when a wait ends, however it ends."""

import pytest

from app.services.commands.waiters import Waiters


def test_per_client_bound_then_per_process_bound():
    waiters = Waiters(messaging=None, max_waiters=3, max_per_client=2)
    with waiters.slot("a") as a1, waiters.slot("a") as a2, waiters.slot("a") as a3:
        assert (a1, a2, a3) == (True, True, False)  # client a: 2 at most
        with waiters.slot("b") as b1, waiters.slot("c") as c1:
            assert (b1, c1) == (True, False)  # the process: 3 at most
            assert waiters.waiting() == 3
    assert waiters.waiting() == 0
    with waiters.slot("c") as again:
        assert again


def test_slot_is_returned_when_the_wait_fails():
    waiters = Waiters(messaging=None, max_waiters=1, max_per_client=1)
    with pytest.raises(RuntimeError):
        with waiters.slot("a"):
            raise RuntimeError("boom")
    assert waiters.waiting() == 0


def test_zero_means_nobody_waits():
    waiters = Waiters(messaging=None, max_waiters=0, max_per_client=0)
    with waiters.slot("a") as admitted:
        assert not admitted


def test_a_request_over_the_bound_returns_at_once_without_reading_the_database():
    class NoDatabase:
        def transaction(self, work):
            raise AssertionError("a refused waiter must not poll")

    waiters = Waiters(messaging=None, max_waiters=1, max_per_client=1)
    with waiters.slot("a"):
        assert waiters.wait(NoDatabase(), "00000000-0000-0000-0000-000000000001", 30, client_id="b") is None
