// Package sim is vncfleet's VNC Cloud API 1.1 simulator: an in-memory implementation
// of the static-address resource that behaves as RealVNC's prose reference says, with
// every status and errorCode of each operation's table. Users develop their pipelines
// against it (`vncfleet sim`) and every test of vncfleet uses it as the test double of
// VNC Cloud. It adds fault knobs (503s, lost and dropped create answers, cut-off reset
// answers, a rate cap, latency) and
// inspection endpoints outside the API prefix: GET /sim/state, POST /sim/faults,
// GET /sim/requests (the arrival of each request, when Config.RequestLog is set), and
// the drift helpers under /sim/accounts/.
//
// Where the reference is silent, the simulator does what a strict server would, and
// these decisions are part of its contract:
//
//   - A well-formed API key is 1..128 characters of [A-Za-z0-9_-]. Any other key is 403.
//     No Authorization header, an empty key, an unknown key or a wrong secret is 401.
//   - Faults come first, in this order: the request is counted (global and, when its
//     credentials are valid, its account's sliding one-second window), the latency
//     waits, the account's rate cap answers 503 with Retry-After: 1, and the fail rate
//     answers 503. Then authentication (401, 403), then the route (404 for an unknown
//     path, 405 with Allow for a method the path does not take), then the operation.
//     A request refused by a fault has no effect but still counts, towards the rate
//     cap too: a client that keeps hammering keeps being refused.
//   - The faults after the effect come last: a create that passed every check is
//     committed, then LostRate answers 503 or else DropRate closes the connection; a
//     reset that passed every check is committed, then GarbleRate cuts its answer
//     off. Each injected fault is counted in State.Injected.
//   - Per operation, checks run in this order, the first failure answers:
//     create: 1001, 1002, JSON syntax, body rules (1003..1009).
//     list: 1002, limit, cursor.
//     ready, get: address shape (1007), existence (404), 1002.
//     update (PUT): 1007, 404, 1001, JSON syntax, body cloudAddress equal to the
//     URI's (409; a missing one differs too), body rules, If-Match (412).
//     reset (POST on an address): 1007, 404, 1002, If-Match (412).
//     delete: 1007, 404, If-Match (412).
//     The URI is checked before the headers on every address operation so that the
//     order is the same for all of them, PUT's included.
//   - 1001 is checked on create and PUT only and 1002 only on create, list, ready, get
//     and reset: only the operations whose table lists the code. Content-Type must be
//     application/json (parameters such as charset allowed). Accept admits JSON when
//     it is absent or lists application/json, application/* or */* with a q-value
//     above zero.
//   - The reference gives an errorCode to "particular bad requests" only, so these are
//     400 with an errorMessage and no errorCode: a body that is not JSON or not of the
//     documented shape (allowedActions as a bare string, for one), a body over 1 MiB, a
//     list limit outside 1..99 (0, 100, abc, empty) and a malformed page cursor.
//     Error bodies with a code carry the reference's description as errorMessage.
//   - A cloud address in an access control list that is not well-formed is 1007, as
//     vnccloud.ValidateRaw says; all body rules are vnccloud.ValidateRaw's.
//   - An address is a version number that starts at 1 and is bumped by every PUT,
//     reset and forced change; the ETag is that number quoted ("3"). If-Match absent
//     (or blank) is unconditional, * matches, a comma-separated list matches when any
//     of its entity tags, W/ prefix ignored, equals the current one; anything else is
//     412.
//   - Readiness is "pending" until the address's readiness delay has passed since the
//     last create, PUT, reset or forced change, then "none". The delay is
//     Config.ReadyDelay, or, with Config.ReadyJitter F, drawn anew at each of those
//     changes uniformly in ReadyDelay × [1−F, 1+F] (from dice of their own, seeded by
//     Config.Seed, so the jitter never shifts the fault dice).
//   - List pages are keyset pages in creation order. The Link of a page names the next
//     one by an opaque cursor after the last address shown, with the same limit, and
//     is present exactly when addresses remain after the page. A page with no
//     addresses (an empty account, a cursor past the end) is 204 with no body. So a
//     page already viewed is unaffected by later changes and pages yet to be viewed see
//     them, as the reference says.
//   - An address of another account is 404, exactly like one that never existed.
//   - Passwords are 20 base62 characters, addresses four dot-separated parts of 19
//     base62 characters, both from crypto/rand; neither GET nor list returns a password.
package sim

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"net/http"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/vncfleet/vncfleet/vnccloud"
)

