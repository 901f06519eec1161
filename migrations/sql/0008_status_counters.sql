-- Status counters: how many devices each fleet, manifest and group has in each status,
-- kept exact by the database itself, so that progress and `status` read a few counter
-- rows instead of counting a million devices (issue 10: 0.46-1.1 s at 1M devices).
--
-- Statement-level triggers on devices see the rows a statement changed (transition
-- tables) and add the differences, grouped, in the same transaction: whatever
-- statement changes a device, whoever wrote it, the counters follow, and a crash
-- rolls both back together. Nothing lists the statuses: a new one is counted as soon
-- as a row has it.
--
-- Counted per (fleet, manifest, status), manifest_id 0 standing for a device no
-- manifest set, and the same per group: a connect device counts in every group of its
-- `groups`, a listen device in every group of its `allow_groups` (the groups whose
-- devices may connect to it: the factory line it serves), a device with none under
-- the group '' ("no group"). Fleet-wide counts are the sums over manifests.
--
-- Each count is spread over shards, rows of its own that readers sum: a transaction
-- adds to the shard it holds (vncfleet_counter_shard), so concurrent workers do not
-- wait on each other's uncommitted counter rows nor deadlock on them (as long as no
-- more than 16 write at once; beyond that two may share a shard, see below). A row
-- that reaches zero is deleted, so a finished manifest leaves one row per status and
-- group in each shard it was counted in.

CREATE TABLE IF NOT EXISTS device_counts (
    fleet_id    bigint NOT NULL,
    manifest_id bigint NOT NULL,   -- 0: no manifest
    status      text NOT NULL,
    shard       smallint NOT NULL,
    devices     integer NOT NULL,  -- sums of integers are bigints: faster than numeric
    PRIMARY KEY (fleet_id, manifest_id, status, shard)
) WITH (fillfactor = 50);          -- room on the page for HOT updates of hot rows

CREATE TABLE IF NOT EXISTS device_group_counts (
    fleet_id    bigint NOT NULL,
    manifest_id bigint NOT NULL,
    grp         text NOT NULL,     -- '': no group
    status      text NOT NULL,
    shard       smallint NOT NULL,
    devices     integer NOT NULL,  -- sums of integers are bigints: faster than numeric
    PRIMARY KEY (fleet_id, manifest_id, grp, status, shard)
) WITH (fillfactor = 50);

-- The groups a device counts in (see above): the one definition, used by the
-- triggers, the backfill and the full count that checks them. A single expression,
-- so that the planner inlines it (as a function call per row it tripled the cost of
-- a trigger).
CREATE OR REPLACE FUNCTION vncfleet_count_groups(action text, groups text[], allow_groups text[])
RETURNS text[] LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN action = 'connect' AND cardinality(groups) > 0 THEN groups
        WHEN action <> 'connect' AND cardinality(allow_groups) > 0 THEN allow_groups
        ELSE '{""}'::text[] END
$$;

