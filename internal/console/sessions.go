package console

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"net/http"
	"slices"
	"sync"
	"time"
)

// sessionCookie names the cookie that holds a session id.
const sessionCookie = "vncfleet_session"

// session is a signed-in operator. token is the bearer token it acts with; it never
// leaves the server.
type session struct {
	id      string
	token   string
	name    string
	roles   []string
	csrf    string
	expires time.Time
}

// Name, Roles and CSRF are what pages show of a session.
func (s *session) Name() string    { return s.name }
func (s *session) Roles() []string { return s.roles }
func (s *session) CSRF() string    { return s.csrf }

func (s *session) has(role string) bool { return slices.Contains(s.roles, role) }

func (s *session) csrfOK(got string) bool {
	return got != "" && subtle.ConstantTimeCompare([]byte(got), []byte(s.csrf)) == 1
}

// sessions are kept in memory: a process restart, or a second `serve` behind a load
// balancer without affinity, asks the operator to sign in again.
type sessions struct {
	ttl time.Duration
	max int
	now func() time.Time
	mu  sync.Mutex
	by  map[string]*session
}

func newSessions(ttl time.Duration, max int, now func() time.Time) *sessions {
	return &sessions{ttl: ttl, max: max, now: now, by: map[string]*session{}}
}

func randomID() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// start opens a session and sets its cookie.
func (ss *sessions) start(w http.ResponseWriter, r *http.Request, token, name string, roles []string) *session {
	now := ss.now()
	s := &session{id: randomID(), token: token, name: name, roles: roles, csrf: randomID(), expires: now.Add(ss.ttl)}
	ss.mu.Lock()
	for id, old := range ss.by {
		if !now.Before(old.expires) {
			delete(ss.by, id)
		}
	}
	for len(ss.by) >= ss.max {
		var oldest *session
		for _, o := range ss.by {
			if oldest == nil || o.expires.Before(oldest.expires) {
				oldest = o
			}
		}
		delete(ss.by, oldest.id)
	}
	ss.by[s.id] = s
	ss.mu.Unlock()
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: s.id, Path: "/", HttpOnly: true, Secure: r.TLS != nil,
		SameSite: http.SameSiteStrictMode, Expires: s.expires})
	return s
}

// get is the request's live session, or nil.
func (ss *sessions) get(r *http.Request) *session {
	c, err := r.Cookie(sessionCookie)
	if err != nil {
		return nil
	}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	s := ss.by[c.Value]
	if s == nil {
		return nil
	}
	if !ss.now().Before(s.expires) {
		delete(ss.by, s.id)
		return nil
	}
	return s
}

// end closes the request's session and clears its cookie.
func (ss *sessions) end(w http.ResponseWriter, r *http.Request) {
	if c, err := r.Cookie(sessionCookie); err == nil {
		ss.mu.Lock()
		delete(ss.by, c.Value)
		ss.mu.Unlock()
	}
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: "", Path: "/", HttpOnly: true, Secure: r.TLS != nil,
		SameSite: http.SameSiteStrictMode, MaxAge: -1})
}
