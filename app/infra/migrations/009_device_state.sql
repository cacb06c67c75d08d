-- Device state (docs/state.md): what a device reports, what agents want, and the history of reported values.
--
-- `device_types.properties` declares a type's properties next to its commands (json, like `commands`, so schemas
-- read back in the order they were written).
--
-- `device_states` holds one row per device, made on its first state write (a device without one has the empty
-- state at version 0). `reported_meta` / `desired_meta` map each member to its metadata ({"timestamp"} and
-- {"timestamp", "client_id"}). The row goes with its device.
--
-- `device_state_history` holds one row per accepted change of a reported value, partitioned by day on `at`
-- (the report's timestamp). Retention drops whole partitions (app/services/state_history.py, run by the relay's
-- sweep, which also creates the partitions ahead); the default partition only catches a write for a day whose
-- partition is missing, and the sweep moves such rows into the partition when it creates it.
ALTER TABLE device_types ADD COLUMN properties json NOT NULL DEFAULT '{}'::json
    CHECK (json_typeof(properties) = 'object');

CREATE TABLE device_states (
    device_id      text PRIMARY KEY REFERENCES devices (device_id) ON DELETE CASCADE,
    reported       jsonb NOT NULL DEFAULT '{}'::jsonb,
    desired        jsonb NOT NULL DEFAULT '{}'::jsonb,
    reported_meta  jsonb NOT NULL DEFAULT '{}'::jsonb,
    desired_meta   jsonb NOT NULL DEFAULT '{}'::jsonb,
    version        bigint NOT NULL DEFAULT 0,
    updated_at     timestamptz
);

CREATE TABLE device_state_history (
    device_id  text NOT NULL REFERENCES devices (device_id) ON DELETE CASCADE,
    property   text NOT NULL,
    at         timestamptz NOT NULL,
    seq        bigint GENERATED ALWAYS AS IDENTITY,
    value      jsonb NOT NULL
) PARTITION BY RANGE (at);

CREATE INDEX device_state_history_lookup_idx ON device_state_history (device_id, property, at, seq);

CREATE TABLE device_state_history_default PARTITION OF device_state_history DEFAULT;

-- The days around now, so the history works before the first sweep (the sweep keeps them going).
DO $$
DECLARE
    day date;
BEGIN
    FOR day IN SELECT generate_series((now() AT TIME ZONE 'UTC')::date - 8, (now() AT TIME ZONE 'UTC')::date + 3,
                                       interval '1 day')::date LOOP
        EXECUTE format(
            'CREATE TABLE IF NOT EXISTS %I PARTITION OF device_state_history FOR VALUES FROM (%L) TO (%L)',
            'device_state_history_' || to_char(day, 'YYYYMMDD'),
            day::timestamp AT TIME ZONE 'UTC', (day + 1)::timestamp AT TIME ZONE 'UTC');
    END LOOP;
END $$;
