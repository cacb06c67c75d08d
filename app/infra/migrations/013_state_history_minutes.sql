-- Per-minute aggregates of the state history (docs/state.md, "History"): one row per device, property and minute
-- (aligned to the Unix epoch) that has points, kept exact at insert time by the statement that inserts the points
-- (app/services/state_history.py), so a bucketed read (bucket a multiple of 60 s) reads ~1,440 rows a day instead
-- of every point.
--
-- `points` counts every point of the minute and `numbers` the JSON numbers among them (the difference is what
-- makes avg/min/max refuse a range); `num_sum`/`num_min`/`num_max` aggregate `num` (NULL when the minute has no
-- number); `last_*` is the point that is latest by (at, seq), of any type. Partitioned by day like the history
-- itself, with the same partitions (made, moved and dropped together by the relay's sweep), so retention drops
-- the minutes with their points.
CREATE TABLE device_state_minutes (
    device_id   text NOT NULL REFERENCES devices (device_id) ON DELETE CASCADE,
    property    text NOT NULL,
    minute      timestamptz NOT NULL,
    points      bigint NOT NULL,
    numbers     bigint NOT NULL,
    num_sum     numeric,
    num_min     numeric,
    num_max     numeric,
    last_at     timestamptz NOT NULL,
    last_seq    bigint NOT NULL,
    last_value  jsonb NOT NULL,
    PRIMARY KEY (device_id, property, minute)
) PARTITION BY RANGE (minute);

CREATE TABLE device_state_minutes_default PARTITION OF device_state_minutes DEFAULT;

-- One minutes partition per history partition, with the same range.
DO $$
DECLARE
    part record;
BEGIN
    FOR part IN SELECT to_date(right(c.relname, 8), 'YYYYMMDD') AS day FROM pg_inherits i
                JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent
                WHERE p.relname = 'device_state_history' AND c.relname ~ '^device_state_history_[0-9]{8}$' LOOP
        EXECUTE format(
            'CREATE TABLE %I PARTITION OF device_state_minutes FOR VALUES FROM (%L) TO (%L)',
            'device_state_minutes_' || to_char(part.day, 'YYYYMMDD'),
            part.day::timestamp AT TIME ZONE 'UTC', (part.day + 1)::timestamp AT TIME ZONE 'UTC');
    END LOOP;
END $$;

-- The minutes of the points already stored (the same aggregate the insert path keeps).
INSERT INTO device_state_minutes (device_id, property, minute, points, numbers, num_sum, num_min, num_max,
                                  last_at, last_seq, last_value)
SELECT device_id, property, date_bin('1 minute', at, 'epoch'::timestamptz), count(*), count(num), sum(num), min(num),
       max(num), (array_agg(at ORDER BY at DESC, seq DESC))[1], (array_agg(seq ORDER BY at DESC, seq DESC))[1],
       (array_agg(value ORDER BY at DESC, seq DESC))[1]
FROM device_state_history GROUP BY 1, 2, 3;
