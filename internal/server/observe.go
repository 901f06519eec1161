package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"net/http"
	"time"
)

// RequestIDHeader carries a request's id: taken from the caller when it sends a sane
// one (a proxy's), made up otherwise, and always echoed in the answer, so a user's
// report can be matched with its log line.
const RequestIDHeader = "X-Request-Id"

// requestInfo is what the handlers learn of a request that its log line needs; auth
// fills in the token's name (never the token).
type requestInfo struct {
	id    string
	token string
}

type infoKey struct{}

func infoOf(r *http.Request) *requestInfo {
	info, _ := r.Context().Value(infoKey{}).(*requestInfo)
	return info
}

// quietRoutes are polled by machines; their lines go to debug level.
var quietRoutes = map[string]bool{"GET /healthz": true, "GET /readyz": true, "GET /metrics": true}

// observe logs every request in one line — id, method, route pattern (never the
// path, which can hold a device id), status, duration, token name — and reports it
// to Config.ObserveRequest.
func (s *Server) observe(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	_, route := s.mux.Handler(r)
	if route == "" {
		route = "unmatched"
	}
	info := &requestInfo{id: acceptRequestID(r.Header.Get(RequestIDHeader))}
	rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
	ctx := context.WithValue(context.WithValue(r.Context(), infoKey{}, info), requestIDKey{}, info.id)
	// s.handler is the mux behind wrap (security headers, write deadlines), which
	// answers with this id.
	s.handler.ServeHTTP(rec, r.WithContext(ctx))
	elapsed := time.Since(start)
	level := slog.LevelInfo
	if quietRoutes[route] {
		level = slog.LevelDebug
	}
	s.cfg.Logger.LogAttrs(r.Context(), level, "request", slog.String("request_id", info.id), slog.String("route", route),
		slog.Int("status", rec.status), slog.Duration("duration", elapsed), slog.String("token", info.token))
	if s.cfg.ObserveRequest != nil {
		s.cfg.ObserveRequest(route, rec.status, elapsed)
	}
}

// acceptRequestID keeps a caller's id of up to 64 letters, digits, '-', '_' or '.';
// anything else could forge log lines, so it is replaced by a random one.
func acceptRequestID(given string) string {
	ok := given != "" && len(given) <= 64
	for _, c := range given {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			ok = false
			break
		}
	}
	if ok {
		return given
	}
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// statusRecorder remembers the status a handler wrote.
type statusRecorder struct {
	http.ResponseWriter
	status      int
	wroteHeader bool
}

func (s *statusRecorder) WriteHeader(code int) {
	if !s.wroteHeader {
		s.status, s.wroteHeader = code, true
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(b []byte) (int, error) {
	s.wroteHeader = true
	return s.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach Flush of the real writer.
func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }
