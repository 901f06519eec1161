package server

import (
	"net/http"
	"time"

	"github.com/vncfleet/vncfleet/internal/lifecycle"
	"github.com/vncfleet/vncfleet/internal/store"
)

// Schedule is when a periodic job runs next (river.PeriodicSchedule is one): the
// rotation schedule, whose forecasts package lifecycle makes.
type Schedule = lifecycle.Schedule

// RotationOverview is what GET /v1/rotation answers.
type RotationOverview struct {
	// MaxAgeSeconds is rotation.max_age: older passwords are due.
	MaxAgeSeconds float64 `json:"maxAgeSeconds"`
	// NextRun is the schedule's next run; absent when rotation is not scheduled.
	NextRun        *time.Time              `json:"nextRun,omitempty"`
	Fleets         []FleetRotation         `json:"fleets"`
	RecentFailures []store.RotationFailure `json:"recentFailures"`
}

// FleetRotation is a fleet's passwords against the rotation age, and when the
// schedule next rotates one of them: the forecast of its oldest password.
type FleetRotation struct {
	store.FleetRotation
	Next *lifecycle.Forecast `json:"nextRotation,omitempty"`
}

func (s *Server) rotationStatus(w http.ResponseWriter, r *http.Request) {
	fleets, failures, err := s.cfg.Store.RotationStatus(r.Context(), s.cfg.RotationMaxAge)
	if !s.found(w, r, err) {
		return
	}
	o := RotationOverview{MaxAgeSeconds: s.cfg.RotationMaxAge.Seconds(), Fleets: []FleetRotation{}, RecentFailures: failures}
	now := time.Now()
	for _, f := range fleets {
		fr := FleetRotation{FleetRotation: f}
		if f.OldestPasswordAt != nil {
			next := s.rotationPolicy().NextRotation(s.cfg.RotationSchedule, f.OldestPasswordAt, now)
			fr.Next = &next
		}
		o.Fleets = append(o.Fleets, fr)
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

// rotationPolicy is rotation.max_age and rotation.window, for lifecycle's forecasts.
func (s *Server) rotationPolicy() lifecycle.Config {
	return lifecycle.Config{MaxAge: s.cfg.RotationMaxAge, Window: s.cfg.RotationWindow}
}
