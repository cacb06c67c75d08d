-- The device type a command was checked against and that type's version. Published in the command envelope;
-- when the type changes, open commands checked against an older version are checked again (cancelled with
-- error `type_changed` when they no longer fit, else moved to the new version) before they are delivered
-- (app/services/commands/retype.py). NULL type_version: the device's type was not declared (free-form command).
ALTER TABLE commands ADD COLUMN IF NOT EXISTS device_type text;
ALTER TABLE commands ADD COLUMN IF NOT EXISTS type_version integer;
-- Finding a type's open commands that an older version checked.
CREATE INDEX IF NOT EXISTS commands_open_type_idx ON commands (device_type, type_version)
    WHERE status IN ('queued', 'sent') AND type_version IS NOT NULL;
