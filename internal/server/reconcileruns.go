package server

import (
	"net/http"

	"github.com/vncfleet/vncfleet/internal/store"
)

// reconcileRunsDefault is how many runs GET /v1/reconcile/runs lists unless asked.
const reconcileRunsDefault = 20

// reconcileRuns answers GET /v1/reconcile/runs?limit=N: the recorded runs, newest
// first, without their reports (/v1/reconcile/runs/last has the last one's). A
// report spans the account, so a fleet-limited token may not read it.
func (s *Server) reconcileRuns(w http.ResponseWriter, r *http.Request) {
	if !requireEveryFleet(w, r, "the reconcile history") {
		return
	}
	limit, ok := queryLimit(w, r, reconcileRunsDefault, store.ReconcileRunsKept)
	if !ok {
		return
	}
	runs, err := s.cfg.Store.ReconcileRuns(r.Context(), limit, false)
	if !s.found(w, r, err) {
		return
	}
	if runs == nil {
		runs = []store.ReconcileRun{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"runs": runs})
}

// lastReconcileRun answers GET /v1/reconcile/runs/last: the newest recorded run, dry
// run or not, with its report; 404 when none was recorded.
func (s *Server) lastReconcileRun(w http.ResponseWriter, r *http.Request) {
	if !requireEveryFleet(w, r, "the reconcile history") {
		return
	}
	runs, err := s.cfg.Store.ReconcileRuns(r.Context(), 1, true)
	if !s.found(w, r, err) {
		return
	}
	if len(runs) == 0 {
		writeError(w, http.StatusNotFound, "no reconcile run has been recorded yet", nil)
		return
	}
	writeJSON(w, http.StatusOK, runs[0])
}
