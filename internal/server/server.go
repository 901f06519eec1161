// Package server is vncfleet's HTTP API (docs/http-api.md): manifest uploads, progress,
// reports, export and credentials, behind bearer tokens with roles.
package server

import (
	"cmp"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/vncfleet/vncfleet/internal/store"
)

// Roles a token can hold.
const (
	RoleUpload  = "upload"
	RoleRead    = "read"
	RoleSecrets = "secrets"
	RoleAdmin   = "admin"
)

// Token is a bearer token and what it may do. The token itself is only compared, never
// logged: requests are attributed to Name.
type Token struct {
	Name  string
	Value string
	Roles []string
}

func (t Token) has(role string) bool {
	return slices.Contains(t.Roles, role) || slices.Contains(t.Roles, RoleAdmin)
}

// Enqueuer inserts the jobs of a work queue inside the caller's transaction.
type Enqueuer func(ctx context.Context, tx pgx.Tx, key string, devices int) error

// Config configures the API.
type Config struct {
	Store  *store.Store
	Tokens []Token
	// Enqueue inserts work jobs for a queue (uploads, retries).
	Enqueue Enqueuer
	// EnqueueConsoleURLs inserts Zenlayer console URL jobs for an upload; nil skips them.
	EnqueueConsoleURLs func(ctx context.Context, tx pgx.Tx, wanted []store.ConsoleURLWanted) error
	// EnqueueApply inserts the job that applies a large manifest after its upload; nil
	// applies every manifest inside its upload (store.IngestRequest.EnqueueApply).
	EnqueueApply func(ctx context.Context, tx pgx.Tx, manifestID int64) error
	// InlineApplyRows: see store.IngestRequest; 0 takes the store's default.
	InlineApplyRows int
	// MaxUploadBytes bounds a manifest upload; larger ones get 413. Defaults to 256 MiB.
	MaxUploadBytes int64
	// MaxDeletionsPercent and MaxDeletionsMin give the replace guard's default: that
	// share of the fleet's present devices, and at least that many. Defaults 10 and 1.
	MaxDeletionsPercent float64
	MaxDeletionsMin     int
	// Lifecycle handles rotation and reconciliation requests; nil answers 501.
	Lifecycle Lifecycle
	Logger    *slog.Logger
	// Rate is VNCCLOUD_RATE, the budget a progress stream's ETA is computed from; 0
	// means none (the ETA then follows the pace measured).
	Rate float64
	// MaxStreams bounds the event streams (SSE) open at once in this process; one
	// more is answered 503. Defaults to DefaultMaxStreams.
	MaxStreams int
	// StreamInterval is how often a stream reads its state. Defaults to
	// DefaultStreamInterval.
	StreamInterval time.Duration
	// RotationMaxAge is rotation.max_age, and RotationSchedule when rotation runs (nil:
	// not scheduled), for GET /v1/rotation.
	RotationMaxAge   time.Duration
	RotationSchedule Schedule
	// StreamHeartbeat is the longest a stream stays silent (a comment line keeps
	// proxies from closing it). Defaults to DefaultStreamHeartbeat.
	StreamHeartbeat time.Duration
}

// Lifecycle is what the API needs from rotation and reconciliation.
type Lifecycle interface {
	Rotate(ctx context.Context, fleet string, all bool) (scheduled int, key string, err error)
	Reconcile(ctx context.Context, dryRun bool) (any, error)
}

// Server is the HTTP API.
type Server struct {
	cfg     Config
	tokens  []hashedToken
	mux     *http.ServeMux
	streams *streams
}

// hashedToken keeps the SHA-256 of each token, so comparisons take the same time
// whatever the length or prefix of a guess.
type hashedToken struct {
	sum   [32]byte
	token Token
}

