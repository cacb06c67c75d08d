-- State history as numbers (docs/state.md, "History"): `num` is a point's value as a number when it is a JSON
-- number, NULL otherwise. The bucket aggregates (avg, min, max) and their "values that are not numbers" check
-- read this column instead of converting every row's jsonb at query time.
--
-- A stored generated column: every way a point is written (the services, a bulk load) fills it, and adding it
-- here fills it for the points already stored. numeric keeps the aggregates exact, as before (1 == 1.0, any
-- magnitude JSON allows). The lookup index is rebuilt carrying `num`, so an aggregate over a device's property
-- and time range is answered from the index alone.
ALTER TABLE device_state_history ADD COLUMN num numeric
    GENERATED ALWAYS AS (CASE WHEN jsonb_typeof(value) = 'number' THEN (value #>> '{}')::numeric END) STORED;

DROP INDEX IF EXISTS device_state_history_lookup_idx;
CREATE INDEX device_state_history_lookup_idx ON device_state_history (device_id, property, at, seq) INCLUDE (num);
