-- The cluster-wide rate limiter's shared schedule: one row per limiter. next_slot is
-- the earliest time the next request may be sent by any process; paused_until holds
-- everyone back after a Retry-After.
CREATE TABLE IF NOT EXISTS rate_limits (
    name         text PRIMARY KEY,
    next_slot    timestamptz NOT NULL DEFAULT now(),
    paused_until timestamptz NOT NULL DEFAULT 'epoch'
);
