package server

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/vncfleet/vncfleet/internal/progress"
	"github.com/vncfleet/vncfleet/internal/store"
)

// Server-Sent Events: a stream sends the whole state (a snapshot) whenever it
// changes, so a client that reconnects with Last-Event-ID misses nothing by
// construction: the first event it gets is the current state. Event ids go on from
// the one the client last saw.

// Stream defaults; see Config.
const (
	DefaultMaxStreams      = 64
	DefaultStreamInterval  = time.Second
	DefaultStreamHeartbeat = 15 * time.Second
)

// streamRetryMillis is the reconnect delay the stream asks browsers for.
const streamRetryMillis = 2000

// streams bounds the open streams of this process and ends them all on shutdown.
type streams struct {
	slots chan struct{}
	mu    sync.Mutex
	done  chan struct{} // closed by stop
}

func newStreams(max int) *streams {
	return &streams{slots: make(chan struct{}, max), done: make(chan struct{})}
}

func (st *streams) stop() {
	st.mu.Lock()
	defer st.mu.Unlock()
	select {
	case <-st.done:
	default:
		close(st.done)
	}
}

// StopStreams ends every open event stream (for http.Server.RegisterOnShutdown: a
// stream never goes idle, so a graceful shutdown would otherwise wait it out).
func (s *Server) StopStreams() { s.streams.stop() }

// snapshotFunc reads the state a stream sends, and whether it is final.
type snapshotFunc func(ctx context.Context) (state any, final bool, err error)

// stream serves snapshots of one state as text/event-stream until the state is final,
// the client goes, or the server shuts down.
func (s *Server) stream(w http.ResponseWriter, r *http.Request, event string, snapshot snapshotFunc) {
	flusher, ok := w.(http.Flusher)
	if !ok {
		writeError(w, http.StatusInternalServerError, "streaming is not supported here", nil)
		return
	}
	select {
	case s.streams.slots <- struct{}{}:
		defer func() { <-s.streams.slots }()
	default:
		w.Header().Set("Retry-After", "5")
		writeError(w, http.StatusServiceUnavailable, fmt.Sprintf("too many event streams open (%d); try again shortly", cap(s.streams.slots)), nil)
		return
	}
	// The first snapshot before the headers: a missing manifest is still a 404.
	state, final, err := snapshot(r.Context())
	if !s.found(w, r, err) {
		return
	}
	seq, _ := strconv.ParseInt(r.Header.Get("Last-Event-ID"), 10, 64)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	fmt.Fprintf(w, "retry: %d\n\n", streamRetryMillis)

	tick := time.NewTicker(s.cfg.StreamInterval)
	defer tick.Stop()
	heartbeat := time.NewTicker(s.cfg.StreamHeartbeat)
	defer heartbeat.Stop()
	var last []byte
	for {
		if err == nil {
			data, _ := json.Marshal(state)
			if !bytes.Equal(data, last) {
				seq++
				fmt.Fprintf(w, "id: %d\nevent: %s\ndata: %s\n\n", seq, event, data)
				last = data
			}
			if final {
				fmt.Fprintf(w, "id: %d\nevent: done\ndata: {}\n\n", seq)
				flusher.Flush()
				return
			}
		} else {
			// A failed read (database restarting) is said, not fatal: the next tick tries again.
			s.cfg.Logger.Warn("event stream read failed", "path", r.URL.Path, "err", err)
			fmt.Fprint(w, ": read failed, retrying\n\n")
		}
		flusher.Flush()
		select {
		case <-r.Context().Done():
			return
		case <-s.streams.done:
			return
		case <-heartbeat.C:
			fmt.Fprint(w, ": heartbeat\n\n")
			flusher.Flush()
			continue
		case <-tick.C:
		}
		state, final, err = snapshot(r.Context())
	}
}

// ProgressEvent is a manifest's progress with its pace: what a progress stream sends.
// Its calls owed (callsOwed) are the embedded Progress's.
type ProgressEvent struct {
	*store.Progress
	// DevicesPerSecond is how fast devices settled over the stream's last rate window.
	DevicesPerSecond float64 `json:"devicesPerSecond"`
	// Rate is the requests per second the cluster's limiter allows now
	// (progress.BudgetShare of the limiter's state; VNCCLOUD_RATE when no process
	// publishes one; 0: none).
	Rate float64 `json:"rate"`
	// ETASeconds estimates the time left by progress's rule (progress.ETA); absent
	// while nothing allows an estimate that means anything.
	ETASeconds *float64 `json:"etaSeconds,omitempty"`
}

// pace measures, over progress.Pace's sliding window, devices/s for the display and
// the calls paid off for the ETA.
type pace struct {
	rate     float64 // VNCCLOUD_RATE: the budget when no limiter state is published
	measured progress.Pace
}

// observe records a progress reading taken at now and returns its event.
func (pc *pace) observe(p *store.Progress, now time.Time) ProgressEvent {
	budget, paused := pc.rate, time.Duration(0)
	if c := p.Cloud; c != nil {
		if c.Limiter != nil {
			budget = progress.BudgetShare(c.Limiter.Rate, c.Limiter.Factor)
		}
		if c.PausedUntil != nil {
			paused = c.PausedUntil.Sub(now)
		}
	}
	ev := ProgressEvent{Progress: p, Rate: budget}
	pc.measured.Observe(now, p.CallsOwed, p.Settled)
	ev.DevicesPerSecond = pc.measured.Settled()
	if p.Settled >= p.Total {
		zero := 0.0
		ev.ETASeconds = &zero
	} else if eta, ok := pc.measured.ETA(p.CallsOwed, budget, paused); ok {
		secs := eta.Seconds()
		ev.ETASeconds = &secs
	}
	return ev
}

func (s *Server) manifestEvents(w http.ResponseWriter, r *http.Request) {
	id, ok := s.manifestID(w, r)
	if !ok {
		return
	}
	pc := &pace{rate: s.cfg.Rate}
	s.stream(w, r, "progress", func(ctx context.Context) (any, bool, error) {
		p, err := s.cfg.Store.ManifestProgress(ctx, id, true)
		if err != nil {
			return nil, false, err
		}
		return pc.observe(p, time.Now()), p.Done, nil
	})
}

func (s *Server) statusEvents(w http.ResponseWriter, r *http.Request) {
	fleetName, ok := s.fleetParam(w, r)
	if !ok {
		return
	}
	s.stream(w, r, "status", func(ctx context.Context) (any, bool, error) {
		st, err := s.cfg.Store.Status(ctx, fleetName)
		return st, false, err
	})
}
