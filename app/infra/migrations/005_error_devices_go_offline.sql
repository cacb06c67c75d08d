-- A device that reported `error` still heartbeats; when the heartbeats stop it goes `offline` like an `online` one.
-- The relay's stale-device sweep now looks at both statuses, so its partial index covers both.
DROP INDEX IF EXISTS devices_last_seen_idx;
CREATE INDEX devices_heartbeating_idx ON devices (last_seen) WHERE status IN ('online', 'error');
