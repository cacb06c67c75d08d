-- The event outbox (docs/events.md): every change the hub commits writes its event here in the same transaction.
--
-- `seq` is taken when the row is inserted; `pos`, the event's place in the stream, is given after commit by the
-- sequencer (event_outbox_sequence), one transaction at a time. A reader that resumes with "pos > my last" can
-- never skip a row that committed late: a row gets its pos only once it is committed and visible, and the
-- sequencers number in turn, so every pos at or below the head is visible together with the head.
CREATE TABLE IF NOT EXISTS event_outbox (
    seq bigserial PRIMARY KEY,
    pos bigint UNIQUE,
    type text NOT NULL,
    device_id text NOT NULL,
    device_type text,
    at timestamptz NOT NULL DEFAULT now(),
    data jsonb NOT NULL
);
CREATE INDEX IF NOT EXISTS event_outbox_pending_idx ON event_outbox (seq) WHERE pos IS NULL;
CREATE INDEX IF NOT EXISTS event_outbox_device_idx ON event_outbox (device_id, pos);
CREATE INDEX IF NOT EXISTS event_outbox_at_idx ON event_outbox (at);

-- One row: the last pos given (`last_pos`) and the highest pos the retention sweep deleted (`purged_pos`); a
-- cursor below `purged_pos` may have lost events and is answered with a reset.
CREATE TABLE IF NOT EXISTS event_head (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    last_pos bigint NOT NULL DEFAULT 0,
    purged_pos bigint NOT NULL DEFAULT 0
);
INSERT INTO event_head DEFAULT VALUES ON CONFLICT DO NOTHING;

-- Number the committed, unnumbered events in insertion order; returns the head after. Sequencers queue on the
-- head row's lock; each statement below takes a fresh snapshot (a volatile function in READ COMMITTED), so
-- the one after the lock sees everything the previous sequencer numbered. Rows of one device that conflict
-- (the device or command row lock) are inserted in lock order, so `seq` order is their commit order.
CREATE OR REPLACE FUNCTION event_outbox_sequence(batch integer DEFAULT 10000) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    head bigint;
    numbered bigint;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM event_outbox WHERE pos IS NULL) THEN
        SELECT last_pos INTO head FROM event_head;
        RETURN head;
    END IF;
    SELECT last_pos INTO head FROM event_head FOR UPDATE;
    WITH pending AS (
        SELECT seq, row_number() OVER (ORDER BY seq) AS n
        FROM (SELECT seq FROM event_outbox WHERE pos IS NULL ORDER BY seq LIMIT batch) AS oldest
    )
    UPDATE event_outbox AS e SET pos = head + pending.n FROM pending WHERE e.seq = pending.seq;
    GET DIAGNOSTICS numbered = ROW_COUNT;
    IF numbered > 0 THEN
        UPDATE event_head SET last_pos = head + numbered;
    END IF;
    RETURN head + numbered;
END
$$;

-- Wake the listeners (app/services/event_feed.py) when events commit: one NOTIFY per writing transaction
-- (PostgreSQL folds identical ones), sent at commit, so a rolled-back event wakes nobody. The payload is empty:
-- readers take the events from the table.
CREATE OR REPLACE FUNCTION event_outbox_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM inserted) THEN
        PERFORM pg_notify('uaip_events', '');
    END IF;
    RETURN NULL;
END
$$;
DROP TRIGGER IF EXISTS event_outbox_notify ON event_outbox;
CREATE TRIGGER event_outbox_notify AFTER INSERT ON event_outbox REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION event_outbox_notify();
