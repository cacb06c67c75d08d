-- Operators (people who use the console), their sessions and failed sign-ins; and the OAuth authorization-code
-- grant for desktop agents: public clients registered dynamically, one-time codes, grants and refresh tokens.
-- Secrets, session ids, codes and refresh tokens are stored only as hashes (scrypt for passwords, SHA-256 for
-- the random 256-bit values, which need no slow hash).
CREATE TABLE operators (
    email         text PRIMARY KEY CHECK (email = lower(email) AND length(email) BETWEEN 3 AND 254),
    role          text NOT NULL CHECK (role IN ('admin', 'viewer')),
    password_hash text NOT NULL,
    disabled      boolean NOT NULL DEFAULT false,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE operator_sessions (
    session_hash  text PRIMARY KEY,
    email         text NOT NULL REFERENCES operators (email) ON DELETE CASCADE,
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL
);
CREATE INDEX operator_sessions_email_idx ON operator_sessions (email);
CREATE INDEX operator_sessions_expiry_idx ON operator_sessions (expires_at);

-- One row per failed sign-in; the throttle counts an email's rows of the last 15 minutes. The email is not a
-- foreign key: failures for unknown addresses count too.
CREATE TABLE operator_signin_failures (
    email         text NOT NULL,
    at            timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX operator_signin_failures_idx ON operator_signin_failures (email, at);

CREATE TABLE oauth_public_clients (
    client_id     text PRIMARY KEY,
    client_name   text NOT NULL,
    redirect_uris text[] NOT NULL,
    scope         text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    -- set at the first approved authorization; a registration never used is deleted after 24 hours
    first_used_at timestamptz
);
CREATE INDEX oauth_public_clients_unused_idx ON oauth_public_clients (created_at) WHERE first_used_at IS NULL;

CREATE TABLE oauth_grants (
    grant_id      text PRIMARY KEY,
    client_id     text NOT NULL REFERENCES oauth_public_clients (client_id) ON DELETE CASCADE,
    email         text NOT NULL REFERENCES operators (email) ON DELETE CASCADE,
    scopes        text[] NOT NULL,
    resource      text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_used_at  timestamptz,
    revoked_at    timestamptz,
    revoked_reason text
);
CREATE INDEX oauth_grants_email_idx ON oauth_grants (email, created_at DESC);

CREATE TABLE oauth_codes (
    code_hash      text PRIMARY KEY,
    grant_id       text NOT NULL REFERENCES oauth_grants (grant_id) ON DELETE CASCADE,
    redirect_uri   text NOT NULL,
    code_challenge text NOT NULL,
    expires_at     timestamptz NOT NULL,
    used_at        timestamptz
);

CREATE TABLE oauth_refresh_tokens (
    token_hash    text PRIMARY KEY,
    grant_id      text NOT NULL REFERENCES oauth_grants (grant_id) ON DELETE CASCADE,
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL,
    used_at       timestamptz
);
CREATE INDEX oauth_refresh_tokens_grant_idx ON oauth_refresh_tokens (grant_id);

-- The console's commands page (all devices, newest first) and its counts and activity of the last hour.
CREATE INDEX commands_created_idx ON commands (created_at DESC, message_id DESC);
CREATE INDEX commands_updated_idx ON commands (updated_at DESC);
CREATE INDEX devices_updated_idx ON devices (updated_at DESC);
