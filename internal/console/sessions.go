package console

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"net/http"
	"slices"
	"time"

	"github.com/vncfleet/vncfleet/internal/store"
)

// sessionCookie names the cookie that holds a session id.
const sessionCookie = "vncfleet_session"

// SessionStore keeps the console's sessions where every `serve` process on the
// database finds them (package store's PostgreSQL tables), so that an operator stays
// signed in across processes and restarts. It sees hashes only.
type SessionStore interface {
	CreateConsoleSession(ctx context.Context, sess store.ConsoleSession, max int) (pruned int, err error)
	// ConsoleSession answers store.ErrNotFound for an unknown or expired session.
	ConsoleSession(ctx context.Context, idHash []byte, now time.Time) (*store.ConsoleSession, error)
	DeleteConsoleSession(ctx context.Context, idHash []byte) error
}

// session is a signed-in operator: the configured token it acts as (by name: the
// token itself is never kept), the token's roles at sign-in (for what the pages
// show; the API checks the token's current ones), and the CSRF token the pages carry.
type session struct {
	token   string // the token's name
	roles   []string
	csrf    string
	expires time.Time
}

// Name, Roles and CSRF are what pages show of a session.
func (s *session) Name() string    { return s.token }
func (s *session) Roles() []string { return s.roles }
func (s *session) CSRF() string    { return s.csrf }

func (s *session) has(role string) bool { return slices.Contains(s.roles, role) }

func (s *session) csrfOK(got string) bool {
	return got != "" && subtle.ConstantTimeCompare([]byte(got), []byte(s.csrf)) == 1
}

// sessions are kept in the SessionStore: a session id is 32 random bytes, stored as
// its SHA-256; its CSRF token is derived from it (HMAC-SHA256 keyed with the id), so
// that whichever process serves a page can print it, and only its SHA-256 is stored
// too: a reader of the database can neither take over a session nor forge its form
// posts.
type sessions struct {
	store SessionStore
	ttl   time.Duration
	max   int
	now   func() time.Time
}

func randomID() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

func hashOf(s string) []byte {
	sum := sha256.Sum256([]byte(s))
	return sum[:]
}

// csrfFor is the CSRF token of the session whose id is id.
func csrfFor(id string) string {
	mac := hmac.New(sha256.New, []byte(id))
	mac.Write([]byte("vncfleet console csrf"))
	return base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
}

// start opens a session acting as the token named token and sets its cookie.
func (ss *sessions) start(w http.ResponseWriter, r *http.Request, token string, roles []string) (*session, error) {
	now := ss.now()
	id := randomID()
	s := &session{token: token, roles: append([]string{}, roles...), csrf: csrfFor(id), expires: now.Add(ss.ttl)}
	if _, err := ss.store.CreateConsoleSession(r.Context(), store.ConsoleSession{IDHash: hashOf(id), CSRFHash: hashOf(s.csrf),
		TokenName: token, Roles: s.roles, CreatedAt: now, ExpiresAt: s.expires}, ss.max); err != nil {
		return nil, err
	}
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: id, Path: "/", HttpOnly: true, Secure: r.TLS != nil,
		SameSite: http.SameSiteStrictMode, Expires: s.expires})
	return s, nil
}

// get is the request's live session; nil (and no error) when there is none.
func (ss *sessions) get(r *http.Request) (*session, error) {
	c, err := r.Cookie(sessionCookie)
	if err != nil || c.Value == "" {
		return nil, nil
	}
	row, err := ss.store.ConsoleSession(r.Context(), hashOf(c.Value), ss.now())
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	s := &session{token: row.TokenName, roles: row.Roles, csrf: csrfFor(c.Value), expires: row.ExpiresAt}
	if subtle.ConstantTimeCompare(hashOf(s.csrf), row.CSRFHash) != 1 {
		return nil, nil // not a session this scheme made
	}
	return s, nil
}

// end closes the request's session, for every process, and clears its cookie.
func (ss *sessions) end(w http.ResponseWriter, r *http.Request) error {
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: "", Path: "/", HttpOnly: true, Secure: r.TLS != nil,
		SameSite: http.SameSiteStrictMode, MaxAge: -1})
	if c, err := r.Cookie(sessionCookie); err == nil && c.Value != "" {
		return ss.store.DeleteConsoleSession(r.Context(), hashOf(c.Value))
	}
	return nil
}
