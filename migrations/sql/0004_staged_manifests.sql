-- Manifests are applied to devices after their upload, in batches (internal/store/stage.go):
-- the upload stores the rows in a table of their own, staged_manifest_<id>, created by
-- the upload and dropped once every row is applied.
ALTER TABLE manifests
    ADD COLUMN IF NOT EXISTS next_block   bigint NOT NULL DEFAULT 0,  -- the apply cursor: the staged table's next block
    ADD COLUMN IF NOT EXISTS applied_rows integer NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS apply_progress_at timestamptz,           -- the last batch applied: the sweeper restarts a stalled apply
    ADD COLUMN IF NOT EXISTS applied_at   timestamptz;                -- NULL while rows are still staged
-- Manifests stored before this migration were applied by their upload.
UPDATE manifests SET applied_rows = row_count, applied_at = uploaded_at WHERE applied_at IS NULL AND next_block = 0;
CREATE INDEX IF NOT EXISTS manifests_staged_idx ON manifests (fleet_id) WHERE applied_at IS NULL;

-- devices.meta_hash is no longer written (nothing ever read it). It stays for now: a
-- binary of the previous release, still running during a rolling upgrade or started
-- again by a rollback, writes it. A later migration drops it.
