-- What the readiness poller has learned of each VNC Cloud account's readiness delay
-- (issue 12; internal/readiness explains the estimator). One row per account, shared
-- by every serve process and kept across restarts: the delay after which a device's
-- first readiness poll is due.
--
-- account is a digest of the API URL and key (readiness.Account), never the key.
-- rescheduled_seconds is the estimate that the first polls already scheduled were
-- last moved to, so that they move again only when the estimate has moved enough.
CREATE TABLE IF NOT EXISTS readiness_estimates (
    account             text PRIMARY KEY,
    first_poll_seconds  float8 NOT NULL CHECK (first_poll_seconds > 0),
    rescheduled_seconds float8,
    observations        bigint NOT NULL DEFAULT 0,
    pending             bigint NOT NULL DEFAULT 0,
    updated_at          timestamptz NOT NULL DEFAULT now()
);

-- The delay of device's first readiness poll for account: what was learned, else
-- fallback (the configured initial interval). One device in 16 (by row id) is a
-- scout, polled at the learned delay; the others 5% later (readiness.FirstPollFor
-- says the same, and a test holds the two together). The estimate's lookup is
-- uncorrelated with the rows it schedules, so a set-based UPDATE reads it once.
CREATE OR REPLACE FUNCTION vncfleet_first_poll(acct text, fallback interval, device bigint)
RETURNS interval LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT coalesce((SELECT make_interval(secs => first_poll_seconds * CASE WHEN device % 16 = 0 THEN 1 ELSE 1.05 END)
                     FROM readiness_estimates WHERE account = acct), fallback)
$$;
