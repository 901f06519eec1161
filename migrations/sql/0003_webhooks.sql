-- Webhook outbox: the store writes an event in the transaction that changes the device
-- (so none is lost and none announces a change that rolled back), and the dispatcher
-- job (internal/webhook) delivers it: at least once, signed, retried with backoff.
CREATE TABLE IF NOT EXISTS webhook_events (
    id              bigserial PRIMARY KEY,             -- also the X-Vncfleet-Delivery header: receivers dedupe on it
    event_type      text NOT NULL,                     -- device.ready | device.rotated | device.failed | device.deleted
    payload         jsonb NOT NULL,                    -- {"fleet","deviceId","cloudAddress","status","error"}; never a password
    created_at      timestamptz NOT NULL DEFAULT now(),
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    attempts        integer NOT NULL DEFAULT 0,        -- deliveries made (failed ones, plus the successful one)
    claim_until     timestamptz,                       -- a dispatcher's lease; it also fences that run's record
    delivered_at    timestamptz,                       -- a 2xx answer; such rows are pruned after a retention period
    dead_at         timestamptz,                       -- gave up after MaxAttempts; kept for inspection
    last_error      text,                              -- never holds the URL's credentials
    last_status     integer
);
CREATE INDEX IF NOT EXISTS webhook_events_due_idx ON webhook_events (next_attempt_at)
    WHERE delivered_at IS NULL AND dead_at IS NULL;
-- Finds delivered events past retention without scanning the table.
CREATE INDEX IF NOT EXISTS webhook_events_delivered_idx ON webhook_events (delivered_at)
    WHERE delivered_at IS NOT NULL;