// Account is an API key and its secret.
type Account struct{ Key, Secret string }

// Config configures a simulator. The zero value of every knob is "no fault", so a
// test that sets only Accounts gets a fast, faithful server.
type Config struct {
	// Accounts may call the API; each sees only its own addresses. At least one is
	// required, keys must be well-formed (1..128 of [A-Za-z0-9_-]) and distinct,
	// secrets non-empty.
	Accounts []Account
	// ReadyDelay is how long /ready answers "pending" after every create, change and
	// reset. Zero (the default) makes an address ready at once, which keeps tests
	// fast; `vncfleet sim` defaults to 2s so pipelines meet the real API's delay.
	ReadyDelay time.Duration
	// ReadyJitter (0..1) spreads the readiness delay: each create, change and reset
	// draws its address's delay uniformly in ReadyDelay × [1−ReadyJitter,
	// 1+ReadyJitter], as a real service's delay varies. Default 0: every address waits
	// ReadyDelay exactly.
	ReadyJitter float64
	// FailRate is the probability (0..1) that any API request is answered 503 without
	// doing anything. Default 0.
	FailRate float64
	// LostRate is the probability (0..1) that a create is committed but answered 503,
	// as a gateway in front of a busy server may answer. Default 0. Clients must treat
	// a 503 to a create as an unknown outcome: the address may exist.
	LostRate float64
	// DropRate is the probability (0..1) that a create, not lost by LostRate, is
	// committed and then its connection closed without an answer: the client sees a
	// connection reset or EOF after sending the request. Default 0. Over HTTP/2, where
	// a connection cannot be taken over, the create is answered 503 instead and counted
	// as lost.
	DropRate float64
	// GarbleRate is the probability (0..1) that a password reset is committed and then
	// answered 200 with a cut-off body: half of the JSON, with a Content-Length that
	// matches it, so the answer arrives whole but does not decode and never holds the
	// new password. Default 0. Clients must treat it as an unknown outcome: the cloud
	// holds a password they do not know.
	GarbleRate float64
	// Rate caps each account's API requests per sliding second; over it the answer is
	// 503 with Retry-After: 1. Default 0, no cap.
	Rate int
	// Latency is waited before answering each API request. Default 0.
	Latency time.Duration
	// RequestLog is how many of the latest API requests GET /sim/requests keeps, with
	// their arrival times and operations (16 bytes each). Default 0: none, so a
	// simulator that runs for weeks does not grow.
	RequestLog int
	// Seed makes the fault dice repeatable for a given order of requests. Default 0
	// seeds from crypto/rand.
	Seed int64
	// Zenlayer, when non-nil, is mounted at /api/v2/zec (see package zenlayersim), so
	// that one process simulates both APIs.
	Zenlayer http.Handler
	// Logger receives faults at debug level. Never secrets or passwords. Default: discard.
	Logger *slog.Logger
	// Now is the clock for readiness, timestamps and the request windows. Default
	// time.Now; tests of the windows set a fake one.
	Now func() time.Time
}

// Faults are the knobs that can change while the simulator runs (SetFaults, POST
// /sim/faults). Their meaning and defaults are Config's fields of the same names.
type Faults struct {
	FailRate   float64       `json:"failRate"`
	LostRate   float64       `json:"lostRate"`
	DropRate   float64       `json:"dropRate"`
	GarbleRate float64       `json:"garbleRate"`
	Rate       int           `json:"rate"`
	Latency    time.Duration `json:"latency"` // in JSON a Go duration string such as "50ms" (MarshalJSON)
}

// faults are the knobs cfg starts with.
func (cfg Config) faults() Faults {
	return Faults{FailRate: cfg.FailRate, LostRate: cfg.LostRate, DropRate: cfg.DropRate, GarbleRate: cfg.GarbleRate,
		Rate: cfg.Rate, Latency: cfg.Latency}
}

