-- The console's sign-in sessions, shared by every `serve` process on the database, so
-- a console behind several processes (or after a restart) keeps its operator signed
-- in. Only hashes are stored: SHA-256 of the session id the cookie holds, and of the
-- CSRF token (which is derived from the session id and never stored). token_name
-- names the configured bearer token the session acts as (never the token itself):
-- a token removed from the configuration ends its sessions. roles are what the token
-- held at sign-in, for what the pages show; the API checks the token's current roles.
-- Sign-out deletes the row; expired rows are pruned at every sign-in.
CREATE TABLE IF NOT EXISTS console_sessions (
    id_hash      bytea PRIMARY KEY CHECK (length(id_hash) = 32),
    csrf_hash    bytea NOT NULL CHECK (length(csrf_hash) = 32),
    token_name   text NOT NULL,
    roles        text[] NOT NULL,
    created_at   timestamptz NOT NULL,
    expires_at   timestamptz NOT NULL,
    last_seen_at timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS console_sessions_expires_idx ON console_sessions (expires_at);
CREATE INDEX IF NOT EXISTS console_sessions_created_idx ON console_sessions (created_at);
