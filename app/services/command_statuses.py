"""The statuses a command moves through, in one place that the command service, the metrics wiring and the
OpenAPI document all import (none of them has to import another to learn them).

queued → sent → acknowledged → completed | failed; expired and cancelled end a command that has not finished.
"""

STATUSES = ("queued", "sent", "acknowledged", "completed", "failed", "expired", "cancelled")
OPEN_STATUSES = ("queued", "sent")  # counted against MAX_PENDING_COMMANDS_PER_DEVICE, redelivered
UNFINISHED_STATUSES = ("queued", "sent", "acknowledged")  # may still expire or be cancelled
FINAL_STATUSES = ("completed", "failed", "expired", "cancelled")
ACK_STATUSES = ("acknowledged", "completed", "failed")
RANK = {"queued": 0, "sent": 1, "acknowledged": 2, "completed": 3, "failed": 3, "expired": 3, "cancelled": 3}