// probabilities names the knobs that are probabilities, for the checks that apply to
// all of them.
func (f *Faults) probabilities() []struct {
	name string
	p    *float64
} {
	return []struct {
		name string
		p    *float64
	}{{"FailRate", &f.FailRate}, {"LostRate", &f.LostRate}, {"DropRate", &f.DropRate}, {"GarbleRate", &f.GarbleRate}}
}

// Injected counts the faults the simulator has injected since it started, so that
// tests can say how many answers were refused, lost, dropped or cut off.
type Injected struct {
	Failed     int64 `json:"failed"`     // answered 503 by FailRate, without effect
	RateCapped int64 `json:"rateCapped"` // answered 503 with Retry-After over Rate, without effect
	Lost       int64 `json:"lost"`       // creates committed, answered 503 (LostRate)
	Dropped    int64 `json:"dropped"`    // creates committed, connection closed without an answer (DropRate)
	Garbled    int64 `json:"garbled"`    // resets committed, answered 200 with a cut-off body (GarbleRate)
}

// ErrUnknownAccount is an API key the simulator was not configured with.
var ErrUnknownAccount = errors.New("sim: unknown account")

// ErrNoSuchAddress is an address the account does not have.
var ErrNoSuchAddress = errors.New("sim: no such address for this account")

// Server is a simulator; serve it with Handler. All methods are safe for concurrent use.
type Server struct {
	cfg   Config
	epoch time.Time // origin of the window timestamps
	mux   *http.ServeMux

	mu     sync.Mutex
	faults Faults
	dice   *mrand.Rand
	// readyDice draws the jittered readiness delays, apart from the fault dice so
	// that turning the jitter on leaves a seeded run's faults as they were.
	readyDice *mrand.Rand
	accounts  map[string]*account
	byAddr    map[string]*address
	seq       int64 // last sequence number given to an address, all accounts
	global    window
	log       requestLog
	// lastStamp is the latest window timestamp given (stamp).
	lastStamp int64
	requests  int64
	injected  Injected
}

type account struct {
	key      string
	secret   []byte
	order    []*address // creation order (ascending seq); deleted entries stay until compacted
	deleted  int        // deleted entries still in order
	creates  int64
	requests int64
	counts   map[string]int64
	window   window
}

type address struct {
	owner     *account
	addr      string
	password  string
	version   int
	spec      vnccloud.Spec
	seq       int64
	createdAt time.Time
	changedAt time.Time
	readyAt   time.Time // changedAt plus the delay drawn for that change
	deleted   bool
}

