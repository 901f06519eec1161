-- vncfleet's own tables. River's tables come from rivermigrate, applied first.

CREATE TABLE IF NOT EXISTS fleets (
    id         bigserial PRIMARY KEY,
    name       text NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- One row per accepted upload. An upload identical to the fleet's latest manifest is
-- not stored again.
CREATE TABLE IF NOT EXISTS manifests (
    id          bigserial PRIMARY KEY,
    fleet_id    bigint NOT NULL REFERENCES fleets (id),
    sha256      bytea NOT NULL,
    uploader    text NOT NULL,
    mode        text NOT NULL CHECK (mode IN ('merge', 'replace')),
    row_count   integer NOT NULL,
    creates     integer NOT NULL DEFAULT 0,
    updates     integer NOT NULL DEFAULT 0,
    deletes     integer NOT NULL DEFAULT 0,
    unchanged   integer NOT NULL DEFAULT 0,
    uploaded_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS manifests_fleet_idx ON manifests (fleet_id, id DESC);

-- A device: its desired spec (from the newest manifest naming it), what the cloud holds
-- for it, and the operation still owed to the cloud.
--
-- Work is level-triggered: `op` says what must still happen (create, update, delete,
-- rotate). A job claims a device by setting claim_until; a claim that has expired
-- (its process died) is claimable again. spec_version counts desired-spec changes and
-- applied_version the one last applied, so a change that lands while an operation is in
-- flight is applied afterwards instead of being lost.
-- devices.fleet_id and manifest_id carry no foreign keys on purpose: ingest writes a
-- million rows in one statement, and per-row foreign-key triggers (each locking the
-- same fleet and manifest rows again) made it 30 times slower than COPY. Both ids come
-- from the same transaction that inserts the rows, and neither parent is ever deleted.
CREATE TABLE IF NOT EXISTS devices (
    id                   bigserial PRIMARY KEY,
    fleet_id             bigint NOT NULL,
    device_id            text NOT NULL,
    action               text NOT NULL CHECK (action IN ('connect', 'listen')),
    groups               text[],
    allow_groups         text[],
    allow_devices        text[],
    desired_state        text NOT NULL DEFAULT 'present' CHECK (desired_state IN ('present', 'absent')),
    zenlayer_instance_id text,
    metadata             jsonb,
    spec_hash            bytea NOT NULL,
    meta_hash            bytea,
    spec_version         integer NOT NULL DEFAULT 1,
    applied_version      integer NOT NULL DEFAULT 0,
    -- The manifest that last set this device's desired state; progress and reports per
    -- manifest are counted from it.
    manifest_id          bigint,
    line                 integer,
    -- Ordering of batches: connect before listen ('0' or '1'), then by first group, so
    -- a factory line progresses together. One text column so that claims walk an index
    -- instead of sorting a million-row manifest for every batch.
    sort_key             text NOT NULL DEFAULT '',

    status               text NOT NULL DEFAULT 'pending' CHECK (status IN (
                             'pending', 'creating', 'awaiting_ready', 'ready', 'updating',
                             'rotating', 'deleting', 'deleted', 'failed')),
    op                   text CHECK (op IN ('create', 'update', 'delete', 'rotate')),
    work_key             text,
    claim_until          timestamptz,
    -- Fences a claim: results are recorded only while the token is still the one the
    -- claim set, so a job whose lease ran out cannot overwrite a newer claim's work.
    claim_token          bigint,
    next_attempt_at      timestamptz,
    attempts             integer NOT NULL DEFAULT 0,

    cloud_address        text,
    etag                 text,
    password_ct          bytea,
    password_key_id      text,
    password_set_at      timestamptz,
    -- Rotation staging (AWS Secrets Manager style): the password a reset returned is kept
    -- here until the address is ready, then promoted to password_ct.
    pending_password_ct  bytea,
    pending_key_id       text,
    rotation_started_at  timestamptz,

    awaiting_since       timestamptz,
    next_poll_at         timestamptz,
    polls                integer NOT NULL DEFAULT 0,

    vnc_url              text,
    vnc_url_instance     text,
    vnc_url_error        text,
    drift                text,
    -- When reconciliation last compared the cloud's spec with the desired one.
    checked_at           timestamptz,

    last_error           text,
    last_error_status    integer,
    last_error_code      integer,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    ready_at             timestamptz,
    UNIQUE (fleet_id, device_id)
);
CREATE INDEX IF NOT EXISTS devices_work_idx ON devices (work_key, sort_key, id) WHERE op IS NOT NULL;
CREATE INDEX IF NOT EXISTS devices_poll_idx ON devices (next_poll_at) WHERE status = 'awaiting_ready';
CREATE INDEX IF NOT EXISTS devices_manifest_idx ON devices (manifest_id);
CREATE UNIQUE INDEX IF NOT EXISTS devices_cloud_address_idx ON devices (cloud_address) WHERE cloud_address IS NOT NULL;

-- Every create is recorded before it is sent, because create is not idempotent at the
-- server: an attempt whose answer was lost may still have made an address, which
-- reconciliation later adopts or deletes. Outcomes: sent (no answer yet), created,
-- failed (a definite refusal), unknown (no or a retryable answer), adopted, discarded.
CREATE TABLE IF NOT EXISTS create_attempts (
    id            bigserial PRIMARY KEY,
    device_pk     bigint NOT NULL REFERENCES devices (id),
    spec          jsonb NOT NULL,
    sent_at       timestamptz NOT NULL DEFAULT now(),
    outcome       text NOT NULL DEFAULT 'sent' CHECK (outcome IN ('sent', 'created', 'failed', 'unknown', 'adopted', 'discarded')),
    cloud_address text,
    resolved_at   timestamptz
);
CREATE INDEX IF NOT EXISTS create_attempts_open_idx ON create_attempts (sent_at) WHERE outcome IN ('sent', 'unknown');
CREATE INDEX IF NOT EXISTS create_attempts_device_idx ON create_attempts (device_pk);

-- Append-only log of every VNC Cloud call made for a device.
CREATE TABLE IF NOT EXISTS device_events (
    id          bigserial PRIMARY KEY,
    device_pk   bigint NOT NULL REFERENCES devices (id),
    at          timestamptz NOT NULL DEFAULT now(),
    operation   text NOT NULL,
    outcome     text NOT NULL,
    http_status integer,
    error_code  integer,
    message     text
);
CREATE INDEX IF NOT EXISTS device_events_device_idx ON device_events (device_pk, id);

-- Who revealed which passwords, and other security-relevant actions.
CREATE TABLE IF NOT EXISTS audit_log (
    id     bigserial PRIMARY KEY,
    at     timestamptz NOT NULL DEFAULT now(),
    actor  text NOT NULL,
    action text NOT NULL,
    detail jsonb NOT NULL DEFAULT '{}'
);
