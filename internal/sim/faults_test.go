package sim

import (
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestLostRate: with LostRate 1 every create is committed and then answered 503 or
// cut off; both happen, and every address exists.
func TestLostRate(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{LostRate: 1, Seed: 42})
	const n = 30
	var answered503, dropped int
	for range n {
		r, err := f.try("POST", "/static-address", `{"allowedActions":["connect"]}`)
		if err != nil {
			dropped++
			continue
		}
		requireError(t, r, http.StatusServiceUnavailable, 0)
		answered503++
	}
	require.Positive(t, answered503, "some lost answers are 503s")
	require.Positive(t, dropped, "some lost answers are dropped connections")
	st := f.sim.State().Accounts[keyA]
	require.Len(t, st.Addresses, n, "each create was committed")
	require.EqualValues(t, n, st.Creates)
	require.EqualValues(t, n, st.Counts["create"])

	// LostRate touches creates only.
	addr := st.Addresses[0].CloudAddress
	require.Equal(t, http.StatusOK, f.do(t, "GET", "/static-address/"+addr, "").status)
	require.Equal(t, http.StatusOK, f.do(t, "POST", "/static-address/"+addr, "").status)
	// A refused create is not committed, lost or not.
	requireError(t, f.do(t, "POST", "/static-address", `{"allowedActions":["serve"]}`), 400, 1003)
	require.EqualValues(t, n, f.sim.State().Accounts[keyA].Creates)
}

// TestSeedRepeats: the same seed and the same requests give the same faults.
func TestSeedRepeats(t *testing.T) {
	t.Parallel()
	run := func() []int {
		f := newFixture(t, Config{FailRate: 0.5, Seed: 7})
		var out []int
		for range 40 {
			out = append(out, f.do(t, "GET", "/static-address", "").status)
		}
		return out
	}
	first := run()
	require.Equal(t, first, run())
	require.Contains(t, first, http.StatusServiceUnavailable)
	require.Contains(t, first, http.StatusNoContent)
}

// TestRateCap: over Rate requests in a sliding second an account gets 503 with
// Retry-After: 1; refused requests count; other accounts and anonymous requests do
// not use its allowance.
func TestRateCap(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	f := newFixture(t, Config{Rate: 3, Now: clock.Now})
	get := func(opts ...opt) reply { return f.do(t, "GET", "/static-address", "", opts...) }

	for range 3 {
		require.Equal(t, http.StatusNoContent, get().status)
	}
	// Anonymous and other accounts' requests meanwhile do not touch A's allowance.
	for range 5 {
		requireError(t, get(noAuth), 401, 0)
		requireError(t, get(as(keyA, "wrong")), 401, 0)
	}
	require.Equal(t, http.StatusNoContent, get(as(keyB, secretB)).status)

	over := get()
	requireError(t, over, http.StatusServiceUnavailable, 0)
	require.Equal(t, "1", over.header.Get("Retry-After"))
	require.JSONEq(t, `{"errorMessage":"Service Unavailable"}`, string(over.body))
	// Rate-capped creates do nothing.
	requireError(t, f.do(t, "POST", "/static-address", `{"allowedActions":["connect"]}`), 503, 0)
	require.Zero(t, f.sim.State().Accounts[keyA].Creates)

	clock.Advance(999 * time.Millisecond)
	requireError(t, get(), http.StatusServiceUnavailable, 0) // still within the second of the first
	clock.Advance(time.Millisecond)
	require.Equal(t, http.StatusNoContent, get().status, "everything at 0s left the window: 999ms + this = 2")

	// Refused requests count towards the cap: a client that keeps hammering stays refused.
	clock.Advance(2 * time.Second) // t = 3s, empty window
	for range 3 {
		require.Equal(t, http.StatusNoContent, get().status)
	}
	clock.Advance(500 * time.Millisecond)
	requireError(t, get(), http.StatusServiceUnavailable, 0)
	requireError(t, get(), http.StatusServiceUnavailable, 0)
	clock.Advance(500 * time.Millisecond) // t = 4s: the three answered left, the two refused stay
	require.Equal(t, http.StatusNoContent, get().status)
	requireError(t, get(), http.StatusServiceUnavailable, 0)

	st := f.sim.State()
	require.Equal(t, 6, st.Accounts[keyA].PeakPerSecond, "3 answered + 3 refused within the first second")
	require.Equal(t, 1, st.Accounts[keyB].PeakPerSecond)
	require.Equal(t, 17, st.PeakPerSecond, "global: the first second, anonymous requests included")
	require.EqualValues(t, 14, st.Accounts[keyA].Requests, "requests with A's valid credentials")
	require.EqualValues(t, 25, st.Requests)
	require.EqualValues(t, map[string]int64{"list": 13, "create": 1}, st.Accounts[keyA].Counts)
}

