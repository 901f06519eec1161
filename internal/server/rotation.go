package server

import (
	"net/http"
	"time"

	"github.com/vncfleet/vncfleet/internal/store"
)

// Schedule is when a periodic job runs next (river.PeriodicSchedule is one).
type Schedule interface{ Next(time.Time) time.Time }

// RotationOverview is what GET /v1/rotation answers.
type RotationOverview struct {
	// MaxAgeSeconds is rotation.max_age: older passwords are due.
	MaxAgeSeconds float64 `json:"maxAgeSeconds"`
	// NextRun is the schedule's next run; absent when rotation is not scheduled.
	NextRun        *time.Time              `json:"nextRun,omitempty"`
	Fleets         []store.FleetRotation   `json:"fleets"`
	RecentFailures []store.RotationFailure `json:"recentFailures"`
}

func (s *Server) rotationStatus(w http.ResponseWriter, r *http.Request) {
	fleets, failures, err := s.cfg.Store.RotationStatus(r.Context(), s.cfg.RotationMaxAge)
	if !s.found(w, r, err) {
		return
	}
	o := RotationOverview{MaxAgeSeconds: s.cfg.RotationMaxAge.Seconds(), Fleets: fleets, RecentFailures: failures}
	if o.Fleets == nil {
		o.Fleets = []store.FleetRotation{}
	}
	if o.RecentFailures == nil {
		o.RecentFailures = []store.RotationFailure{}
	}
	if s.cfg.RotationSchedule != nil {
		next := s.cfg.RotationSchedule.Next(time.Now()).UTC()
		o.NextRun = &next
	}
	writeJSON(w, http.StatusOK, o)
}
