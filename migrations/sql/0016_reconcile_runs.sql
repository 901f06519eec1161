-- Every reconciliation run's report (scheduled, `vncfleet reconcile`, the console's
-- "run now" and dry runs), so the fleets overview can say when the account was last
-- reconciled and the reconcile page can render the last report. The report holds
-- fleet/device ids, cloud addresses and error messages: no password, token or key.
-- A run that could not complete has no report, only its error. by_fleet counts each
-- fleet's findings from the full lists, and counts the full length of each list (the
-- stored report keeps the first entries of each), so a fleet reads what applies to it
-- without the account's other fleets. The history is kept
-- bounded by internal/store (ReconcileRunsKept): the newest runs only.
CREATE TABLE IF NOT EXISTS reconcile_runs (
    id          bigserial PRIMARY KEY,
    started_at  timestamptz NOT NULL,
    finished_at timestamptz NOT NULL DEFAULT now(),
    dry_run     boolean NOT NULL,
    trigger     text NOT NULL CHECK (trigger IN ('schedule', 'request')),
    converged   boolean NOT NULL DEFAULT false,
    report      jsonb,
    by_fleet    jsonb NOT NULL DEFAULT '{}',
    counts      jsonb NOT NULL DEFAULT '{}',
    error       text,
    CHECK ((report IS NULL) <> (error IS NULL))
);
