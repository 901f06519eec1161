-- A manifest's failures (GET /v1/manifests/{id}/failures, the console's manifest page,
-- the fix-up CSV, retry of a manifest) are its devices in status failed, in line
-- order. Read through devices_manifest_line_idx they cost a pass over every device of
-- the manifest, failed or not: 0.35 s for a million-device manifest with none failed,
-- on every open of its page. This index holds the failed devices alone, so the read
-- costs what there is to show. status is already in an index predicate
-- (devices_poll_idx), so this one makes no update that was HOT a non-HOT one, and only
-- a device that fails, or stops being failed, writes to it.
CREATE INDEX IF NOT EXISTS devices_failed_idx ON devices (manifest_id, coalesce(line, 0), id) WHERE status = 'failed';
