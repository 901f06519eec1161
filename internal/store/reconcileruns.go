package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// ReconcileRunsKept bounds the reconcile history: recording a run deletes all but
// the newest this many.
const ReconcileRunsKept = 100

// Triggers of a reconcile run.
const (
	ReconcileBySchedule = "schedule" // the periodic job
	ReconcileByRequest  = "request"  // POST /v1/reconcile: `vncfleet reconcile`, the console
)

// FleetFindings counts what one reconcile run found of one fleet's devices.
type FleetFindings struct {
	Vanished        int `json:"vanished"`
	Drifted         int `json:"drifted"`
	Adopted         int `json:"adopted"`
	CreatesInFlight int `json:"createsInFlight"`
}

// ReconcileRun is one recorded reconciliation run. Report is the run's report as
// package reconcile encodes it (absent when the run could not complete; Error then
// says why); ByFleet counts each fleet's findings, and Counts the full length of each
// of the report's lists (which the stored report may cap).
type ReconcileRun struct {
	ID         int64                    `json:"id"`
	StartedAt  time.Time                `json:"startedAt"`
	FinishedAt time.Time                `json:"finishedAt"`
	DryRun     bool                     `json:"dryRun"`
	Trigger    string                   `json:"trigger"`
	Converged  bool                     `json:"converged"`
	ByFleet    map[string]FleetFindings `json:"byFleet"`
	Counts     map[string]int           `json:"counts"`
	Report     json.RawMessage          `json:"report,omitempty"`
	Error      string                   `json:"error,omitempty"`
}

// RecordReconcileRun stores a run and prunes the history to ReconcileRunsKept, in one
// transaction; it returns the run's id.
func (s *Store) RecordReconcileRun(ctx context.Context, run ReconcileRun) (int64, error) {
	if (run.Report == nil) == (run.Error == "") {
		return 0, errors.New("record reconcile run: exactly one of Report and Error")
	}
	byFleet := run.ByFleet
	if byFleet == nil {
		byFleet = map[string]FleetFindings{}
	}
	counts := run.Counts
	if counts == nil {
		counts = map[string]int{}
	}
	var report, errText any
	if run.Report != nil {
		report = []byte(run.Report)
	}
	if run.Error != "" {
		errText = run.Error
	}
	var id int64
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		if err := tx.QueryRow(ctx, `
			INSERT INTO reconcile_runs (started_at, finished_at, dry_run, trigger, converged, report, by_fleet, counts, error)
			VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7, $8, $9) RETURNING id`,
			run.StartedAt, run.FinishedAt, run.DryRun, run.Trigger, run.Converged, report, byFleet, counts, errText).Scan(&id); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `DELETE FROM reconcile_runs WHERE id <= (
			SELECT id FROM reconcile_runs ORDER BY id DESC OFFSET $1 LIMIT 1)`, ReconcileRunsKept)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("record reconcile run: %w", err)
	}
	return id, nil
}

// ReconcileRuns lists the newest recorded runs first, at most limit, with their
// reports when withReports.
func (s *Store) ReconcileRuns(ctx context.Context, limit int, withReports bool) ([]ReconcileRun, error) {
	rows, err := s.pool.Query(ctx, `
		SELECT id, started_at, finished_at, dry_run, trigger, converged, by_fleet, counts,
		       CASE WHEN $2 THEN report END, coalesce(error, '')
		FROM reconcile_runs ORDER BY id DESC LIMIT $1`, limit, withReports)
	if err != nil {
		return nil, fmt.Errorf("reconcile runs: %w", err)
	}
	runs, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (ReconcileRun, error) {
		var r ReconcileRun
		var report []byte
		err := row.Scan(&r.ID, &r.StartedAt, &r.FinishedAt, &r.DryRun, &r.Trigger, &r.Converged, &r.ByFleet, &r.Counts, &report, &r.Error)
		if report != nil {
			r.Report = report
		}
		return r, err
	})
	if err != nil {
		return nil, fmt.Errorf("reconcile runs: %w", err)
	}
	return runs, nil
}