// TestWindow: the sliding second counts (t-1s, t], and the peak is the most it held.
func TestWindow(t *testing.T) {
	t.Parallel()
	ms := int64(time.Millisecond)
	var w window
	for i, tc := range []struct {
		at   int64
		want int
	}{{0, 1}, {100 * ms, 2}, {999 * ms, 3}, {1000 * ms, 3}, {1100 * ms, 3}, {1999 * ms, 3}, {2000 * ms, 3}, {5000 * ms, 1}} {
		require.Equal(t, tc.want, w.add(tc.at), "add #%d at %dms", i, tc.at/ms)
	}
	require.Equal(t, 3, w.peak)

	// A long run: many requests per second, compaction included; memory stays bounded
	// by what one second holds.
	var big window
	const perSecond = 5000
	for i := range 20 * perSecond {
		n := big.add(int64(i) * int64(time.Second) / perSecond)
		require.Equal(t, min(i+1, perSecond), n)
	}
	require.Equal(t, perSecond, big.peak)
	require.LessOrEqual(t, len(big.times), 2*perSecond+64, "passed entries are compacted away")
}

// TestLatency: every API request waits Latency; /sim/ and /healthz do not.
func TestLatency(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{Latency: 150 * time.Millisecond})
	start := time.Now()
	require.Equal(t, http.StatusNoContent, f.do(t, "GET", "/static-address", "").status)
	require.GreaterOrEqual(t, time.Since(start), 150*time.Millisecond)
	start = time.Now()
	requireError(t, f.do(t, "GET", "/static-address", "", noAuth), 401, 0)
	require.GreaterOrEqual(t, time.Since(start), 150*time.Millisecond, "before authentication too")

	start = time.Now()
	require.Equal(t, http.StatusOK, f.do(t, "GET", "/sim/state", "").status)
	require.Equal(t, http.StatusOK, f.do(t, "GET", "/healthz", "").status)
	require.Less(t, time.Since(start), 150*time.Millisecond)
}

// TestSetFaults: the knobs change at run time, through the method and over HTTP.
func TestSetFaults(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{})
	require.Equal(t, http.StatusNoContent, f.do(t, "GET", "/static-address", "").status)

	f.sim.SetFaults(Faults{FailRate: 1})
	requireError(t, f.do(t, "GET", "/static-address", ""), 503, 0)
	f.sim.SetFaults(Faults{FailRate: 7, LostRate: -1, Rate: -3, Latency: -time.Second})
	require.Equal(t, Faults{FailRate: 1}, f.sim.Faults(), "clamped into range")
	f.sim.SetFaults(Faults{})
	require.Equal(t, http.StatusNoContent, f.do(t, "GET", "/static-address", "").status)

	for _, tc := range []struct {
		name   string
		body   string
		status int
		want   string
	}{
		{"all knobs", `{"failRate":0.25,"lostRate":0.5,"rate":40,"latency":"20ms"}`, 200,
			`{"failRate":0.25,"lostRate":0.5,"rate":40,"latency":"20ms"}`},
		{"only what is named changes", `{"rate":7}`, 200, `{"failRate":0.25,"lostRate":0.5,"rate":7,"latency":"20ms"}`},
		{"latency in nanoseconds", `{"latency":1000000}`, 200, `{"failRate":0.25,"lostRate":0.5,"rate":7,"latency":"1ms"}`},
		{"fail rate out of range", `{"failRate":1.5}`, 400, ""},
		{"negative rate", `{"rate":-1}`, 400, ""},
		{"bad latency", `{"latency":"soon"}`, 400, ""},
		{"not JSON", `{`, 400, ""},
		{"back to none", `{"failRate":0,"lostRate":0,"rate":0,"latency":"0s"}`, 200, `{"failRate":0,"lostRate":0,"rate":0,"latency":"0s"}`},
	} {
		r := f.do(t, "POST", "/sim/faults", tc.body)
		require.Equal(t, tc.status, r.status, "%s: %s", tc.name, r.body)
		if tc.want != "" {
			require.JSONEq(t, tc.want, string(r.body), tc.name)
			require.JSONEq(t, tc.want, string(f.do(t, "GET", "/sim/faults", "").body), tc.name)
		}
	}
	f.do(t, "POST", "/sim/faults", `{"failRate":1}`)
	requireError(t, f.do(t, "GET", "/static-address", ""), 503, 0)
	require.InDelta(t, 1.0, f.sim.State().Faults.FailRate, 0)
}
