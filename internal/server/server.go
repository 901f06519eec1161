// Package server is vncfleet's HTTP API (docs/http-api.md): manifest uploads, progress,
// reports, export and credentials, behind bearer tokens with roles.
package server

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/netip"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/vncfleet/vncfleet/fleet"
	"github.com/vncfleet/vncfleet/internal/store"
)

// Enqueuer inserts the jobs of a work queue inside the caller's transaction.
type Enqueuer func(ctx context.Context, tx pgx.Tx, key string, devices int) error

// Config configures the API.
type Config struct {
	Store  Store
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
	// ManifestLimits gives the manifest reader's cell and column limits (MaxCellBytes,
	// MaxColumns; zero: fleet's defaults). Separator and encoding come from each
	// upload's query.
	ManifestLimits fleet.ReaderOptions
	// MaxDeletionsPercent and MaxDeletionsMin give the replace guard's default: that
	// share of the fleet's present devices, and at least that many. Defaults 10 and 1.
	MaxDeletionsPercent float64
	MaxDeletionsMin     int
	// Lifecycle handles rotation and reconciliation requests; nil answers 501.
	Lifecycle Lifecycle
	// UploadIdleTimeout: an upload body that sends nothing for this long is answered
	// 408 and stores nothing. Default DefaultUploadIdleTimeout.
	UploadIdleTimeout time.Duration
	// WriteTimeout bounds each write of an answer. Default DefaultWriteTimeout.
	WriteTimeout time.Duration
	// MaxConcurrentUploads bounds the uploads streaming at once, each over a database
	// connection; one more waits up to UploadIdleTimeout for a turn, then is answered
	// 503. Default DefaultMaxConcurrentUploads.
	MaxConcurrentUploads int
	// TrustedProxies are the addresses whose X-Forwarded-For is believed when the
	// audit log and the failed-login limit name a client. None by default: the peer of
	// the connection is the client.
	TrustedProxies []netip.Prefix
	// AuthFailuresPerMinute is how many failed authentications an address may make a
	// minute (and at once) before it is answered 429. Defaults to 10: a person who
	// mistypes a token never gets there, a guesser is slowed to a crawl.
	AuthFailuresPerMinute int
	// ClaimTTL is how long a credential claim token stays redeemable. Defaults to
	// 15 minutes: long enough to carry it to a flashing station, short enough that a
	// lost one is soon worthless.
	ClaimTTL time.Duration
	// MaxClaimTTL bounds the ttl a request may ask for. Defaults to 24 hours.
	MaxClaimTTL time.Duration
	// Logger receives one line per request (observe.go) and per stored manifest.
	Logger *slog.Logger
	// Metrics, when set, is served at GET /metrics without a token: Prometheus scrapes
	// it, and it holds no secret, device id or cloud address.
	Metrics http.Handler
	// ObserveRequest, when set, is told of every request: route pattern, status,
	// duration.
	ObserveRequest func(route string, status int, elapsed time.Duration)
	// ObserveUpload, when set, is told of every upload that was not a dry run: the
	// plan of a stored one, or the number of invalid rows of a rejected one.
	ObserveUpload func(plan store.Plan, invalid int)
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
	// RotationWindow is rotation.window, over which a scheduled run spreads its
	// resets: a device's forecast (GET /v1/fleets/{fleet}/devices/{device}) says by
	// when its reset starts.
	RotationWindow time.Duration
	// StreamHeartbeat is the longest a stream stays silent (a comment line keeps
	// proxies from closing it). Defaults to DefaultStreamHeartbeat.
	StreamHeartbeat time.Duration
}

// Defaults of Config.
const (
	DefaultAuthFailuresPerMinute = 10
	DefaultClaimTTL              = 15 * time.Minute
	DefaultMaxClaimTTL           = 24 * time.Hour
	DefaultMaxUploadBytes        = 256 << 20
	DefaultMaxDeletionsPercent   = 10
	DefaultMaxDeletionsMin       = 1
)

// Lifecycle is what the API needs from rotation and reconciliation.
type Lifecycle interface {
	Rotate(ctx context.Context, fleet string, all bool) (scheduled int, key string, err error)
	Reconcile(ctx context.Context, dryRun bool) (any, error)
}

