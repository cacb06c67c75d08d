-- Device types: the commands a type's devices accept, each with a JSON Schema for its params (and result).
--
-- No foreign key from devices.device_type: a device whose type is not declared stays free-form. Deleting a type
-- that devices still have is refused by the service (under the type's row lock, app/services/device_types.py).
CREATE TABLE device_types (
    name         text PRIMARY KEY CHECK (name ~ '^[A-Za-z0-9._:-]{1,64}$'),
    description  text NOT NULL DEFAULT '',
    commands     jsonb NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(commands) = 'object'),
    version      integer NOT NULL DEFAULT 1,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);
