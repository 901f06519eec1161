package metrics

import (
	"context"

	"github.com/jackc/pgx/v5"

	"github.com/vncfleet/vncfleet/fleet"
	"github.com/vncfleet/vncfleet/internal/store"
)

// WorkRecorded is jobs.Deps.Recorded: it counts each device operation by outcome.
// "failed" is a definite refusal; a transient failure counts as "retry" even when it
// used the device's last attempt (the store decides that).
func (m *Metrics) WorkRecorded(results []store.Result) {
	for _, r := range results {
		outcome := "ok"
		switch r.Report.Outcome {
		case fleet.NotSent:
			outcome = "not_sent"
		case fleet.Retryable, fleet.Unknown:
			outcome = "retry"
		case fleet.Refused:
			outcome = "failed"
		}
		m.workResults.WithLabelValues(r.Item.Op, outcome).Inc()
	}
}

// BecameReady is a jobs.AfterReady: in the transaction that marks devices ready, it
// reads the upload-to-ready time of those that are not rotations and counts the
// rotations promoted. The read runs in a savepoint, so that metrics can never fail
// the transaction. That transaction is retried through a database outage, so a
// retried batch may be observed twice: an overcount by a batch then, never an
// undercount.
func (m *Metrics) BecameReady(ctx context.Context, tx pgx.Tx, became []store.PollItem) error {
	var provisioned []int64
	for _, it := range became {
		if it.Rotation {
			m.rotations.WithLabelValues("rotated").Inc()
		} else {
			provisioned = append(provisioned, it.PK)
		}
	}
	if len(provisioned) == 0 {
		return nil
	}
	sp, err := tx.Begin(ctx)
	if err != nil {
		return nil // the transaction itself is in trouble; its own statements will say so
	}
	delays, err := store.ReadyDelays(ctx, sp, provisioned)
	if err != nil {
		_ = sp.Rollback(ctx)
		return nil
	}
	for _, d := range delays {
		m.readySeconds.Observe(d.Seconds())
	}
	return sp.Commit(ctx)
}
