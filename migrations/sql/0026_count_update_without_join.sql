-- The update counter trigger (0008, 0024) paired each row's old and new version by
-- joining the transition tables on id. PL/pgSQL keeps a trigger's plan, and a plan
-- made for a few rows joins by nested loop: a statement changing n rows then cost n²
-- comparisons. Measured: the readiness reschedule (next_poll_at of 13,000 awaiting
-- devices, no counted column changed) spent 11.0 s in the trigger, and held the
-- readiness estimate's row lock meanwhile, so one 20,000-device benchmark run took
-- 85 s instead of 5; after this, 1.8 ms.
--
-- No pairing is needed: the counts change by the multiset of counted tuples after
-- the statement minus the one before. The early test asks whether the new tuples are
-- the old ones (EXCEPT ALL of two multisets of equal size is empty exactly when they
-- are equal), the changes are both sides summed per tuple, +1 new and -1 old; both
-- are hashed, linear in the rows whatever the plan. What is counted is unchanged.
-- As in 0024, the known text is replaced and the migration fails rather than guess.
DO $do$
DECLARE
    def text := pg_get_functiondef('vncfleet_count_update()'::regprocedure);
    test_before CONSTANT text := $s$IF NOT EXISTS (SELECT FROM old_rows o JOIN new_rows n ON n.id = o.id
        WHERE (o.fleet_id, o.manifest_id, o.status, o.action, o.groups, o.allow_groups)
              IS DISTINCT FROM (n.fleet_id, n.manifest_id, n.status, n.action, n.groups, n.allow_groups)) THEN$s$;
    test_after CONSTANT text := $s$IF NOT EXISTS (
        SELECT fleet_id, manifest_id, status, action, groups, allow_groups FROM new_rows
        EXCEPT ALL
        SELECT fleet_id, manifest_id, status, action, groups, allow_groups FROM old_rows) THEN$s$;
    changes_before CONSTANT text := $s$
        SELECT x.* FROM old_rows o JOIN new_rows n ON n.id = o.id,
        LATERAL (VALUES (o.fleet_id, o.manifest_id, o.status, o.action, o.groups, o.allow_groups, -1),
                        (n.fleet_id, n.manifest_id, n.status, n.action, n.groups, n.allow_groups, 1))
            AS x(fleet_id, manifest_id, status, action, groups, allow_groups, d)
        WHERE (o.fleet_id, o.manifest_id, o.status, o.action, o.groups, o.allow_groups)
              IS DISTINCT FROM (n.fleet_id, n.manifest_id, n.status, n.action, n.groups, n.allow_groups))$s$;
    changes_after CONSTANT text := $s$
        SELECT fleet_id, manifest_id, status, action, groups, allow_groups, sum(d) AS d
        FROM (SELECT fleet_id, manifest_id, status, action, groups, allow_groups, 1 AS d FROM new_rows
              UNION ALL
              SELECT fleet_id, manifest_id, status, action, groups, allow_groups, -1 FROM old_rows) x
        GROUP BY 1, 2, 3, 4, 5, 6 HAVING sum(d) <> 0)$s$;
BEGIN
    IF position(test_before IN def) = 0 OR position(changes_before IN def) = 0 THEN
        RAISE EXCEPTION 'vncfleet_count_update is not the function 0008 and 0024 made';
    END IF;
    EXECUTE replace(replace(def, test_before, test_after), changes_before, changes_after);
END $do$;
