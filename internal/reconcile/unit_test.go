package reconcile_test

import (
	"context"
	"fmt"
	"iter"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/vncfleet/vncfleet/internal/reconcile"
	"github.com/vncfleet/vncfleet/internal/store"
	"github.com/vncfleet/vncfleet/vnccloud"
)

// These tests hold a run's decisions to a store and a cloud of their own (no
// database, no HTTP): what it adopts, deletes, reports and records, and how it meets
// a failed call. The tests with PostgreSQL and the simulator run the whole.

// memCloud is a reconcile.Cloud in memory. fail holds, by "METHOD address", the
// errors the next calls answer, in order, without effect.
type memCloud struct {
	mu    sync.Mutex
	addrs map[string]vnccloud.Details
	order []string
	fail  map[string][]error
	calls []string
}

func newMemCloud() *memCloud {
	return &memCloud{addrs: map[string]vnccloud.Details{}, fail: map[string][]error{}}
}

func (c *memCloud) add(addr string, spec vnccloud.Spec) {
	c.addrs[addr] = vnccloud.Details{CloudAddress: addr, Spec: spec, ETag: `"1"`}
	c.order = append(c.order, addr)
}

// call records a call and answers its scripted failure, if any.
func (c *memCloud) call(method, addr string) error {
	c.calls = append(c.calls, method+" "+addr)
	k := method + " " + addr
	if errs := c.fail[k]; len(errs) > 0 {
		c.fail[k] = errs[1:]
		return errs[0]
	}
	return nil
}

func (c *memCloud) List(ctx context.Context, opts vnccloud.ListOptions) iter.Seq2[string, error] {
	return func(yield func(string, error) bool) {
		var page []string
		fetch := func(context.Context) error {
			c.mu.Lock()
			defer c.mu.Unlock()
			if err := c.call("LIST", ""); err != nil {
				return err
			}
			page = slices.DeleteFunc(slices.Clone(c.order), func(a string) bool { _, ok := c.addrs[a]; return !ok })
			return nil
		}
		if err := opts.PerRequest(ctx, fetch); err != nil {
			yield("", err)
			return
		}
		for _, a := range page {
			if !yield(a, nil) {
				return
			}
		}
	}
}

func (c *memCloud) Get(_ context.Context, addr string) (vnccloud.Details, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.call("GET", addr); err != nil {
		return vnccloud.Details{}, err
	}
	d, ok := c.addrs[addr]
	if !ok {
		return vnccloud.Details{}, fmt.Errorf("get %s: %w", addr, vnccloud.ErrNotFound)
	}
	return d, nil
}

func (c *memCloud) Delete(_ context.Context, addr, ifMatch string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.call("DELETE", addr); err != nil {
		return err
	}
	d, ok := c.addrs[addr]
	switch {
	case !ok:
		return fmt.Errorf("delete %s: %w", addr, vnccloud.ErrNotFound)
	case ifMatch != "" && ifMatch != d.ETag:
		return &vnccloud.APIError{Op: "delete", StatusCode: 412}
	}
	delete(c.addrs, addr)
	return nil
}

// memStore is a reconcile.Store in memory, recording what a run writes.
type memStore struct {
	known     map[string]store.KnownDevice
	attempts  []store.OpenAttempt
	firstSeen map[string]time.Time
	// refuseAdopt: AdoptAddress answers no (the device has an address, or a claim).
	refuseAdopt bool

	adopted  []string // "attempt device address"
	resolved []string // "attempt outcome address"
	vanished []string // "device address"
	checked  []string // "device drift"
}

func (s *memStore) NewListing(context.Context) (store.AddressListing, error) {
	return &memListing{store: s, before: maps.Clone(s.known), listed: map[string]bool{}}, nil
}

// memListing is a store.AddressListing in memory: the known addresses when it began,
// and the listed ones.
type memListing struct {
	store  *memStore
	before map[string]store.KnownDevice
	listed map[string]bool
}

