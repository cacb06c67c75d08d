-- Commands (messages) to devices and the idempotency keys of the requests that created them.
--
-- No foreign key to devices: a command's history outlives its device (deleting a device cancels its open
-- commands in the same transaction instead, app/services/registry.py).
CREATE TABLE commands (
    message_id       uuid PRIMARY KEY,
    device_id        text NOT NULL,
    command          text NOT NULL,
    params           jsonb NOT NULL DEFAULT '{}'::jsonb,
    qos              smallint NOT NULL CHECK (qos BETWEEN 0 AND 2),
    priority         smallint NOT NULL CHECK (priority BETWEEN 0 AND 10),
    status           text NOT NULL DEFAULT 'queued'
                     CHECK (status IN ('queued', 'sent', 'acknowledged', 'completed', 'failed', 'expired', 'cancelled')),
    result           jsonb,
    error            text,
    request_id       text,
    client_id        text,
    source           text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    sent_at          timestamptz,
    acknowledged_at  timestamptz,
    completed_at     timestamptz,
    expires_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    -- Delivery bookkeeping for the relay: how often it was published and when it may be published again.
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now()
);

-- GET /devices/{id}/commands: one device's commands, newest first.
CREATE INDEX commands_device_created_idx ON commands (device_id, created_at DESC, message_id DESC);
-- MAX_PENDING_COMMANDS_PER_DEVICE: counting a device's open commands under its row lock.
CREATE INDEX commands_open_idx ON commands (device_id) WHERE status IN ('queued', 'sent');
-- The relay's expiry sweep.
CREATE INDEX commands_expiry_idx ON commands (expires_at) WHERE status IN ('queued', 'sent', 'acknowledged');
-- The relay's redelivery sweep (publish never-sent commands, re-send unacknowledged ones with back-off).
CREATE INDEX commands_redelivery_idx ON commands (next_attempt_at) WHERE status IN ('queued', 'sent');

-- Idempotency-Key: one row per (client, key); the first response is replayed for 24 hours.
CREATE TABLE idempotency_keys (
    client_id      text NOT NULL,
    key            text NOT NULL,
    request_hash   text NOT NULL,
    message_id     uuid,
    response_body  jsonb,
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (client_id, key)
);
CREATE INDEX idempotency_keys_created_idx ON idempotency_keys (created_at);
