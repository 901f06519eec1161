// Package console is the operator's console in the browser, served by `vncfleet
// serve` at /: server-rendered pages (html/template) with a little plain JavaScript,
// every asset embedded, nothing loaded from another host.
//
// The console holds no rules of its own: every page is read, and every action taken,
// through the JSON API (internal/server), called in-process with the signed-in
// operator's bearer token; scripts reach the same API under /ui/api/v1/ (plus its
// event streams). So whatever the console does can be scripted against /v1. The
// answers are decoded into the types the API encodes them from (package store's).
//
// Signing in exchanges a bearer token for a session: an HttpOnly, SameSite=Strict
// cookie naming a session kept in PostgreSQL (Config.Sessions), which every `serve`
// process on the database shares and a restart keeps; the token never reaches a
// script, the browser's storage or the database (the session names the token it acts
// as). A CSRF token, derived from the session id, must come with every
// state-changing request. Sessions end on sign-out, for every process, and after
// Config.SessionTTL.
package console

import (
	"bytes"
	"cmp"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"strings"
	"time"
)

// Defaults of Config.
const (
	DefaultSessionTTL  = 8 * time.Hour
	DefaultMaxSessions = 10000
)

// API is the JSON API (internal/server's *Server): it serves requests, and serves a
// request as a configured token named by a session (AsToken; ok false when no such
// token is configured any more).
type API interface {
	http.Handler
	AsToken(r *http.Request, tokenName string) (_ *http.Request, ok bool)
}

// Config configures the console.
type Config struct {
	// API is the JSON API the console reads and acts through, and that serves every
	// path the console does not own (/v1, /healthz, ...). Required.
	API API
	// Sessions keeps the sessions (package store). Required.
	Sessions SessionStore
	// SessionTTL is how long a session lasts after sign-in; the operator then signs in
	// again. Defaults to DefaultSessionTTL: a working day.
	SessionTTL time.Duration
	// MaxSessions bounds the sessions kept; signing in beyond it ends the oldest.
	// Defaults to DefaultMaxSessions.
	MaxSessions int
	// Now is the clock. Defaults to time.Now.
	Now    func() time.Time
	Logger *slog.Logger
}

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Console is the console's http.Handler (and the API's, for the paths it does not own).
type Console struct {
	cfg      Config
	sessions *sessions
	pages    map[string]*template.Template
	mux      *http.ServeMux
}

// New builds the console.
func New(cfg Config) (*Console, error) {
	if cfg.API == nil {
		return nil, fmt.Errorf("console: Config.API is required")
	}
	if cfg.Sessions == nil {
		return nil, fmt.Errorf("console: Config.Sessions is required")
	}
	cfg.SessionTTL = cmp.Or(cfg.SessionTTL, DefaultSessionTTL)
	cfg.MaxSessions = cmp.Or(cfg.MaxSessions, DefaultMaxSessions)
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	c := &Console{cfg: cfg, sessions: &sessions{store: cfg.Sessions, ttl: cfg.SessionTTL, max: cfg.MaxSessions, now: cfg.Now}, mux: http.NewServeMux()}
	var err error
	if c.pages, err = parsePages(); err != nil {
		return nil, err
	}
	c.routes()
	return c, nil
}

func (c *Console) ServeHTTP(w http.ResponseWriter, r *http.Request) { c.mux.ServeHTTP(w, r) }

func (c *Console) routes() {
	static, _ := fs.Sub(staticFS, "static")
	c.mux.Handle("GET /static/", http.StripPrefix("/static/", assets(http.FileServerFS(static))))
	c.mux.HandleFunc("GET /signin", c.signinPage)
	c.mux.HandleFunc("POST /signin", c.signin)
	c.mux.HandleFunc("POST /signout", c.withForm(c.signout))
	c.mux.HandleFunc("GET /{$}", c.withSession(c.overview))
	c.mux.HandleFunc("GET /upload", c.withSession(c.uploadPage))
	c.mux.HandleFunc("GET /manifests/{id}", c.withSession(c.manifestPage))
	c.mux.HandleFunc("GET /fleets/{fleet}/devices/{device}", c.withSession(c.devicePage))
	c.mux.HandleFunc("GET /rotation", c.withSession(c.rotationPage))
	c.mux.HandleFunc("POST /rotation", c.withForm(c.rotateNow))
	c.mux.HandleFunc("GET /reconcile", c.withSession(c.reconcilePage))
	c.mux.HandleFunc("POST /reconcile", c.withForm(c.reconcileNow))
	c.mux.HandleFunc("GET /webhooks", c.withSession(c.webhooksPage))
	c.mux.HandleFunc("POST /webhooks/{id}/redeliver", c.withForm(c.redeliver))
	c.mux.HandleFunc("GET /ui/api/overview", c.overviewJSON)
	c.mux.HandleFunc("/ui/api/", c.proxy)
	// Everything else is the API's (and its 404s).
	c.mux.Handle("/", c.cfg.API)
}

// assets serves embedded files; they change only with the binary.
func assets(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		securityHeaders(w)
		w.Header().Set("Cache-Control", "public, max-age=3600")
		h.ServeHTTP(w, r)
	})
}