func (l *memListing) Known() int { return len(l.before) }
func (l *memListing) Add(_ context.Context, addr string) error {
	l.listed[addr] = true
	return nil
}
func (l *memListing) Done(context.Context) (int, error) { return len(l.listed), nil }
func (l *memListing) Unlisted(context.Context) ([]store.KnownDevice, error) {
	var out []store.KnownDevice
	for _, addr := range slices.Sorted(maps.Keys(l.before)) {
		if dev, still := l.store.known[addr]; still && !l.listed[addr] {
			out = append(out, dev)
		}
	}
	return out, nil
}
func (l *memListing) Unknown(context.Context) ([]string, error) {
	var out []string
	for _, addr := range slices.Sorted(maps.Keys(l.listed)) {
		if _, known := l.store.known[addr]; !known {
			out = append(out, addr)
		}
	}
	return out, nil
}
func (l *memListing) Close() {}
func (s *memStore) CreatesInFlight(context.Context, time.Time) (store.CreatesInFlight, error) {
	return store.CreatesInFlight{}, nil
}
func (s *memStore) OpenAttempts(context.Context) ([]store.OpenAttempt, error) { return s.attempts, nil }
func (s *memStore) FirstSeen(_ context.Context, addrs []string, _ bool) (map[string]time.Time, error) {
	out := map[string]time.Time{}
	for _, a := range addrs {
		out[a] = s.firstSeen[a]
	}
	return out, nil
}
func (s *memStore) DriftCandidates(context.Context, int) ([]store.DriftCandidate, error) {
	return nil, nil
}
func (s *memStore) MarkVanished(_ context.Context, pk int64, addr, _ string) (bool, error) {
	s.vanished = append(s.vanished, fmt.Sprint(pk, " ", addr))
	return true, nil
}
func (s *memStore) ResolveAttempt(_ context.Context, id int64, outcome, addr string) error {
	s.resolved = append(s.resolved, fmt.Sprint(id, " ", outcome, " ", addr))
	return nil
}
func (s *memStore) AdoptAddress(_ context.Context, id, pk int64, addr, _ string) (bool, error) {
	if s.refuseAdopt {
		return false, nil
	}
	s.adopted = append(s.adopted, fmt.Sprint(id, " ", pk, " ", addr))
	return true, nil
}
func (s *memStore) MarkChecked(_ context.Context, pk int64, _ int, drift, _ string) error {
	s.checked = append(s.checked, fmt.Sprint(pk, " ", drift))
	return nil
}
func (s *memStore) Reschedule(context.Context, string) (int, error) { return 0, nil }
func (s *memStore) OwedUnder(context.Context, string) (int, error)  { return 0, nil }

