-- OAuth2 API clients and the device registry.
CREATE TABLE clients (
    client_id    text PRIMARY KEY,
    name         text NOT NULL,
    secret_hash  text NOT NULL,
    scopes       text[] NOT NULL DEFAULT '{}',
    active       boolean NOT NULL DEFAULT true,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE devices (
    device_id     text PRIMARY KEY CHECK (device_id ~ '^[A-Za-z0-9._:-]{1,128}$'),
    name          text NOT NULL,
    device_type   text NOT NULL,
    status        text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'online', 'offline', 'error')),
    capabilities  text[] NOT NULL DEFAULT '{}',
    location      jsonb,
    metadata      jsonb NOT NULL DEFAULT '{}'::jsonb,
    secret_hash   text NOT NULL,
    last_seen     timestamptz,
    registered_at timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    version       integer NOT NULL DEFAULT 1
);

-- The list endpoint filters on these and pages in registration order.
CREATE INDEX devices_status_idx ON devices (status);
CREATE INDEX devices_type_idx ON devices (device_type);
CREATE INDEX devices_capabilities_idx ON devices USING gin (capabilities);
CREATE INDEX devices_registered_idx ON devices (registered_at, device_id);
CREATE INDEX devices_last_seen_idx ON devices (last_seen) WHERE status = 'online';