// Server is the HTTP API.
type Server struct {
	cfg          Config
	tokens       []hashedToken
	authFailures *failureLimiter
	mux          *http.ServeMux
	handler      http.Handler // mux behind wrap
	// uploadSlots holds a token per upload in progress (Config.MaxConcurrentUploads).
	uploadSlots chan struct{}
	streams     *streams
}

// New builds the API.
func New(cfg Config) *Server {
	if cfg.MaxUploadBytes <= 0 {
		cfg.MaxUploadBytes = DefaultMaxUploadBytes
	}
	if cfg.MaxDeletionsPercent <= 0 {
		cfg.MaxDeletionsPercent = DefaultMaxDeletionsPercent
	}
	if cfg.MaxDeletionsMin <= 0 {
		cfg.MaxDeletionsMin = DefaultMaxDeletionsMin
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	cfg.UploadIdleTimeout = cmp.Or(cfg.UploadIdleTimeout, DefaultUploadIdleTimeout)
	cfg.WriteTimeout = cmp.Or(cfg.WriteTimeout, DefaultWriteTimeout)
	cfg.MaxConcurrentUploads = cmp.Or(cfg.MaxConcurrentUploads, DefaultMaxConcurrentUploads)
	cfg.AuthFailuresPerMinute = cmp.Or(cfg.AuthFailuresPerMinute, DefaultAuthFailuresPerMinute)
	cfg.ClaimTTL = cmp.Or(cfg.ClaimTTL, DefaultClaimTTL)
	cfg.MaxClaimTTL = cmp.Or(cfg.MaxClaimTTL, DefaultMaxClaimTTL)
	cfg.MaxStreams = cmp.Or(cfg.MaxStreams, DefaultMaxStreams)
	cfg.StreamInterval = cmp.Or(cfg.StreamInterval, DefaultStreamInterval)
	cfg.StreamHeartbeat = cmp.Or(cfg.StreamHeartbeat, DefaultStreamHeartbeat)
	s := &Server{cfg: cfg, mux: http.NewServeMux(), uploadSlots: make(chan struct{}, cfg.MaxConcurrentUploads),
		authFailures: newFailureLimiter(cfg.AuthFailuresPerMinute, cfg.AuthFailuresPerMinute),
		streams:      newStreams(cfg.MaxStreams)}
	for _, t := range cfg.Tokens {
		if t.Value != "" {
			s.tokens = append(s.tokens, hashedToken{sum: sha256.Sum256([]byte(t.Value)), token: t})
		}
	}
	s.routes()
	s.handler = s.wrap(s.mux)
	return s
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.observe(w, r) }

func (s *Server) routes() {
	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	s.mux.HandleFunc("GET /readyz", s.readyz)
	if s.cfg.Metrics != nil {
		s.mux.Handle("GET /metrics", s.cfg.Metrics)
	}
	s.mux.Handle("POST /v1/manifests", s.auth(s.upload, RoleUpload))
	s.mux.Handle("GET /v1/manifests", s.auth(s.listManifests, RoleRead))
	s.mux.Handle("GET /v1/manifests/{id}", s.auth(s.manifestProgress, RoleRead))
	s.mux.Handle("GET /v1/manifests/{id}/report", s.auth(s.manifestReport, RoleRead, RoleSecrets))
	s.mux.Handle("POST /v1/manifests/{id}/cancel", s.auth(s.cancelManifest, RoleUpload))
	s.mux.Handle("GET /v1/manifests/{id}/events", s.auth(s.manifestEvents, RoleRead))
	s.mux.Handle("GET /v1/manifests/{id}/failures", s.auth(s.manifestFailures, RoleRead))
	s.mux.Handle("GET /v1/manifests/{id}/fixup", s.auth(s.manifestFixup, RoleRead))
	s.mux.Handle("GET /v1/status/events", s.auth(s.statusEvents, RoleRead))
	s.mux.Handle("GET /v1/me", s.auth(s.me, RoleRead, RoleUpload, RoleSecrets, RoleAdmin))
	s.mux.Handle("GET /v1/fleets/{fleet}/devices/{device}", s.auth(s.device, RoleRead))
	s.mux.Handle("GET /v1/webhooks", s.auth(s.webhooks, RoleRead))
	s.mux.Handle("GET /v1/rotation", s.auth(s.rotationStatus, RoleRead))
	s.mux.Handle("POST /v1/webhooks/events/{id}/redeliver", s.auth(s.redeliverWebhook, RoleUpload))
	s.mux.HandleFunc("GET /v1/openapi.yaml", serveOpenAPI)
	s.mux.Handle("GET /v1/status", s.auth(s.status, RoleRead))
	s.mux.Handle("GET /v1/export", s.auth(s.export, RoleRead, RoleSecrets))
	s.mux.Handle("POST /v1/retry", s.auth(s.retry, RoleUpload))
	s.mux.Handle("POST /v1/rotate", s.auth(s.rotate, RoleUpload))
	s.mux.Handle("POST /v1/reconcile", s.auth(s.reconcile, RoleUpload))
	s.mux.Handle("GET /v1/reconcile/runs", s.auth(s.reconcileRuns, RoleRead))
	s.mux.Handle("GET /v1/reconcile/runs/last", s.auth(s.lastReconcileRun, RoleRead))
	s.mux.Handle("GET /v1/work/{key}", s.auth(s.workProgress, RoleRead))
	s.mux.Handle("GET /v1/fleets/{fleet}/devices/{device}/credentials", s.auth(s.credentials, RoleSecrets))
	s.mux.Handle("POST /v1/fleets/{fleet}/devices/{device}/credentials/claim", s.auth(s.issueClaim, RoleSecrets))
	s.mux.Handle("POST /v1/fleets/{fleet}/claims", s.auth(s.issueClaims, RoleSecrets))
	s.mux.HandleFunc("POST /v1/claims/redeem", s.redeemClaim)
	// Who revealed which secrets is for those who may reveal them (issue 13), not
	// only for the administrator.
	s.mux.Handle("GET /v1/audit", s.auth(s.auditLog, RoleSecrets))
}

// readyz answers whether this process can serve, and nothing else: it is
// unauthenticated, and the database's error would name its user and database. The
// cause goes to the log.
func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), readyzTimeout)
	defer cancel()
	if err := s.cfg.Store.Ping(ctx); err != nil {
		s.cfg.Logger.Warn("not ready", "request_id", requestID(r), "err", err)
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte("not ready\n"))
		return
	}
	_, _ = w.Write([]byte("ok\n"))
}

