"""The statuses of devices and commands, in one place that the services, the metrics wiring, Thing Descriptions
and the OpenAPI document all import (none of them has to import another to learn them).

A device is `pending` until its first heartbeat, then `online`, `offline` or `error`.
A command: queued → sent → acknowledged → completed | failed; expired and cancelled end a command that has not
finished.
"""

DEVICE_STATUSES = ("pending", "online", "offline", "error")

STATUSES = ("queued", "sent", "acknowledged", "completed", "failed", "expired", "cancelled")
UNFINISHED_STATUSES = ("queued", "sent", "acknowledged")  # may still expire or be cancelled
FINAL_STATUSES = ("completed", "failed", "expired", "cancelled")
ACK_STATUSES = ("acknowledged", "completed", "failed")
RANK = {"queued": 0, "sent": 1, "acknowledged": 2, "completed": 3, "failed": 3, "expired": 3, "cancelled": 3}

# The kinds of event in the event log (docs/events.md): every change the hub commits is one of these.
EVENT_TYPES = ("device.registered", "device.updated", "device.deleted", "device.online", "device.offline",
               "state.reported", "state.desired", "command.status")
