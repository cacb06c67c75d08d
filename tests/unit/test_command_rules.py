"""Pure rules of the command service: status transitions, redelivery back-off, request hashing."""

import pytest

from app.services.commands.acks import transition_error
from app.services.commands.submit import request_hash
from app.services.commands.sweeps import retry_delay


@pytest.mark.parametrize(
    "current, new, expected",
    [
        ("queued", "acknowledged", None),
        ("sent", "acknowledged", None),
        ("sent", "completed", None),
        ("acknowledged", "failed", None),
        ("acknowledged", "acknowledged", None),  # a duplicate is idempotent
        ("completed", "completed", None),
        ("completed", "acknowledged", "INVALID_TRANSITION"),
        ("completed", "failed", "INVALID_TRANSITION"),
        ("failed", "completed", "INVALID_TRANSITION"),
        ("cancelled", "completed", "INVALID_TRANSITION"),
        ("expired", "completed", "MESSAGE_EXPIRED"),
    ],
)
def test_status_only_moves_forward(current, new, expected):
    assert transition_error(current, new, expired_by_time=False) == expected


def test_an_ack_after_the_ttl_is_expired_even_before_the_sweeper_ran():
    assert transition_error("sent", "completed", expired_by_time=True) == "MESSAGE_EXPIRED"
    assert transition_error("completed", "completed", expired_by_time=True) is None


def test_retry_delay_doubles_up_to_a_ceiling():
    assert [retry_delay(n, 10) for n in (1, 2, 3, 4)] == [10, 20, 40, 80]
    assert retry_delay(50, 10) == 300
    assert retry_delay(1, 600) == 600  # a base above the ceiling is still honoured


def test_request_hash_ignores_key_order_but_not_route_or_values():
    assert request_hash("device:a", {"x": 1, "y": 2}) == request_hash("device:a", {"y": 2, "x": 1})
    assert request_hash("device:a", {"x": 1}) != request_hash("device:b", {"x": 1})
    assert request_hash("device:a", {"x": 1}) != request_hash("device:a", {"x": 2})
