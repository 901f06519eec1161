package sim

import (
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestLostRate: with LostRate 1 every create is committed and then answered 503;
// every address exists and each lost answer is counted.
func TestLostRate(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{LostRate: 1, Seed: 42})
	const n = 30
	for range n {
		requireError(t, f.do(t, "POST", "/static-address", `{"allowedActions":["connect"]}`), http.StatusServiceUnavailable, 0)
	}
	st := f.sim.State()
	require.Len(t, st.Accounts[keyA].Addresses, n, "each create was committed")
	require.EqualValues(t, n, st.Accounts[keyA].Creates)
	require.EqualValues(t, n, st.Accounts[keyA].Counts["create"])
	require.Equal(t, Injected{Lost: n}, st.Injected)

	// LostRate touches creates only.
	addr := st.Accounts[keyA].Addresses[0].CloudAddress
	require.Equal(t, http.StatusOK, f.do(t, "GET", "/static-address/"+addr, "").status)
	require.Equal(t, http.StatusOK, f.do(t, "POST", "/static-address/"+addr, "").status)
	// A refused create is not committed, lost or not.
	requireError(t, f.do(t, "POST", "/static-address", `{"allowedActions":["serve"]}`), 400, 1003)
	require.EqualValues(t, n, f.sim.State().Accounts[keyA].Creates)
	require.Equal(t, Injected{Lost: n}, f.sim.State().Injected)
}

// TestDropRate: with DropRate 1 every create is committed and then its connection
// closed after the request was read, with no answer; other operations are untouched.
func TestDropRate(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{DropRate: 1, Seed: 3})
	const n = 10
	for range n {
		_, err := f.try("POST", "/static-address", `{"allowedActions":["connect"],"groups":["g"]}`)
		require.ErrorIs(t, err, io.EOF, "the connection is closed with no answer")
	}
	st := f.sim.State()
	require.Len(t, st.Accounts[keyA].Addresses, n, "each create was committed")
	require.Equal(t, Injected{Dropped: n}, st.Injected)

	addr := st.Accounts[keyA].Addresses[0].CloudAddress
	require.Equal(t, []string{"g"}, st.Accounts[keyA].Addresses[0].Groups)
	require.Equal(t, http.StatusOK, f.do(t, "GET", "/static-address/"+addr, "").status)
	require.Equal(t, http.StatusOK, f.do(t, "POST", "/static-address/"+addr, "").status)
	require.Equal(t, http.StatusNoContent, f.do(t, "DELETE", "/static-address/"+addr, "").status)
	// A refused create is answered: nothing was committed, so nothing is dropped.
	requireError(t, f.do(t, "POST", "/static-address", `{"allowedActions":["serve"]}`), 400, 1003)
	require.Equal(t, Injected{Dropped: n}, f.sim.State().Injected)

	// LostRate takes precedence: a create is either lost or dropped, never both.
	f.sim.SetFaults(Faults{LostRate: 1, DropRate: 1})
	requireError(t, f.do(t, "POST", "/static-address", `{"allowedActions":["connect"]}`), http.StatusServiceUnavailable, 0)
	require.Equal(t, Injected{Lost: 1, Dropped: n}, f.sim.State().Injected)
}

// TestGarbleRate: with GarbleRate 1 every reset is committed and answered 200 with a
// body that arrives whole (its Content-Length matches) but is cut off: it does not
// decode and holds neither the old nor the new password.
func TestGarbleRate(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{GarbleRate: 1})
	addr, oldPassword := f.create(t) // creates are untouched
	for i := range 3 {
		r := f.do(t, "POST", "/static-address/"+addr, "")
		require.Equal(t, http.StatusOK, r.status)
		require.Equal(t, "application/json", r.header.Get("Content-Type"))
		require.Equal(t, strconv.Itoa(len(r.body)), r.header.Get("Content-Length"), "the cut-off body arrives whole")
		require.NotEmpty(t, r.body)
		var c credentials
		require.Error(t, json.Unmarshal(r.body, &c), "a cut-off body does not decode: %s", r.body)

		st := f.sim.State()
		a := st.Accounts[keyA].Addresses[0]
		require.Equal(t, 2+i, a.Version, "the reset was committed")
		require.NotEqual(t, oldPassword, a.Password)
		require.NotContains(t, string(r.body), a.Password, "the new password is not in the answer")
		require.EqualValues(t, i+1, st.Injected.Garbled)
		oldPassword = a.Password
	}
	require.Equal(t, http.StatusOK, f.do(t, "GET", "/static-address/"+addr+"/ready", "").status)
	// A refused reset is answered as usual and not counted.
	requireError(t, f.do(t, "POST", "/static-address/"+addr, "", hdr("If-Match", `"1"`)), http.StatusPreconditionFailed, 0)
	require.Equal(t, Injected{Garbled: 3}, f.sim.State().Injected)
}

