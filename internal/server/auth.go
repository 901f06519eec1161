package server

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Roles a token can hold. What each may do is docs/http-api.md's table; the routes
// in server.go name the role each needs.
const (
	RoleUpload  = "upload"  // send manifests, retry, rotate one fleet, reconcile dry runs
	RoleRead    = "read"    // status, manifests, reports and export, without secrets
	RoleSecrets = "secrets" // passwords and console URLs (export, report, credentials, claims), audited, and the audit log
	RoleAdmin   = "admin"   // everything, including what spans every fleet
)

// Token is a bearer token and what it may do. The token itself is only compared, never
// logged: requests are attributed to Name.
type Token struct {
	Name  string
	Value string
	Roles []string
	// Fleets limits the token to these fleets; empty: every fleet. A limited token
	// cannot use the routes that span every fleet (reconcile, rotate without a fleet,
	// the audit log).
	Fleets []string
}

// has reports whether the token holds role; admin holds them all.
func (t Token) has(role string) bool {
	return slices.Contains(t.Roles, role) || slices.Contains(t.Roles, RoleAdmin)
}

// scoped reports whether the token is limited to some fleets.
func (t Token) scoped() bool { return len(t.Fleets) > 0 }

// mayUse reports whether the token may act on fleet.
func (t Token) mayUse(fleet string) bool { return !t.scoped() || slices.Contains(t.Fleets, fleet) }

// hashedToken keeps the SHA-256 of each token, so comparisons take the same time
// whatever the length or prefix of a guess.
type hashedToken struct {
	sum   [32]byte
	token Token
}

type ctxKey struct{}

// actingKey marks a request that this process authenticated otherwise (AsToken).
type actingKey struct{}

// AsToken is r acting as the configured token named name: the API serves it as if it
// bore that token, with the token's current roles and fleets. It is for a caller in
// this process that authenticated the operator itself (the console's session, which
// keeps the token's name, never the token); a context value cannot come from the
// network. ok is false when no token, or more than one, has that name, as when the
// token was removed from the configuration.
func (s *Server) AsToken(r *http.Request, name string) (_ *http.Request, ok bool) {
	var found *Token
	for i := range s.tokens {
		if s.tokens[i].token.Name == name {
			if found != nil {
				return nil, false
			}
			found = &s.tokens[i].token
		}
	}
	if found == nil {
		return nil, false
	}
	return r.WithContext(context.WithValue(r.Context(), actingKey{}, *found)), true
}

// caller is the token that authenticated the request.
func caller(r *http.Request) Token {
	t, _ := r.Context().Value(ctxKey{}).(Token)
	return t
}

// auth admits requests bearing a known token that holds one of roles. Failed
// attempts are logged (the address and the reason, never the token) and counted per
// client address: an address over its budget is answered 429 without its token being
// looked at, so tokens cannot be guessed at speed.
func (s *Server) auth(next http.HandlerFunc, roles ...string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if t, ok := r.Context().Value(actingKey{}).(Token); ok {
			s.admit(w, r, next, &t, roles)
			return
		}
		remote := s.clientAddr(r)
		if !s.authFailures.allowed(remote) {
			w.Header().Set("Retry-After", "60")
			writeError(w, http.StatusTooManyRequests, "too many failed authentications from this address; try again later", nil)
			return
		}
		value, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || strings.TrimSpace(value) == "" {
			s.authFailed(r, remote, "missing bearer token")
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
			s.authFailed(r, remote, "unknown bearer token")
			w.Header().Set("WWW-Authenticate", `Bearer realm="vncfleet", error="invalid_token"`)
			writeError(w, http.StatusUnauthorized, "unknown bearer token", nil)
			return
		}
		s.admit(w, r, next, found, roles)
	})
}

// admit serves next to the authenticated token found if it holds one of roles.
func (s *Server) admit(w http.ResponseWriter, r *http.Request, next http.HandlerFunc, found *Token, roles []string) {
	if !slices.ContainsFunc(roles, found.has) {
		writeError(w, http.StatusForbidden, fmt.Sprintf("token %s lacks the %s role", found.Name, strings.Join(roles, " or ")), nil)
		return
	}
	if info := infoOf(r); info != nil {
		info.token = found.Name
	}
	next(w, r.WithContext(context.WithValue(r.Context(), ctxKey{}, *found)))
}

func (s *Server) authFailed(r *http.Request, remote, reason string) {
	s.authFailures.failed(remote)
	s.cfg.Logger.Warn("authentication failed", "remote", remote, "method", r.Method, "path", r.URL.Path, "reason", reason)
}

