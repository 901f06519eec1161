-- A manifest's report is streamed a page at a time, in line order, so that a slow
-- client holds no database connection between pages (internal/store: paged). Each
-- page starts where the last ended; this index makes that a range scan instead of a
-- sort of the manifest's every row per page. It replaces the index on manifest_id
-- alone, whose every use it serves, so that the upload still maintains as many
-- indexes. line is never NULL for a device applied from a manifest; coalesce only
-- keeps the order total.
CREATE INDEX IF NOT EXISTS devices_manifest_line_idx ON devices (manifest_id, coalesce(line, 0), id);
DROP INDEX IF EXISTS devices_manifest_idx;
