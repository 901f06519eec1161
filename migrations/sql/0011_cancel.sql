-- Cancelling a manifest (store.CancelManifest): its owed work is dropped and the
-- devices it had not finished say 'cancelled'. The manifest records when and by whom.
ALTER TABLE manifests
    ADD COLUMN IF NOT EXISTS cancelled_at timestamptz,
    ADD COLUMN IF NOT EXISTS cancelled_by text;

-- The status CHECK gains 'cancelled'. NOT VALID, then VALIDATE: the new constraint is
-- enforced at once, and checking the existing rows does not block writers meanwhile.
ALTER TABLE devices DROP CONSTRAINT IF EXISTS devices_status_check;
ALTER TABLE devices ADD CONSTRAINT devices_status_check CHECK (status IN (
    'pending', 'creating', 'awaiting_ready', 'ready', 'updating',
    'rotating', 'deleting', 'deleted', 'failed', 'cancelled')) NOT VALID;
ALTER TABLE devices VALIDATE CONSTRAINT devices_status_check;