// New builds the API.
func New(cfg Config) *Server {
	if cfg.MaxUploadBytes <= 0 {
		cfg.MaxUploadBytes = 256 << 20
	}
	if cfg.MaxDeletionsPercent <= 0 {
		cfg.MaxDeletionsPercent = 10
	}
	if cfg.MaxDeletionsMin <= 0 {
		cfg.MaxDeletionsMin = 1
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	cfg.MaxStreams = cmp.Or(cfg.MaxStreams, DefaultMaxStreams)
	cfg.StreamInterval = cmp.Or(cfg.StreamInterval, DefaultStreamInterval)
	cfg.StreamHeartbeat = cmp.Or(cfg.StreamHeartbeat, DefaultStreamHeartbeat)
	s := &Server{cfg: cfg, mux: http.NewServeMux(), streams: newStreams(cfg.MaxStreams)}
	for _, t := range cfg.Tokens {
		if t.Value != "" {
			s.tokens = append(s.tokens, hashedToken{sum: sha256.Sum256([]byte(t.Value)), token: t})
		}
	}
	s.routes()
	return s
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

func (s *Server) routes() {
	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	s.mux.HandleFunc("GET /readyz", s.readyz)
	s.mux.Handle("POST /v1/manifests", s.auth(RoleUpload, s.upload))
	s.mux.Handle("GET /v1/manifests", s.auth(RoleRead, s.listManifests))
	s.mux.Handle("GET /v1/manifests/{id}", s.auth(RoleRead, s.manifestProgress))
	s.mux.Handle("GET /v1/manifests/{id}/report", s.auth(RoleRead, s.manifestReport))
	s.mux.Handle("POST /v1/manifests/{id}/cancel", s.auth(RoleUpload, s.cancelManifest))
	s.mux.Handle("GET /v1/manifests/{id}/events", s.auth(RoleRead, s.manifestEvents))
	s.mux.Handle("GET /v1/manifests/{id}/failures", s.auth(RoleRead, s.manifestFailures))
	s.mux.Handle("GET /v1/manifests/{id}/fixup", s.auth(RoleRead, s.manifestFixup))
	s.mux.Handle("GET /v1/status/events", s.auth(RoleRead, s.statusEvents))
	s.mux.Handle("GET /v1/me", s.auth(anyRole, s.me))
	s.mux.Handle("GET /v1/fleets/{fleet}/devices/{device}", s.auth(RoleRead, s.device))
	s.mux.Handle("GET /v1/webhooks", s.auth(RoleRead, s.webhooks))
	s.mux.Handle("GET /v1/rotation", s.auth(RoleRead, s.rotationStatus))
	s.mux.Handle("POST /v1/webhooks/events/{id}/redeliver", s.auth(RoleUpload, s.redeliverWebhook))
	s.mux.HandleFunc("GET /v1/openapi.yaml", serveOpenAPI)
	s.mux.Handle("GET /v1/status", s.auth(RoleRead, s.status))
	s.mux.Handle("GET /v1/export", s.auth(RoleRead, s.export))
	s.mux.Handle("POST /v1/retry", s.auth(RoleUpload, s.retry))
	s.mux.Handle("POST /v1/rotate", s.auth(RoleUpload, s.rotate))
	s.mux.Handle("POST /v1/reconcile", s.auth(RoleUpload, s.reconcile))
	s.mux.Handle("GET /v1/work/{key}", s.auth(RoleRead, s.workProgress))
	s.mux.Handle("GET /v1/fleets/{fleet}/devices/{device}/credentials", s.auth(RoleSecrets, s.credentials))
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	if err := s.cfg.Store.Ping(r.Context()); err != nil {
		writeError(w, http.StatusServiceUnavailable, err.Error(), nil)
		return
	}
	_, _ = w.Write([]byte("ok\n"))
}

type ctxKey struct{}

// caller is the token that authenticated the request.
func caller(r *http.Request) Token {
	t, _ := r.Context().Value(ctxKey{}).(Token)
	return t
}

// anyRole admits every known token (auth).
const anyRole = ""

// auth admits requests bearing a known token that holds role.
func (s *Server) auth(role string, next http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		value, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || value == "" {
			w.Header().Set("WWW-Authenticate", `Bearer realm="vncfleet"`)
			writeError(w, http.StatusUnauthorized, "missing bearer token", nil)
			return
		}
		sum := sha256.Sum256([]byte(strings.TrimSpace(value)))
		var found *Token
		for i := range s.tokens {
			if subtle.ConstantTimeCompare(sum[:], s.tokens[i].sum[:]) == 1 {
				found = &s.tokens[i].token
			}
		}
		if found == nil {
			w.Header().Set("WWW-Authenticate", `Bearer realm="vncfleet", error="invalid_token"`)
			writeError(w, http.StatusUnauthorized, "unknown bearer token", nil)
			return
		}
		if role != anyRole && !found.has(role) {
			writeError(w, http.StatusForbidden, "token "+found.Name+" lacks the "+role+" role", nil)
			return
		}
		next(w, r.WithContext(context.WithValue(r.Context(), ctxKey{}, *found)))
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// writeError answers {"error": msg} plus extra fields.
func writeError(w http.ResponseWriter, status int, msg string, extra map[string]any) {
	body := map[string]any{"error": msg}
	for k, v := range extra {
		body[k] = v
	}
	writeJSON(w, status, body)
}

// internalError logs the cause and answers 500 (or 503 when the database is down).
func (s *Server) internalError(w http.ResponseWriter, r *http.Request, err error) {
	s.cfg.Logger.Error("request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	status := http.StatusInternalServerError
	if errors.Is(err, context.DeadlineExceeded) || isConnError(err) {
		status = http.StatusServiceUnavailable
	}
	writeError(w, status, "internal error: "+err.Error(), nil)
}

func isConnError(err error) bool {
	var pgConnErr interface{ SafeToRetry() bool }
	return errors.As(err, &pgConnErr)
}
