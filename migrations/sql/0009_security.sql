-- Security: console URLs sealed like passwords, an audit log the application cannot
-- rewrite, and single-use credential claims.

-- Zenlayer console URLs are bearer credentials (whoever holds one opens the VNC
-- console), so they are sealed with the password keyring (internal/secretbox), bound to
-- their row like passwords. vnc_url keeps only rows stored before this migration, in
-- clear, until `vncfleet rekey` seals them (`vncfleet keys` counts them); the
-- application writes vnc_url_ct only.
ALTER TABLE devices
    ADD COLUMN IF NOT EXISTS vnc_url_ct     bytea,
    ADD COLUMN IF NOT EXISTS vnc_url_key_id text;

-- The audit log, append-only and hash-chained. seq numbers the entries without gaps
-- (ids may skip after a rollback); each entry's hash covers the previous entry's hash
-- and every field of its own, so an edited entry breaks its own hash and a removed one
-- breaks its successor's prev_hash. audit_head holds the last seq and hash, so that
-- removing entries from the end is found too. The trigger fills seq, prev_hash and
-- hash under the head's row lock, which orders concurrent appends of every process.
ALTER TABLE audit_log
    ADD COLUMN IF NOT EXISTS seq       bigint,
    ADD COLUMN IF NOT EXISTS remote    text NOT NULL DEFAULT '',
    ADD COLUMN IF NOT EXISTS outcome   text NOT NULL DEFAULT 'ok',
    ADD COLUMN IF NOT EXISTS prev_hash bytea,
    ADD COLUMN IF NOT EXISTS hash      bytea;

CREATE TABLE IF NOT EXISTS audit_head (
    one  boolean PRIMARY KEY DEFAULT true CHECK (one),
    seq  bigint NOT NULL,
    hash bytea NOT NULL
);
-- The head exists from the start, so that concurrent first appends queue on its lock.
INSERT INTO audit_head (seq, hash) VALUES (0, '\x'::bytea) ON CONFLICT (one) DO NOTHING;

-- audit_entry_hash is the chain's one definition, used by the trigger and by
-- `vncfleet audit verify`. Every field is length-prefixed, so no two entries encode
-- alike; the time is in microseconds since the epoch, independent of the session's
-- time zone; jsonb's text form is canonical.
CREATE OR REPLACE FUNCTION audit_entry_hash(prev bytea, seq bigint, at timestamptz, actor text, action text,
                                            detail jsonb, remote text, outcome text) RETURNS bytea
LANGUAGE sql IMMUTABLE AS $$
    SELECT sha256(prev || convert_to(
        concat_ws('|',
            seq::text,
            (extract(epoch FROM at) * 1000000)::bigint::text,
            length(actor) || ':' || actor,
            length(action) || ':' || action,
            length(detail::text) || ':' || detail::text,
            length(remote) || ':' || remote,
            length(outcome) || ':' || outcome), 'UTF8'))
$$;

CREATE OR REPLACE FUNCTION audit_chain() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    head audit_head%ROWTYPE;
BEGIN
    SELECT * INTO STRICT head FROM audit_head FOR UPDATE;
    NEW.seq := head.seq + 1;
    NEW.prev_hash := head.hash;
    NEW.at := date_trunc('microseconds', NEW.at);
    NEW.hash := audit_entry_hash(NEW.prev_hash, NEW.seq, NEW.at, NEW.actor, NEW.action, NEW.detail, NEW.remote, NEW.outcome);
    UPDATE audit_head SET seq = NEW.seq, hash = NEW.hash;
    RETURN NEW;
END
$$;

CREATE OR REPLACE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only: % refused', TG_OP USING ERRCODE = 'insufficient_privilege';
END
$$;

-- Entries written before this migration join the chain in id order.
DO $$
DECLARE
    r record;
    prev bytea := '\x'::bytea;
    n bigint := 0;
BEGIN
    IF EXISTS (SELECT 1 FROM audit_log WHERE hash IS NULL) THEN
        SELECT coalesce(max(seq), 0) INTO n FROM audit_log WHERE hash IS NOT NULL;
        FOR r IN SELECT * FROM audit_log WHERE hash IS NULL ORDER BY id LOOP
            n := n + 1;
            UPDATE audit_log SET seq = n, prev_hash = prev, at = date_trunc('microseconds', r.at),
                   hash = audit_entry_hash(prev, n, date_trunc('microseconds', r.at), r.actor, r.action, r.detail, r.remote, r.outcome)
            WHERE id = r.id RETURNING hash INTO prev;
        END LOOP;
        INSERT INTO audit_head (seq, hash) VALUES (n, prev)
        ON CONFLICT (one) DO UPDATE SET seq = EXCLUDED.seq, hash = EXCLUDED.hash;
    END IF;
END
$$;

ALTER TABLE audit_log ALTER COLUMN seq SET NOT NULL;
CREATE UNIQUE INDEX IF NOT EXISTS audit_log_seq_idx ON audit_log (seq);
CREATE INDEX IF NOT EXISTS audit_log_at_idx ON audit_log (at);

DROP TRIGGER IF EXISTS audit_log_chain ON audit_log;
CREATE TRIGGER audit_log_chain BEFORE INSERT ON audit_log FOR EACH ROW EXECUTE FUNCTION audit_chain();
DROP TRIGGER IF EXISTS audit_log_append_only ON audit_log;
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log FOR EACH ROW EXECUTE FUNCTION audit_append_only();
DROP TRIGGER IF EXISTS audit_log_no_truncate ON audit_log;
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();

-- Single-use credential claims (Vault's response wrapping is the model): a claim token
-- is redeemed once, unauthenticated, for its device's cloud address and password. Only
-- the SHA-256 of the token is stored: the token has 256 random bits, so the hash
-- cannot be reversed, and a reader of this table cannot redeem anything.
-- password_set_at is the device's at issue time: a rotation since changes it, which
-- invalidates the claim (it would hand out a password the cloud no longer holds).
CREATE TABLE IF NOT EXISTS credential_claims (
    id              bigserial PRIMARY KEY,
    token_hash      bytea NOT NULL UNIQUE,
    device_pk       bigint NOT NULL REFERENCES devices (id),
    password_set_at timestamptz NOT NULL,
    issued_by       text NOT NULL,
    issued_at       timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL,
    redeemed_at     timestamptz,
    redeemed_from   text
);
CREATE INDEX IF NOT EXISTS credential_claims_device_idx ON credential_claims (device_pk);
CREATE INDEX IF NOT EXISTS credential_claims_expires_idx ON credential_claims (expires_at);
