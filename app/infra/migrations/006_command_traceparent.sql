-- The W3C trace context (traceparent) of the request that created a command, when tracing was on: the relay
-- publishes redeliveries in that trace, and applies the device's acks in it when the acks carry none
-- (docs/tracing.md). NULL for commands created with tracing off.
ALTER TABLE commands ADD COLUMN IF NOT EXISTS traceparent text;
