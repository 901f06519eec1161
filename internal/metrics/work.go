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

// BecameReady is a jobs.AfterReady: it observes the upload-to-ready time of the
// devices that just became ready and are not rotations, and counts the rotations
// promoted. It reads nothing: the poll's claim brought the time since the upload. The
// transaction it is called in is retried through a database outage, so a retried
// batch may be observed twice: an overcount by a batch then, never an undercount.
func (m *Metrics) BecameReady(_ context.Context, _ pgx.Tx, became []store.PollItem) error {
	for _, it := range became {
		switch {
		case it.Rotation:
			m.rotations.WithLabelValues("rotated").Inc()
		case it.SinceUpload > 0:
			m.readySeconds.Observe(it.SinceUpload.Seconds())
		}
	}
	return nil
}
