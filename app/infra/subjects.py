"""The NATS subject names of the hub (docs/api.md, "NATS subjects"): what devices and hub processes publish and
subscribe to, and how a device id is read back from a subject. Pure string work, no client: the relay, the web
layer, the simulator and the NATS auth callout share these without loading nats-py.
"""

from __future__ import annotations


def command_subject(device_id: str) -> str:
    return f"uaip.devices.{device_id}.commands"


def ack_subject(device_id: str) -> str:
    return f"uaip.devices.{device_id}.acks"


def heartbeat_subject(device_id: str) -> str:
    return f"uaip.devices.{device_id}.heartbeat"


DEVICE_EVENTS_SUBJECT = "uaip.events.devices"
# A device id is 1-128 characters and never makes an empty subject token (no leading or trailing ".", no ".."),
# so it has at most 64 dot-separated tokens: 64 one-character tokens and 63 dots.
MAX_DEVICE_ID_TOKENS = 64
# Internal, hub to hub: a command reached a final status (wakes `?wait=N` requests in every API worker).
MESSAGE_FINAL_SUBJECT = "uaip.internal.messages.final"


def state_desired_subject(device_id: str) -> str:
    return f"uaip.devices.{device_id}.state.desired"


def state_reported_subject(device_id: str) -> str:
    return f"uaip.devices.{device_id}.state.reported"


def state_get_subject(device_id: str) -> str:
    return f"uaip.devices.{device_id}.state.get"


# Internal, hub to hub: a device's reported state changed (wakes property observers in every API worker).
STATE_CHANGED_SUBJECT = "uaip.internal.state.changed"


def device_id_for(subject: str, suffix: str) -> str | None:
    """`uaip.devices.{id}.{suffix}` → id, for a suffix of any number of tokens (`state.reported`); None when the
    subject is not of that shape."""
    prefix, end = "uaip.devices.", "." + suffix
    if not (subject.startswith(prefix) and subject.endswith(end)):
        return None
    return subject[len(prefix):-len(end)] or None


def device_subject_patterns(suffix: str) -> list[str]:
    """`uaip.devices.*.{suffix}`, `uaip.devices.*.*.{suffix}`, … one pattern per possible token count of a device
    id. NATS `*` matches exactly one token, so one pattern would miss dotted ids such as `sensor.1`; each subject
    matches exactly one of these patterns. (`uaip.devices.>` would also match every command envelope the hub
    publishes; bench/subjects.py compares the two.)"""
    return [f"uaip.devices.{'.'.join('*' * depth)}.{suffix}" for depth in range(1, MAX_DEVICE_ID_TOKENS + 1)]


def relay_subscriptions() -> list[str]:
    """Every subject the relay consumes: device acks and heartbeats, whatever the device id's token count."""
    return device_subject_patterns("acks") + device_subject_patterns("heartbeat")


STATE_SUFFIXES = (".state.reported", ".state.desired", ".state.get")


def device_id_from_subject(subject: str) -> str | None:
    """`uaip.devices.{id}.acks` → id. Device ids may contain dots, so strip the fixed prefix and suffix."""
    prefix = "uaip.devices."
    if not subject.startswith(prefix):
        return None
    rest = subject[len(prefix):]
    for suffix in STATE_SUFFIXES:  # the state subjects end in two tokens
        if rest.endswith(suffix):
            return rest[: -len(suffix)] or None
    head, dot, _suffix = rest.rpartition(".")
    return head if dot and head else None