// New checks cfg and builds a simulator.
func New(cfg Config) (*Server, error) {
	if len(cfg.Accounts) == 0 {
		return nil, errors.New("sim: at least one account is needed")
	}
	if err := checkFaults(cfg.faults()); err != nil {
		return nil, err
	}
	if cfg.ReadyDelay < 0 {
		return nil, errors.New("sim: ReadyDelay must not be negative")
	}
	if cfg.RequestLog < 0 {
		return nil, errors.New("sim: RequestLog must not be negative")
	}
	if !(cfg.ReadyJitter >= 0 && cfg.ReadyJitter <= 1) { // NaN included
		return nil, errors.New("sim: ReadyJitter must be within 0..1")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	seed := uint64(cfg.Seed)
	if seed == 0 {
		var b [8]byte
		_, _ = rand.Read(b[:])
		seed = binary.LittleEndian.Uint64(b[:])
	}
	s := &Server{
		cfg:       cfg,
		epoch:     cfg.Now(),
		faults:    cfg.faults(),
		dice:      mrand.New(mrand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		readyDice: mrand.New(mrand.NewPCG(seed^0x5265616479446c79, seed)), // "ReadyDly"
		accounts:  map[string]*account{},
		byAddr:    map[string]*address{},
		log:       requestLog{cap: cfg.RequestLog},
	}
	for _, a := range cfg.Accounts {
		if !wellFormedKey(a.Key) {
			// The key is not a secret, but a malformed one may be a secret pasted in
			// the wrong place: do not echo it.
			return nil, errors.New("sim: an API key is not well-formed (1..128 of A-Z a-z 0-9 _ -)")
		}
		if a.Secret == "" {
			return nil, fmt.Errorf("sim: API key %s has no secret", a.Key)
		}
		if _, dup := s.accounts[a.Key]; dup {
			return nil, fmt.Errorf("sim: API key %s is given twice", a.Key)
		}
		s.accounts[a.Key] = &account{key: a.Key, secret: []byte(a.Secret), counts: map[string]int64{}}
	}
	s.routes()
	return s, nil
}

// Handler serves the API under /cloud/1.1, Zenlayer under /api/v2/zec when
// configured, the inspection endpoints under /sim/ and GET /healthz.
func (s *Server) Handler() http.Handler { return s.mux }

// SetFaults changes the fault knobs for the requests that arrive from now on. Values
// out of range are clamped: rates to 0..1, Rate and Latency to at least 0.
func (s *Server) SetFaults(f Faults) {
	for _, k := range f.probabilities() {
		*k.p = min(max(*k.p, 0), 1)
	}
	f.Rate = max(f.Rate, 0)
	f.Latency = max(f.Latency, 0)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = f
}

// Faults returns the current fault knobs.
func (s *Server) Faults() Faults {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.faults
}

func checkFaults(f Faults) error {
	for _, k := range f.probabilities() {
		if !(*k.p >= 0 && *k.p <= 1) { // NaN included
			return fmt.Errorf("sim: %s must be within 0..1", k.name)
		}
	}
	switch {
	case f.Rate < 0:
		return errors.New("sim: Rate must not be negative")
	case f.Latency < 0:
		return errors.New("sim: Latency must not be negative")
	}
	return nil
}

// window counts requests in the last second and remembers the most it ever held. It is
// a queue of arrival times (nanoseconds since the server's epoch) with a moving head:
// each time is appended once and passed once, and the backing array is compacted
// only when the passed part is the larger half, so add is O(1) amortised even at
// thousands of requests per second.
type window struct {
	times []int64
	head  int
	peak  int
}

// add records a request at t (never earlier than the previous one) and returns how
// many requests the last second holds, this one included.
func (w *window) add(t int64) int {
	cut := t - int64(time.Second)
	for w.head < len(w.times) && w.times[w.head] <= cut {
		w.head++
	}
	if w.head >= 64 && w.head*2 >= len(w.times) {
		n := copy(w.times, w.times[w.head:])
		w.times = w.times[:n]
		w.head = 0
	}
	w.times = append(w.times, t)
	n := len(w.times) - w.head
	w.peak = max(w.peak, n)
	return n
}

// stamp is a request's arrival as a window timestamp. The clock is read when the
// handler starts, before s.mu: a request that waited for the lock (held by a busy
// operation, or by a goroutine the machine preempted) is counted when it arrived, not
// in a bunch with the others that waited (issue 12). Callers hold s.mu; timestamps
// reach the windows in order because a stamp is never earlier than the last one.
func (s *Server) stamp(arrived time.Time) int64 {
	t := max(int64(arrived.Sub(s.epoch)), 0, s.lastStamp)
	s.lastStamp = t
	return t
}

const base62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// randomBase62 returns n uniformly random base62 characters from crypto/rand.
// Bytes of 248 and above are rejected so that no character is likelier than another.
func randomBase62(n int) string {
	out := make([]byte, 0, n)
	buf := make([]byte, n+n/4+4)
	for len(out) < n {
		_, _ = rand.Read(buf)
		for _, b := range buf {
			if b < 248 && len(out) < n {
				out = append(out, base62[b%62])
			}
		}
	}
	return string(out)
}

func newPassword() string { return randomBase62(20) }

func newAddressString() string {
	r := randomBase62(4 * 19)
	return r[0:19] + "." + r[19:38] + "." + r[38:57] + "." + r[57:76]
}

// wellFormedKey is the simulator's definition of a well-formed API key (the
// reference does not give one): 1..128 characters of [A-Za-z0-9_-].
func wellFormedKey(k string) bool {
	if len(k) == 0 || len(k) > 128 {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// authenticate returns the account whose key and secret these are, or nil. Callers
// hold s.mu. The secret is compared in constant time, as a real server would.
func (s *Server) authenticate(key, secret string) *account {
	acct, ok := s.accounts[key]
	if !ok || subtle.ConstantTimeCompare(acct.secret, []byte(secret)) != 1 {
		return nil
	}
	return acct
}

// create commits a new address for acct. Callers hold s.mu.
func (s *Server) create(acct *account, spec vnccloud.Spec) *address {
	var addr string
	for {
		addr = newAddressString()
		if _, taken := s.byAddr[addr]; !taken {
			break
		}
	}
	now := s.cfg.Now()
	s.seq++
	a := &address{owner: acct, addr: addr, password: newPassword(), version: 1, spec: cloneSpec(spec),
		seq: s.seq, createdAt: now, changedAt: now, readyAt: now.Add(s.readyDelay())}
	acct.order = append(acct.order, a)
	acct.creates++
	s.byAddr[addr] = a
	return a
}

// change replaces what a PUT or a forced change replaces. Callers hold s.mu.
func (s *Server) change(a *address, spec vnccloud.Spec) {
	a.spec = cloneSpec(spec)
	a.version++
	a.changedAt = s.cfg.Now()
	a.readyAt = a.changedAt.Add(s.readyDelay())
}

// resetPassword gives a a new password. Callers hold s.mu.
func (s *Server) resetPassword(a *address) {
	a.password = newPassword()
	a.version++
	a.changedAt = s.cfg.Now()
	a.readyAt = a.changedAt.Add(s.readyDelay())
}

// remove deletes an address. Callers hold s.mu.
func (s *Server) remove(a *address) {
	a.deleted = true
	delete(s.byAddr, a.addr)
	acct := a.owner
	acct.deleted++
	// Compact once deleted entries are the larger half, so listing stays proportional
	// to what exists and each deletion costs O(1) amortised.
	if acct.deleted >= 64 && acct.deleted*2 >= len(acct.order) {
		acct.order = slices.DeleteFunc(acct.order, func(x *address) bool { return x.deleted })
		acct.deleted = 0
	}
}

// lookup finds an account's address. Callers hold s.mu.
func (s *Server) lookup(acct *account, addr string) (*address, bool) {
	a, ok := s.byAddr[addr]
	if !ok || a.owner != acct {
		return nil, false
	}
	return a, true
}

func (s *Server) ready(a *address) bool {
	return !s.cfg.Now().Before(a.readyAt)
}

// readyDelay is the readiness delay of a change made now: ReadyDelay, spread
// uniformly by ReadyJitter. Callers hold s.mu.
func (s *Server) readyDelay() time.Duration {
	d, f := s.cfg.ReadyDelay, s.cfg.ReadyJitter
	if f == 0 || d == 0 {
		return d
	}
	return time.Duration(float64(d) * (1 + f*(2*s.readyDice.Float64()-1)))
}

// page returns up to limit live addresses of acct whose sequence number is above
// after, the sequence number of the last one, and whether live addresses remain after
// it. Callers hold s.mu.
func (acct *account) page(after int64, limit int) (addrs []string, last int64, more bool) {
	i := sort.Search(len(acct.order), func(i int) bool { return acct.order[i].seq > after })
	for ; i < len(acct.order); i++ {
		a := acct.order[i]
		if a.deleted {
			continue
		}
		if len(addrs) == limit {
			return addrs, last, true
		}
		addrs = append(addrs, a.addr)
		last = a.seq
	}
	return addrs, last, false
}

func cloneSpec(s vnccloud.Spec) vnccloud.Spec {
	out := vnccloud.Spec{Action: s.Action, Groups: slices.Clone(s.Groups)}
	if s.AccessControl != nil {
		out.AccessControl = &vnccloud.AccessControl{Groups: slices.Clone(s.AccessControl.Groups),
			CloudAddresses: slices.Clone(s.AccessControl.CloudAddresses)}
	}
	return out
}
