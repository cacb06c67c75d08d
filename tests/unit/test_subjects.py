"""NATS subjects for device ids with dots: the relay's patterns see every valid id exactly once, and the id comes
back out of the subject unchanged."""

import pytest

from app.infra.subjects import (
    MAX_DEVICE_ID_TOKENS,
    ack_subject,
    command_subject,
    device_id_from_subject,
    heartbeat_subject,
    relay_subscriptions,
)

DOTTED_IDS = ["sensor.1", "a.b.c", "plant-3:line_2.valve-7", "x" * 128, ".".join("a" * MAX_DEVICE_ID_TOKENS),
              "acks.heartbeat", "sensor.acks"]


def nats_matches(pattern: str, subject: str) -> bool:
    """NATS wildcard matching: `*` is exactly one token, `>` one or more trailing tokens."""
    wanted, tokens = pattern.split("."), subject.split(".")
    for i, token in enumerate(wanted):
        if token == ">":
            return len(tokens) > i
        if i >= len(tokens) or (token != "*" and token != tokens[i]):
            return False
    return len(tokens) == len(wanted)


@pytest.mark.parametrize("device_id", DOTTED_IDS + ["plain", "with:colon", "with-dash_and_underscore"])
def test_each_ack_and_heartbeat_subject_matches_exactly_one_relay_subscription(device_id):
    patterns = relay_subscriptions()
    for subject in (ack_subject(device_id), heartbeat_subject(device_id)):
        assert sum(nats_matches(p, subject) for p in patterns) == 1, subject
    assert not any(nats_matches(p, command_subject(device_id)) for p in patterns)


@pytest.mark.parametrize("device_id", DOTTED_IDS + ["plain", "with:colon"])
def test_device_id_from_subject_keeps_dots(device_id):
    assert device_id_from_subject(ack_subject(device_id)) == device_id
    assert device_id_from_subject(heartbeat_subject(device_id)) == device_id


def test_device_id_from_subject_refuses_foreign_subjects():
    assert device_id_from_subject("uaip.events.devices") is None
    assert device_id_from_subject("uaip.devices.acks") is None
    assert device_id_from_subject("other.devices.x.acks") is None


def test_the_longest_possible_id_has_as_many_tokens_as_there_are_patterns():
    longest = ".".join("a" * MAX_DEVICE_ID_TOKENS)
    assert len(longest) <= 128 and len(".".join("a" * (MAX_DEVICE_ID_TOKENS + 1))) > 128
    assert len(relay_subscriptions()) == 2 * MAX_DEVICE_ID_TOKENS
