-- Per-minute aggregates of the state history (docs/state.md, "History"): one row per device, property and minute
-- (aligned to the Unix epoch) that has points, kept exact at insert time, so a bucketed read (bucket a multiple of
-- 60 s) reads ~1,440 rows a day instead of every point.
--
-- `points` counts every point of the minute and `numbers` the JSON numbers among them (the difference is what
-- makes avg/min/max refuse a range); `num_sum`/`num_min`/`num_max` aggregate `num` (NULL when the minute has no
-- number); `last_*` is the point that is latest by (at, seq), of any type. Partitioned by day like the history
-- itself, with the same partitions (made, moved and dropped together by the relay's sweep), so retention drops
-- the minutes with their points.
--
-- A statement-level trigger on the history folds each INSERT statement's points, grouped by minute, into the rows
-- (one INSERT … ON CONFLICT DO UPDATE per statement, in its transaction: a relay batch costs one more statement
-- inside PostgreSQL, no round trip). A trigger rather than a second statement in the service, so every writer keeps
-- the minutes exact: the previous release while pods roll (it only inserts points), a bulk load, psql. The history
-- is locked against writes (SHARE) for the migration, so no point slips between the backfill and the trigger.
LOCK TABLE device_state_history IN SHARE MODE;

CREATE TABLE device_state_minutes (
    device_id   text NOT NULL,
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

-- Every aggregate merges exactly: counts and sums add, min/max take the least/greatest, and the last keeps the
-- later (at, seq), so a point arriving late (older timestamp, higher seq) is the last of its minute only if it is
-- latest there, as in the raw rows. SET expressions all read the stored row (m.*). Groups are sorted, so
-- concurrent batches lock shared minutes in the same order.
CREATE FUNCTION device_state_minutes_add() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO device_state_minutes AS m (device_id, property, minute, points, numbers, num_sum, num_min, num_max,
                                           last_at, last_seq, last_value)
    SELECT device_id, property, date_bin('1 minute', at, 'epoch'::timestamptz), count(*), count(num), sum(num),
           min(num), max(num), (array_agg(at ORDER BY at DESC, seq DESC))[1],
           (array_agg(seq ORDER BY at DESC, seq DESC))[1], (array_agg(value ORDER BY at DESC, seq DESC))[1]
    FROM new_points GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
    ON CONFLICT (device_id, property, minute) DO UPDATE SET
        points = m.points + EXCLUDED.points,
        numbers = m.numbers + EXCLUDED.numbers,
        num_sum = coalesce(m.num_sum + EXCLUDED.num_sum, m.num_sum, EXCLUDED.num_sum),
        num_min = least(m.num_min, EXCLUDED.num_min),
        num_max = greatest(m.num_max, EXCLUDED.num_max),
        last_at = CASE WHEN (EXCLUDED.last_at, EXCLUDED.last_seq) > (m.last_at, m.last_seq)
                       THEN EXCLUDED.last_at ELSE m.last_at END,
        last_seq = CASE WHEN (EXCLUDED.last_at, EXCLUDED.last_seq) > (m.last_at, m.last_seq)
                        THEN EXCLUDED.last_seq ELSE m.last_seq END,
        last_value = CASE WHEN (EXCLUDED.last_at, EXCLUDED.last_seq) > (m.last_at, m.last_seq)
                          THEN EXCLUDED.last_value ELSE m.last_value END;
    RETURN NULL;
END $$;

-- Statement-level on the partitioned table: it fires for INSERTs into device_state_history (the transition table
-- holds the points of every partition they went to), not for the sweep's move of rows from the default partition
-- into a new day's table, which inserts into that table directly (its minutes move with it).
CREATE TRIGGER device_state_history_minutes AFTER INSERT ON device_state_history
    REFERENCING NEW TABLE AS new_points FOR EACH STATEMENT EXECUTE FUNCTION device_state_minutes_add();

-- The minutes of the points already stored (the same aggregate the insert path keeps).
INSERT INTO device_state_minutes (device_id, property, minute, points, numbers, num_sum, num_min, num_max,
                                  last_at, last_seq, last_value)
SELECT device_id, property, date_bin('1 minute', at, 'epoch'::timestamptz), count(*), count(num), sum(num), min(num),
       max(num), (array_agg(at ORDER BY at DESC, seq DESC))[1], (array_agg(seq ORDER BY at DESC, seq DESC))[1],
       (array_agg(value ORDER BY at DESC, seq DESC))[1]
FROM device_state_history GROUP BY 1, 2, 3;

ALTER TABLE device_state_minutes ADD FOREIGN KEY (device_id) REFERENCES devices (device_id) ON DELETE CASCADE;
