package reconcile

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"time"

	"github.com/vncfleet/vncfleet/internal/store"
)

// RecordedItems bounds each list of a report as it is stored: a run that finds a
// whole fleet vanished keeps its counts in full (store.ReconcileRun.Counts) and the
// first entries of the list, so a history of store.ReconcileRunsKept runs stays small.
const RecordedItems = 1000

// RunRecord is what the store keeps of a run: rep (unless the run failed with err),
// each list capped at RecordedItems, with every fleet's findings counted from
// the full lists. A failed run keeps only an error that names no database detail:
// a listing's failure says what VNC Cloud answered (as the API does); anything else
// points to the server's log.
func RunRecord(rep *Report, err error, dryRun bool, trigger string, started, finished time.Time) (store.ReconcileRun, error) {
	run := store.ReconcileRun{StartedAt: started, FinishedAt: finished, DryRun: dryRun, Trigger: trigger}
	if err != nil || rep == nil {
		var listing *ListingError
		switch {
		case errors.As(err, &listing):
			run.Error = listing.Error()
		case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
			run.Error = "the run was stopped before it completed"
		default:
			run.Error = "the run failed; the server's log has the cause"
		}
		return run, nil
	}
	run.StartedAt, run.Converged = rep.StartedAt, rep.Converged
	run.ByFleet = rep.ByFleet()
	capped := *rep
	run.Counts = map[string]int{}
	for name, list := range map[string]*[]string{
		"vanished": &capped.Vanished, "drifted": &capped.Drifted, "adopted": &capped.Adopted,
		"deletedOrphans": &capped.DeletedOrphans, "inFlight": &capped.InFlight,
		"createsInFlight": &capped.CreatesInFlight, "ambiguous": &capped.Ambiguous, "foreign": &capped.Foreign,
		"deletedForeign": &capped.DeletedForeign, "errors": &capped.Errors,
	} {
		run.Counts[name] = len(*list)
		if len(*list) > RecordedItems {
			*list = (*list)[:RecordedItems]
		}
	}
	b, err := json.Marshal(capped)
	if err != nil {
		return run, err
	}
	run.Report = b
	return run, nil
}

// ByFleet counts the report's findings of each fleet's devices (what names a device
// as "fleet/device_id"); foreign and orphan addresses belong to no fleet.
func (r *Report) ByFleet() map[string]store.FleetFindings {
	out := map[string]store.FleetFindings{}
	count := func(list []string, add func(*store.FleetFindings)) {
		for _, item := range list {
			name, _, ok := strings.Cut(item, "/")
			if !ok {
				continue
			}
			f := out[name]
			add(&f)
			out[name] = f
		}
	}
	count(r.Vanished, func(f *store.FleetFindings) { f.Vanished++ })
	count(r.Drifted, func(f *store.FleetFindings) { f.Drifted++ })
	count(r.Adopted, func(f *store.FleetFindings) { f.Adopted++ })
	count(r.CreatesInFlight, func(f *store.FleetFindings) { f.CreatesInFlight++ })
	return out
}
