-- What VNC Cloud answered lately, per manifest, for the progress read (store.
-- ManifestCloudState): answers counted by HTTP status (0: a 2xx answer; -1: no
-- answer, a timeout or a lost connection) in 10-second buckets, added by the
-- transactions that record the answers (store.Finish, FinishPolls). A progress read
-- then costs a few rows whatever the manifest's size; it used to count the devices
-- touched in the last minute, 1.6-2.2 s at a million. Shards as in device_counts
-- (vncfleet_counter_shard), so concurrent writers do not queue on one row. The
-- writers delete buckets older than ten minutes.
CREATE TABLE IF NOT EXISTS cloud_answers (
    manifest_id bigint NOT NULL,
    bucket      timestamptz NOT NULL,
    status      integer NOT NULL,
    shard       smallint NOT NULL,
    answers     integer NOT NULL,
    PRIMARY KEY (manifest_id, bucket, status, shard)
);
CREATE INDEX IF NOT EXISTS cloud_answers_bucket_idx ON cloud_answers (bucket);

-- The devices waiting out a backoff, found without reading a manifest's every row.
-- Partial on next_attempt_at, which changes only when a transient failure schedules a
-- retry (and when that retry is claimed): the common updates stay HOT.
CREATE INDEX IF NOT EXISTS devices_backoff_idx ON devices (manifest_id, next_attempt_at) WHERE next_attempt_at IS NOT NULL;
