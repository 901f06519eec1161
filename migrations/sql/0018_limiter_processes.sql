-- What each process's rate limiter is doing, so that a waiting operator sees the
-- whole cluster's limiter, not one process's: every `serve` process upserts its row
-- about once a second (ratelimit.Cluster.Publish) and deletes it when it stops. A row
-- not refreshed for a few seconds is a process that is gone; readers ignore it. A
-- process whose factor is low but that has sent nothing lately (AIMD recovers only on
-- answers) is not slowing anything down: readers count it as slowed only while it sends.
CREATE TABLE IF NOT EXISTS rate_limit_processes (
    name       text NOT NULL,              -- the limiter (rate_limits.name)
    process    text NOT NULL,              -- host:pid:random of the process
    rate       float8 NOT NULL,            -- its configured cap, requests/s for the cluster
    factor     float8 NOT NULL,            -- its AIMD factor: 1 at full speed, lower after runs of 503/429
    sending    float8 NOT NULL,            -- requests/s it sent over its last interval
    slowed_at  timestamptz,                -- when its factor last fell below 1 (NULL: at full speed)
    sent_at    timestamptz,                -- when it last sent a request (NULL: never)
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (name, process)
);