// requireRole answers 403 and returns false unless the caller holds role: for the
// parts of a route that need more than the route itself (secrets=true, every fleet).
func requireRole(w http.ResponseWriter, r *http.Request, role, what string) bool {
	who := caller(r)
	if who.has(role) {
		return true
	}
	writeError(w, http.StatusForbidden, fmt.Sprintf("token %s lacks the %s role, which %s needs", who.Name, role, what), nil)
	return false
}

// requireEveryFleet answers 403 and returns false for a fleet-limited token: what
// spans every fleet is beyond it.
func requireEveryFleet(w http.ResponseWriter, r *http.Request, what string) bool {
	who := caller(r)
	if !who.scoped() {
		return true
	}
	writeError(w, http.StatusForbidden, fmt.Sprintf("token %s is limited to fleets %s; %s spans every fleet", who.Name, strings.Join(who.Fleets, ", "), what), nil)
	return false
}

// fleetScope holds ?fleet= to the token's scope (the first half of fleetParam): a
// fleet-limited token must name one of its fleets, except that a token limited to
// one fleet gets that fleet when it names none. ok is false when the request was
// answered (403).
func fleetScope(w http.ResponseWriter, r *http.Request) (fleet string, ok bool) {
	return checkFleet(w, r, r.URL.Query().Get("fleet"))
}

func checkFleet(w http.ResponseWriter, r *http.Request, fleet string) (string, bool) {
	who := caller(r)
	switch {
	case !who.scoped():
		return fleet, true
	case fleet == "" && len(who.Fleets) == 1:
		return who.Fleets[0], true
	case fleet == "":
		writeError(w, http.StatusForbidden, fmt.Sprintf("token %s is limited to fleets %s: name one with ?fleet=", who.Name, strings.Join(who.Fleets, ", ")), nil)
		return "", false
	case !who.mayUse(fleet):
		writeError(w, http.StatusForbidden, fmt.Sprintf("token %s may not use fleet %q", who.Name, fleet), nil)
		return "", false
	}
	return fleet, true
}

// clientAddr is the address of the client: the peer of the connection, or, when the
// peer is a trusted proxy, the nearest address in X-Forwarded-For that is not one.
// X-Forwarded-For from anyone else is ignored: a client could write anything there.
func (s *Server) clientAddr(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	peer, err := netip.ParseAddr(host)
	if err != nil || !s.trustedProxy(peer) {
		return host
	}
	hops := strings.Split(strings.Join(r.Header.Values("X-Forwarded-For"), ","), ",")
	for i := len(hops) - 1; i >= 0; i-- {
		hop, err := netip.ParseAddr(strings.TrimSpace(hops[i]))
		if err != nil {
			break // a malformed hop: nothing before it can be trusted
		}
		if !s.trustedProxy(hop) {
			return hop.Unmap().String()
		}
		peer = hop
	}
	return peer.Unmap().String()
}

func (s *Server) trustedProxy(a netip.Addr) bool {
	a = a.Unmap()
	for _, p := range s.cfg.TrustedProxies {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// failureLimiter counts failed authentications per client address: each address may
// fail burst times at once, then once per interval. Addresses unseen for ten
// intervals are forgotten, so the map does not grow without bound.
type failureLimiter struct {
	mu       sync.Mutex
	every    rate.Limit
	burst    int
	limiters map[string]*failureEntry
	swept    time.Time
}

type failureEntry struct {
	lim  *rate.Limiter
	seen time.Time
}

func newFailureLimiter(perMinute, burst int) *failureLimiter {
	return &failureLimiter{every: rate.Limit(float64(perMinute) / 60), burst: burst, limiters: map[string]*failureEntry{}}
}

// allowed reports whether addr may try to authenticate now.
func (l *failureLimiter) allowed(addr string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	e, ok := l.limiters[addr]
	return !ok || e.lim.Tokens() >= 1
}

// failed spends one of addr's attempts.
func (l *failureLimiter) failed(addr string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	e, ok := l.limiters[addr]
	if !ok {
		e = &failureEntry{lim: rate.NewLimiter(l.every, l.burst)}
		l.limiters[addr] = e
	}
	e.seen = now
	e.lim.AllowN(now, 1)
	forget := 10 * time.Duration(float64(time.Second)/float64(l.every))
	if now.Sub(l.swept) > forget {
		l.swept = now
		for a, e := range l.limiters {
			if now.Sub(e.seen) > forget {
				delete(l.limiters, a)
			}
		}
	}
}