// TestInjectedCounts: 503s of the fail rate and of the rate cap are counted apart.
func TestInjectedCounts(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	f := newFixture(t, Config{Rate: 2, Now: clock.Now})
	for range 5 {
		f.do(t, "GET", "/static-address", "")
	}
	f.sim.SetFaults(Faults{FailRate: 1})
	clock.Advance(2 * time.Second)
	for range 4 {
		requireError(t, f.do(t, "GET", "/static-address", "", noAuth), http.StatusServiceUnavailable, 0)
	}
	require.Equal(t, Injected{RateCapped: 3, Failed: 4}, f.sim.State().Injected)
	var st struct {
		Injected map[string]int64 `json:"injected"`
	}
	require.NoError(t, json.Unmarshal(f.do(t, "GET", "/sim/state", "").body, &st))
	require.Equal(t, map[string]int64{"failed": 4, "rateCapped": 3, "lost": 0, "dropped": 0, "garbled": 0}, st.Injected)
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
	f.sim.SetFaults(Faults{FailRate: 7, LostRate: -1, DropRate: 2, GarbleRate: -2, Rate: -3, Latency: -time.Second})
	require.Equal(t, Faults{FailRate: 1, DropRate: 1}, f.sim.Faults(), "clamped into range")
	f.sim.SetFaults(Faults{})
	require.Equal(t, http.StatusNoContent, f.do(t, "GET", "/static-address", "").status)

	for _, tc := range []struct {
		name   string
		body   string
		status int
		want   string
	}{
		{"all knobs", `{"failRate":0.25,"lostRate":0.5,"dropRate":0.125,"garbleRate":0.75,"rate":40,"latency":"20ms"}`, 200,
			`{"failRate":0.25,"lostRate":0.5,"dropRate":0.125,"garbleRate":0.75,"rate":40,"latency":"20ms"}`},
		{"only what is named changes", `{"rate":7}`, 200, `{"failRate":0.25,"lostRate":0.5,"dropRate":0.125,"garbleRate":0.75,"rate":7,"latency":"20ms"}`},
		{"latency in nanoseconds", `{"latency":1000000}`, 200, `{"failRate":0.25,"lostRate":0.5,"dropRate":0.125,"garbleRate":0.75,"rate":7,"latency":"1ms"}`},
		{"drop rate alone", `{"dropRate":0.5}`, 200, `{"failRate":0.25,"lostRate":0.5,"dropRate":0.5,"garbleRate":0.75,"rate":7,"latency":"1ms"}`},
		{"fail rate out of range", `{"failRate":1.5}`, 400, ""},
		{"drop rate out of range", `{"dropRate":-0.5}`, 400, ""},
		{"garble rate out of range", `{"garbleRate":2}`, 400, ""},
		{"negative rate", `{"rate":-1}`, 400, ""},
		{"bad latency", `{"latency":"soon"}`, 400, ""},
		{"not JSON", `{`, 400, ""},
		{"back to none", `{"failRate":0,"lostRate":0,"dropRate":0,"garbleRate":0,"rate":0,"latency":"0s"}`, 200,
			`{"failRate":0,"lostRate":0,"dropRate":0,"garbleRate":0,"rate":0,"latency":"0s"}`},
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