// securityHeaders: nothing from another host, no framing, no sniffing, no referrer to
// other sites.
func securityHeaders(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "+
		"connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "same-origin") // "no-referrer" would make form posts say Origin: null
	h.Set("X-Frame-Options", "DENY")
}

// apiError is an answer of the API other than 2xx.
type apiError struct {
	Status  int
	Message string
	Body    []byte
}

func (e *apiError) Error() string { return fmt.Sprintf("HTTP %d: %s", e.Status, e.Message) }

// answerOf is how a page passes on a failed call to the API: the API's own status
// and message, or 502 with what went wrong on the way.
func answerOf(err error) (status int, message string) {
	var apiErr *apiError
	if errors.As(err, &apiErr) {
		return apiErr.Status, apiErr.Message
	}
	return http.StatusBadGateway, "The server could not answer: " + err.Error()
}

// errTokenGone: the session's token is no longer configured.
var errTokenGone = &apiError{Status: http.StatusUnauthorized, Message: "the token of this session is no longer configured: sign in again"}

// call makes one API request in-process as the session's token, and decodes a JSON
// answer into v (when v is not nil).
func (c *Console) call(r *http.Request, s *session, method, path string, body io.Reader, v any) error {
	req, err := http.NewRequestWithContext(r.Context(), method, path, body)
	if err != nil {
		return err
	}
	req.RemoteAddr = r.RemoteAddr
	req.Header.Set("User-Agent", r.UserAgent())
	if req, err = c.as(req, s); err != nil {
		return err
	}
	return c.serve(req, method, path, v)
}

// as is req acting as the session's token: a session names its token, the API
// authenticates the request as that token.
func (c *Console) as(req *http.Request, s *session) (*http.Request, error) {
	req, ok := c.cfg.API.AsToken(req, s.token)
	if !ok {
		return nil, errTokenGone
	}
	return req, nil
}

// serve has the API answer req and decodes a JSON answer into v (when not nil).
func (c *Console) serve(req *http.Request, method, path string, v any) error {
	rec := &recorder{header: http.Header{}, status: http.StatusOK}
	c.cfg.API.ServeHTTP(rec, req)
	if rec.status < 200 || rec.status > 299 {
		var e struct {
			Error string `json:"error"`
		}
		_ = json.Unmarshal(rec.body.Bytes(), &e)
		return &apiError{Status: rec.status, Message: cmp.Or(e.Error, http.StatusText(rec.status)), Body: rec.body.Bytes()}
	}
	if v == nil {
		return nil
	}
	if err := json.Unmarshal(rec.body.Bytes(), v); err != nil {
		return fmt.Errorf("%s %s: decoding the answer: %w", method, path, err)
	}
	return nil
}

// recorder holds an in-process API answer.
type recorder struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (r *recorder) Header() http.Header         { return r.header }
func (r *recorder) WriteHeader(status int)      { r.status = status }
func (r *recorder) Write(b []byte) (int, error) { return r.body.Write(b) }

// proxy serves /ui/api/v1/... as the API's /v1/... for the page's scripts, with the
// session's token in place of the cookie. A state-changing request must carry the
// session's CSRF token in X-CSRF-Token.
func (c *Console) proxy(w http.ResponseWriter, r *http.Request) {
	s, ok := c.apiSession(w, r)
	if !ok {
		return
	}
	if !safeMethod(r.Method) && !s.csrfOK(r.Header.Get("X-CSRF-Token")) {
		writeJSONError(w, http.StatusForbidden, "missing or wrong CSRF token")
		return
	}
	path := strings.TrimPrefix(r.URL.Path, "/ui/api")
	if !strings.HasPrefix(path, "/v1/") {
		writeJSONError(w, http.StatusNotFound, "no such API path")
		return
	}
	req := r.Clone(r.Context())
	req.URL.Path, req.URL.RawPath = path, ""
	req.RequestURI = ""
	req.Header.Del("Cookie")
	req.Header.Del("X-CSRF-Token")
	req.Header.Del("Authorization")
	req, err := c.as(req, s)
	if err != nil {
		writeJSONError(w, http.StatusUnauthorized, errTokenGone.Message)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	c.cfg.API.ServeHTTP(w, req)
}

// apiSession is the session of a script's request under /ui/api; without one (ok
// false) it was answered as the API answers: JSON, 401 to sign in again.
func (c *Console) apiSession(w http.ResponseWriter, r *http.Request) (_ *session, ok bool) {
	s, err := c.sessions.get(r)
	if err != nil {
		c.cfg.Logger.Error("console session lookup failed", "err", err)
		writeJSONError(w, http.StatusServiceUnavailable, "sessions cannot be read right now; try again shortly")
		return nil, false
	}
	if s == nil {
		writeJSONError(w, http.StatusUnauthorized, "not signed in, or the session expired")
		return nil, false
	}
	return s, true
}

func safeMethod(m string) bool { return m == http.MethodGet || m == http.MethodHead }

func writeJSONError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": msg})
}
