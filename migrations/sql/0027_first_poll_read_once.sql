-- vncfleet_first_poll (0020) looks the account's estimate up with a subquery, and a
-- SQL function holding a subquery is never inlined: a set-based UPDATE called it once
-- per row, each call a query of its own (24,898 calls in one 20,000-device benchmark
-- run). The rule is split in two so that the lookup is done once per statement:
-- vncfleet_first_poll_for holds the rule (the scouts' delay and the others' margin,
-- readiness.FirstPollFor in Go) over an estimate already read, without a subquery,
-- so the planner inlines it; the caller passes the lookup as an uncorrelated
-- subquery, which is evaluated once (store.firstPollSQL). vncfleet_first_poll stays,
-- in terms of the new function: processes of the previous version, still running
-- while an upgrade rolls out, call it.
CREATE OR REPLACE FUNCTION vncfleet_first_poll_for(learned interval, fallback interval, device bigint)
RETURNS interval LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce(learned * CASE WHEN device % 16 = 0 THEN 1.0::float8 ELSE 1.05::float8 END, fallback)
$$;

-- The estimate learned for an account, NULL when nothing was learned yet. Not
-- inlinable either: callers put it in a subquery of its own, which is run once.
CREATE OR REPLACE FUNCTION vncfleet_learned_first_poll(acct text)
RETURNS interval LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT make_interval(secs => first_poll_seconds) FROM readiness_estimates WHERE account = acct
$$;

CREATE OR REPLACE FUNCTION vncfleet_first_poll(acct text, fallback interval, device bigint)
RETURNS interval LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT vncfleet_first_poll_for((SELECT vncfleet_learned_first_poll(acct)), fallback, device)
$$;
