-- A cancelled device owes nothing until a manifest names it again (fleet.State.Owed
-- and fleet.State.Resumed). vncfleet_owed_op now reads the status too, so both
-- functions take the row's state in the same seven arguments; the old six-argument
-- vncfleet_owed_op goes.
DROP FUNCTION IF EXISTS vncfleet_owed_op(text, boolean, boolean, boolean, boolean, boolean);

CREATE OR REPLACE FUNCTION vncfleet_owed_op(desired text, has_address boolean, spec_behind boolean,
    has_password boolean, has_pending boolean, rotation_due boolean, status text)
RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN status = 'cancelled' THEN NULL
        WHEN desired = 'absent' THEN CASE WHEN has_address THEN 'delete' END
        WHEN NOT has_address THEN 'create'
        WHEN spec_behind THEN 'update'
        WHEN NOT has_password AND NOT has_pending THEN 'rotate'
        WHEN rotation_due AND NOT has_pending THEN 'rotate'
    END
$$;

CREATE OR REPLACE FUNCTION vncfleet_owed_status(desired text, has_address boolean, spec_behind boolean,
    has_password boolean, has_pending boolean, rotation_due boolean, status text)
RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN status = 'cancelled' THEN 'cancelled'
        WHEN desired = 'absent' THEN CASE WHEN has_address THEN 'deleting' ELSE 'deleted' END
        WHEN NOT has_address THEN 'pending'
        WHEN spec_behind THEN 'updating'
        WHEN NOT has_password AND NOT has_pending THEN 'rotating'
        WHEN rotation_due AND NOT has_pending AND status = 'failed' THEN 'rotating'
        ELSE status
    END
$$;

-- fleet.State.Resumed: the status the rules see of a device a newly applied
-- manifest names.
CREATE OR REPLACE FUNCTION vncfleet_resumed_status(status text)
RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN status = 'cancelled' THEN 'awaiting_ready' ELSE status END
$$;
