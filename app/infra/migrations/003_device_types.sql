-- Device types: the commands a type's devices accept, each with a JSON Schema for its params (and result).
--
-- `commands` is json, not jsonb, so schemas read back with their keys in the order they were written (the
-- "did anything change" comparison of a PUT casts both sides to jsonb). No foreign key from devices.device_type:
-- a device whose type is not declared stays free-form. Deleting a type that devices still have is refused by the
-- service, under the type's row lock (app/services/device_types.py).
CREATE TABLE device_types (
    name         text PRIMARY KEY CHECK (name ~ '^[A-Za-z0-9._:-]{1,64}$'),
    description  text NOT NULL DEFAULT '',
    commands     json NOT NULL DEFAULT '{}'::json CHECK (json_typeof(commands) = 'object'),
    version      integer NOT NULL DEFAULT 1,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);