-- The shard this transaction adds to: the lowest of 16 whose transaction-level
-- advisory lock (class 1986356019 of the two-integer key space, which no bigint
-- key of River's or ours can collide with) is free, remembered for the rest of the
-- transaction. The lock only keeps transactions apart; exactness never depends
-- on it: when all 16 are held, the transaction adds to a shard another one holds and
-- the row locks order them. Trying from 0 keeps a quiet system on few shards, so
-- readers sum few rows.
CREATE OR REPLACE FUNCTION vncfleet_counter_shard() RETURNS smallint LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    held text := current_setting('vncfleet.counter_shard', true);
BEGIN
    IF held <> '' THEN
        RETURN held::smallint;
    END IF;
    FOR s IN 0..15 LOOP
        IF pg_try_advisory_xact_lock(1986356019, s) THEN
            PERFORM set_config('vncfleet.counter_shard', s::text, true);
            RETURN s;
        END IF;
    END LOOP;
    RETURN (pg_backend_pid() % 16)::smallint;
END $$;

-- One trigger function per event (a trigger with transition tables has one event),
-- made from one template so that the counting is written once: %3$s is the statement's
-- changes as rows (fleet_id, manifest_id, status, action, groups, allow_groups, d),
-- d = +1 for a row as it is now, -1 for a row as it was. Static SQL, so PL/pgSQL
-- keeps its plans.
DO $do$
DECLARE
    template CONSTANT text := $t$
CREATE OR REPLACE FUNCTION vncfleet_count_%1$s() RETURNS trigger LANGUAGE plpgsql AS $f$
DECLARE
    my_shard smallint;
    emptied_f bigint[]; emptied_m bigint[]; emptied_s text[];
    emptied_gf bigint[]; emptied_gm bigint[]; emptied_gg text[]; emptied_gs text[];
BEGIN
    IF NOT EXISTS (SELECT FROM %2$s) THEN
        RETURN NULL;
    END IF;
    my_shard := vncfleet_counter_shard();
    WITH changes AS MATERIALIZED (%3$s),
    counted AS (
        INSERT INTO device_counts AS c (fleet_id, manifest_id, status, shard, devices)
        SELECT fleet_id, coalesce(manifest_id, 0), status, my_shard, sum(d)::integer FROM changes
        GROUP BY 1, 2, 3 HAVING sum(d) <> 0 ORDER BY 1, 2, 3
        ON CONFLICT (fleet_id, manifest_id, status, shard) DO UPDATE SET devices = c.devices + EXCLUDED.devices
        RETURNING c.fleet_id, c.manifest_id, c.status, c.devices),
    grouped AS (
        INSERT INTO device_group_counts AS c (fleet_id, manifest_id, grp, status, shard, devices)
        SELECT fleet_id, coalesce(manifest_id, 0), g, status, my_shard, sum(d)::integer
        FROM changes, unnest(vncfleet_count_groups(action, groups, allow_groups)) AS g
        GROUP BY 1, 2, 3, 4 HAVING sum(d) <> 0 ORDER BY 1, 2, 3, 4
        ON CONFLICT (fleet_id, manifest_id, grp, status, shard) DO UPDATE SET devices = c.devices + EXCLUDED.devices
        RETURNING c.fleet_id, c.manifest_id, c.grp, c.status, c.devices)
    SELECT e.f, e.m, e.s, g.f, g.m, g.g, g.s INTO emptied_f, emptied_m, emptied_s, emptied_gf, emptied_gm, emptied_gg, emptied_gs
    FROM (SELECT array_agg(fleet_id) f, array_agg(manifest_id) m, array_agg(status) s FROM counted WHERE devices = 0) e,
         (SELECT array_agg(fleet_id) f, array_agg(manifest_id) m, array_agg(grp) g, array_agg(status) s FROM grouped WHERE devices = 0) g;
    -- A row at zero goes (another transaction adding to it meanwhile makes it non-zero
    -- again, and the delete then leaves it).
    IF emptied_f IS NOT NULL THEN
        DELETE FROM device_counts c USING unnest(emptied_f, emptied_m, emptied_s) AS z(f, m, s)
        WHERE c.fleet_id = z.f AND c.manifest_id = z.m AND c.status = z.s AND c.shard = my_shard AND c.devices = 0;
    END IF;
    IF emptied_gf IS NOT NULL THEN
        DELETE FROM device_group_counts c USING unnest(emptied_gf, emptied_gm, emptied_gg, emptied_gs) AS z(f, m, g, s)
        WHERE c.fleet_id = z.f AND c.manifest_id = z.m AND c.grp = z.g AND c.status = z.s
          AND c.shard = my_shard AND c.devices = 0;
    END IF;
    RETURN NULL;
END $f$;$t$;
    cols CONSTANT text := 'fleet_id, manifest_id, status, action, groups, allow_groups';
BEGIN
    EXECUTE format(template, 'insert', 'new_rows', 'SELECT ' || cols || ', 1 AS d FROM new_rows');
    EXECUTE format(template, 'delete', 'old_rows', 'SELECT ' || cols || ', -1 AS d FROM old_rows');
    -- An update counts only the rows whose counted columns changed: most updates
    -- (claims of polls, next_poll_at, checked_at) change none, and add nothing.
    EXECUTE format(template, 'update', 'new_rows', $s$
        SELECT x.* FROM old_rows o JOIN new_rows n ON n.id = o.id,
        LATERAL (VALUES (o.fleet_id, o.manifest_id, o.status, o.action, o.groups, o.allow_groups, -1),
                        (n.fleet_id, n.manifest_id, n.status, n.action, n.groups, n.allow_groups, 1))
            AS x(fleet_id, manifest_id, status, action, groups, allow_groups, d)
        WHERE (o.fleet_id, o.manifest_id, o.status, o.action, o.groups, o.allow_groups)
              IS DISTINCT FROM (n.fleet_id, n.manifest_id, n.status, n.action, n.groups, n.allow_groups)$s$);
END $do$;

CREATE OR REPLACE FUNCTION vncfleet_count_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM device_counts;
    DELETE FROM device_group_counts;
    RETURN NULL;
END $$;

-- No device may change while the counters are filled and the triggers put in place,
-- so that each change is counted exactly once: by the backfill or by a trigger.
LOCK TABLE devices IN SHARE ROW EXCLUSIVE MODE;

DROP TRIGGER IF EXISTS devices_count_insert ON devices;
DROP TRIGGER IF EXISTS devices_count_update ON devices;
DROP TRIGGER IF EXISTS devices_count_delete ON devices;
DROP TRIGGER IF EXISTS devices_count_truncate ON devices;
CREATE TRIGGER devices_count_insert AFTER INSERT ON devices REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION vncfleet_count_insert();
CREATE TRIGGER devices_count_update AFTER UPDATE ON devices REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION vncfleet_count_update();
CREATE TRIGGER devices_count_delete AFTER DELETE ON devices REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION vncfleet_count_delete();
CREATE TRIGGER devices_count_truncate AFTER TRUNCATE ON devices
    FOR EACH STATEMENT EXECUTE FUNCTION vncfleet_count_truncate();

DELETE FROM device_counts;
DELETE FROM device_group_counts;
INSERT INTO device_counts (fleet_id, manifest_id, status, shard, devices)
SELECT fleet_id, coalesce(manifest_id, 0), status, 0, count(*) FROM devices GROUP BY 1, 2, 3;
INSERT INTO device_group_counts (fleet_id, manifest_id, grp, status, shard, devices)
SELECT fleet_id, coalesce(manifest_id, 0), g, status, 0, count(*)
FROM devices, unnest(vncfleet_count_groups(action, groups, allow_groups)) AS g GROUP BY 1, 2, 3, 4;
