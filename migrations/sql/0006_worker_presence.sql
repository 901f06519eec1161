-- Worker presence: every `serve` process registers a row and holds a session advisory
-- lock (classid 7761507 = "vnc", objid = id) for as long as it lives. A process that
-- dies loses its connection and with it the lock, which any other process can see in
-- pg_locks within seconds; the claims it held are then released at once instead of at
-- the end of their lease (minutes). The lease stays the bound for a process that is
-- alive but stuck.
CREATE TABLE IF NOT EXISTS worker_processes (
    id         bigserial PRIMARY KEY,
    hostname   text NOT NULL,
    pid        integer NOT NULL,
    started_at timestamptz NOT NULL DEFAULT now(),
    -- When another process found the lock free: the process is gone for good (a
    -- process that loses its lock connection registers again under a new id).
    gone_at    timestamptz
);

-- The process whose claim a device is under (NULL: none, or a claim from before
-- presence existed, which ends with its lease). No index: it is read only when a
-- process has died, and an index on it would make every claim a non-HOT update.
ALTER TABLE devices ADD COLUMN IF NOT EXISTS claim_worker bigint;

-- A create attempt can still be in progress at the server until in_flight_until, on
-- the database's clock: the end of its claim (no call starts later than a call's
-- timeout before the claim ends), brought forward when its answer is recorded
-- (answered_at) or its process is found dead. Reconciliation treats an address an
-- attempt may have made as in flight only until then.
ALTER TABLE create_attempts
    ADD COLUMN IF NOT EXISTS worker_id       bigint,
    ADD COLUMN IF NOT EXISTS answered_at     timestamptz,
    ADD COLUMN IF NOT EXISTS in_flight_until timestamptz;
UPDATE create_attempts SET in_flight_until = CASE WHEN outcome = 'sent' THEN sent_at + interval '10 minutes' ELSE sent_at END
WHERE in_flight_until IS NULL;