func TestRunDecisionsWithAStoreOfItsOwn(t *testing.T) {
	t.Parallel()
	base := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	lineA := vnccloud.Spec{Action: vnccloud.ActionConnect, Groups: []string{"line-a"}}
	lost := func(wants bool) store.OpenAttempt {
		return store.OpenAttempt{ID: 1, DevicePK: 10, Fleet: "f", DeviceID: "v1", Spec: lineA, SentAt: base, DeviceWantsAddress: wants}
	}
	unavailable := &vnccloud.APIError{Op: "delete", StatusCode: 503}
	for _, tc := range []struct {
		name      string
		attempt   store.OpenAttempt
		seen      time.Duration // when the orphan x was first listed, after the attempt was sent
		fail      map[string][]error
		refuse    bool
		want      reconcile.Report
		adopted   []string
		resolved  []string
		calls     []string
		converged bool
	}{
		{name: "an orphan whose device has no address is adopted", attempt: lost(true), seen: time.Minute,
			want:    reconcile.Report{Adopted: []string{"f/v1: x"}},
			adopted: []string{"1 10 x"}, calls: []string{"LIST ", "GET x"}, converged: true},
		{name: "a surplus orphan is deleted with the ETag read, and its attempt closed", attempt: lost(false), seen: time.Minute, refuse: true,
			want:     reconcile.Report{DeletedOrphans: []string{"x"}},
			resolved: []string{"1 discarded x"}, calls: []string{"LIST ", "GET x", "DELETE x"}, converged: true},
		{name: "an orphan whose device took an address meanwhile is deleted", attempt: lost(true), seen: time.Minute, refuse: true,
			want:     reconcile.Report{DeletedOrphans: []string{"x"}},
			resolved: []string{"1 discarded x"}, calls: []string{"LIST ", "GET x", "DELETE x"}, converged: true},
		{name: "an address listed before the create was sent is foreign, and kept", attempt: lost(true), seen: -time.Minute,
			want:     reconcile.Report{Foreign: []string{"x"}},
			resolved: []string{"1 discarded "}, calls: []string{"LIST ", "GET x"}, converged: true},
		{name: "a delete answered 503 is sent again", attempt: lost(false), seen: time.Minute, refuse: true,
			fail:     map[string][]error{"DELETE x": {unavailable}},
			want:     reconcile.Report{DeletedOrphans: []string{"x"}},
			resolved: []string{"1 discarded x"}, calls: []string{"LIST ", "GET x", "DELETE x", "DELETE x"}, converged: true},
		{name: "a list page answered 503 is asked for again", attempt: lost(false), seen: time.Minute, refuse: true,
			fail:     map[string][]error{"LIST ": {&vnccloud.APIError{Op: "list", StatusCode: 503}}},
			want:     reconcile.Report{DeletedOrphans: []string{"x"}},
			resolved: []string{"1 discarded x"}, calls: []string{"LIST ", "LIST ", "GET x", "DELETE x"}, converged: true},
		{name: "an inspection refused (403) is reported, not retried, and the attempt stays open", attempt: lost(false), seen: time.Minute, refuse: true,
			fail:  map[string][]error{"GET x": {&vnccloud.APIError{Op: "get", StatusCode: 403}}},
			calls: []string{"LIST ", "GET x"}, converged: false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cloud := newMemCloud()
			cloud.add("x", lineA)
			if tc.fail != nil {
				cloud.fail = tc.fail
			}
			st := &memStore{known: map[string]store.KnownDevice{}, attempts: []store.OpenAttempt{tc.attempt},
				firstSeen: map[string]time.Time{"x": base.Add(tc.seen)}, refuseAdopt: tc.refuse}
			r := &reconcile.Reconciler{Store: st, Cloud: cloud, Config: reconcile.Config{Backoff: quickRetries}}
			rep, err := r.Run(context.Background(), false)
			require.NoError(t, err)
			require.Equal(t, tc.want.Adopted, rep.Adopted, "adopted")
			require.Equal(t, tc.want.DeletedOrphans, rep.DeletedOrphans, "deleted")
			require.Equal(t, tc.want.Foreign, rep.Foreign, "foreign")
			require.Equal(t, tc.adopted, st.adopted)
			require.Equal(t, tc.resolved, st.resolved)
			require.Equal(t, tc.calls, cloud.calls)
			require.Equal(t, tc.converged, rep.Converged, "%q", rep.Errors)
			if !tc.converged {
				require.Len(t, rep.Errors, 1)
				require.Contains(t, rep.Errors[0], "inspect x")
			}
			_, stillThere := cloud.addrs["x"]
			require.Equal(t, len(tc.want.DeletedOrphans) == 0, stillThere)
		})
	}
}

// A known address missing from the listing is confirmed by a GET (404) before it is
// taken for vanished; one the GET finds was only missed by the listing.
func TestVanishedIsConfirmedByAGET(t *testing.T) {
	t.Parallel()
	cloud := newMemCloud()
	cloud.fail["GET gone"] = []error{&vnccloud.APIError{Op: "get", StatusCode: 503}} // retried, then 404
	st := &memStore{known: map[string]store.KnownDevice{
		"gone": {PK: 1, Fleet: "f", DeviceID: "v1", CloudAddress: "gone", Status: "ready"},
		"busy": {PK: 2, Fleet: "f", DeviceID: "v2", CloudAddress: "busy", Status: "ready", Busy: true},
	}}
	r := &reconcile.Reconciler{Store: st, Cloud: cloud, Config: reconcile.Config{Backoff: quickRetries}}
	rep, err := r.Run(context.Background(), false)
	require.NoError(t, err)
	require.Equal(t, []string{"f/v1"}, rep.Vanished)
	require.Equal(t, []string{"1 gone"}, st.vanished)
	require.Equal(t, []string{"LIST ", "GET gone", "GET gone"}, cloud.calls, "a busy device is its job's")
	require.True(t, rep.Converged)
}
