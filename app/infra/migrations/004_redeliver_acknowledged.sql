-- The relay's periodic redelivery also re-sends `acknowledged` qos >= 1 commands once their back-off has passed,
-- so a device re-reports an outcome whose ack was lost (docs/decisions.md, "Redelivery"). The sweep's
-- index covers exactly the rows it may publish: the old one left acknowledged commands out.
CREATE INDEX commands_due_idx ON commands (next_attempt_at)
    WHERE status IN ('queued', 'sent', 'acknowledged') AND (qos >= 1 OR status = 'queued');
DROP INDEX IF EXISTS commands_redelivery_idx;