// readyzTimeout bounds a readiness check: a probe must get an answer, not hang with
// the database.
const readyzTimeout = 5 * time.Second

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

// internalError logs the cause under the request's id and answers 500 (or 503 when
// the database is down) with that id only: the cause may name a key id, a database or
// a table, which is the operator's business, not the caller's.
func (s *Server) internalError(w http.ResponseWriter, r *http.Request, err error) {
	id := requestID(r)
	s.cfg.Logger.Error("request failed", "request_id", id, "method", r.Method, "path", r.URL.Path, "err", err)
	status := http.StatusInternalServerError
	msg := "internal error"
	if errors.Is(err, context.DeadlineExceeded) || isConnError(err) {
		status, msg = http.StatusServiceUnavailable, "temporarily unavailable"
	}
	writeError(w, status, msg+" (request id "+id+"; the server's log has the cause)", map[string]any{"requestId": id})
}

// abortStream ends a streamed answer that failed after it began: the status is sent
// already, so the connection is cut (no final chunk), and the client sees a broken
// answer rather than a complete-looking, short one. Before anything is sent it is an
// internalError.
func (s *Server) abortStream(w http.ResponseWriter, r *http.Request, err error) {
	if !started(w) {
		s.internalError(w, r, err)
		return
	}
	s.cfg.Logger.Error("answer aborted midway", "request_id", requestID(r), "method", r.Method, "path", r.URL.Path, "err", err)
	panic(http.ErrAbortHandler)
}

func isConnError(err error) bool {
	var pgConnErr interface{ SafeToRetry() bool }
	return errors.As(err, &pgConnErr)
}
