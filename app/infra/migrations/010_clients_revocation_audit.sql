-- Client management: several secrets per client (rotation with overlap), disabling, token revocation, audit log.

-- A client's secrets: at most two live at once (app/services/clients.py enforces it under the client's row
-- lock). `expires_at` NULL: no expiry. Expired rows are removed at the next rotation.
CREATE TABLE client_secrets (
    secret_id    text PRIMARY KEY,
    client_id    text NOT NULL REFERENCES clients (client_id) ON DELETE CASCADE,
    secret_hash  text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    expires_at   timestamptz,
    last_used_at timestamptz
);
CREATE INDEX client_secrets_client_idx ON client_secrets (client_id, created_at);

-- The one secret each existing client had becomes its first secrets row; `clients.secret_hash` is no longer read.
INSERT INTO client_secrets (secret_id, client_id, secret_hash, created_at)
SELECT 'sec_' || substr(md5(client_id || clock_timestamp()::text), 1, 24), client_id, secret_hash, created_at
FROM clients WHERE secret_hash IS NOT NULL;
ALTER TABLE clients ALTER COLUMN secret_hash DROP NOT NULL;
UPDATE clients SET secret_hash = NULL;

-- Revocation (app/auth/revocation.py). No foreign key: a deleted client's cutoff must outlive its row, so its
-- tokens stay refused until they expire. Tokens of a client whose `iat` is before `revoked_before` (Unix
-- seconds) are refused.
CREATE TABLE client_token_cutoffs (
    client_id      text PRIMARY KEY,
    revoked_before bigint NOT NULL,
    updated_at     timestamptz NOT NULL DEFAULT now()
);

-- Single tokens revoked through RFC 7009 (or a revoked grant), denied until their own expiry.
CREATE TABLE revoked_tokens (
    jti        text PRIMARY KEY,
    expires_at timestamptz NOT NULL
);
CREATE INDEX revoked_tokens_expiry_idx ON revoked_tokens (expires_at);

-- The audit log: append-only (no API changes it; the trigger refuses UPDATE). Rows older than
-- AUDIT_RETENTION_DAYS are deleted by the relay's sweep.
CREATE TABLE audit_log (
    id         bigserial PRIMARY KEY,
    at         timestamptz NOT NULL DEFAULT clock_timestamp(),
    actor      text NOT NULL,
    action     text NOT NULL,
    target     text NOT NULL,
    request_id text,
    details    jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX audit_log_at_idx ON audit_log (at);
CREATE INDEX audit_log_actor_idx ON audit_log (actor, id);
CREATE INDEX audit_log_action_idx ON audit_log (action, id);
CREATE INDEX audit_log_target_idx ON audit_log (target, id);

CREATE FUNCTION audit_log_refuse_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the audit log is append-only';
END;
$$;
CREATE TRIGGER audit_log_append_only BEFORE UPDATE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_refuse_update();
