-- What a device owes the cloud next, and the status it shows: the rule of Go's
-- fleet.State.Owed, stated once for SQL (a test requires the two to agree on every
-- state). Plain IMMUTABLE SQL functions of one expression, so the planner inlines
-- them into the set-based statements that use them: no per-row call overhead.
--
-- rotation_due: a rotation was asked for and no reset has been answered with a
-- password yet. has_password: a stored password the cloud holds.
CREATE OR REPLACE FUNCTION vncfleet_owed_op(desired text, has_address boolean, spec_behind boolean,
    has_password boolean, has_pending boolean, rotation_due boolean)
RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE
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
        WHEN desired = 'absent' THEN CASE WHEN has_address THEN 'deleting' ELSE 'deleted' END
        WHEN NOT has_address THEN 'pending'
        WHEN spec_behind THEN 'updating'
        WHEN NOT has_password AND NOT has_pending THEN 'rotating'
        WHEN rotation_due AND NOT has_pending AND status = 'failed' THEN 'rotating'
        ELSE status
    END
$$;
