package sim

import (
	"net/http"
	"strconv"
	"time"
)

// Request is one API request as the simulator received it: when it arrived (the
// instant it was counted, the same one the sliding windows use) and its operation
// ("create", "ready", ...; "other" for a path or method the API does not have).
type Request struct {
	At time.Time `json:"at"`
	Op string    `json:"op"`
}

// requestLog keeps the arrival of the last cap API requests, for benchmarks that
// need more than the counters: the busiest sliding second over any part of a run,
// when the first create or the last poll arrived. Entries are 16 bytes plus a shared
// operation name; when full, the oldest are forgotten and counted in dropped.
type requestLog struct {
	cap     int
	at      []int64 // nanoseconds since the epoch of the Server, a ring when full
	op      []string
	next    int // where the next entry goes once the ring is full
	dropped int64
}

func (l *requestLog) add(t int64, op string) {
	if l.cap <= 0 {
		return
	}
	if op == "" {
		op = "other"
	}
	if len(l.at) < l.cap {
		l.at = append(l.at, t)
		l.op = append(l.op, op)
		return
	}
	l.at[l.next], l.op[l.next] = t, op
	l.next = (l.next + 1) % l.cap
	l.dropped++
}

// Requests returns the requests the log holds, in arrival order, and how many older
// ones it has forgotten. It is empty unless Config.RequestLog is set.
func (s *Server) Requests() (reqs []Request, dropped int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	l := &s.log
	reqs = make([]Request, 0, len(l.at))
	for i := range len(l.at) {
		j := (l.next + i) % len(l.at)
		reqs = append(reqs, Request{At: s.epoch.Add(time.Duration(l.at[j])), Op: l.op[j]})
	}
	return reqs, l.dropped
}

// RequestLog is the answer of GET /sim/requests.
type RequestLog struct {
	Capacity int       `json:"capacity"` // Config.RequestLog: 0 means nothing is logged
	Dropped  int64     `json:"dropped"`  // requests forgotten because the log was full
	Requests []Request `json:"requests"` // in arrival order
}

// serveRequests answers GET /sim/requests: every logged request, or with ?since=T
// (RFC 3339, nanoseconds allowed) those that arrived after T.
func (s *Server) serveRequests(w http.ResponseWriter, r *http.Request) {
	var since time.Time
	if v := r.URL.Query().Get("since"); v != "" {
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"errorMessage": "since must be an RFC 3339 time: " + strconv.Quote(v)})
			return
		}
		since = t
	}
	reqs, dropped := s.Requests()
	if !since.IsZero() {
		i := 0
		for i < len(reqs) && !reqs[i].At.After(since) {
			i++
		}
		reqs = reqs[i:]
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, RequestLog{Capacity: s.cfg.RequestLog, Dropped: dropped, Requests: reqs})
}
