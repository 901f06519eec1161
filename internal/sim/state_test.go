package sim

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/vncfleet/vncfleet/vnccloud"
)

// TestETagLifecycle: the ETag follows the version through PUT, reset and delete.
func TestETagLifecycle(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{})
	addr, _ := f.create(t)
	path := "/static-address/" + addr
	etagOf := func() string {
		r := f.do(t, "GET", path, "")
		require.Equal(t, http.StatusOK, r.status)
		return r.header.Get("ETag")
	}
	body := func(group string) string {
		return `{"cloudAddress":"` + addr + `","allowedActions":["connect"],"groups":["` + group + `"]}`
	}

	require.Equal(t, `"1"`, etagOf())
	require.Equal(t, 200, f.do(t, "PUT", path, body("b"), hdr("If-Match", `"1"`)).status)
	require.Equal(t, `"2"`, etagOf())
	requireError(t, f.do(t, "PUT", path, body("c"), hdr("If-Match", `"1"`)), 412, 0)
	require.Equal(t, `"2"`, etagOf(), "a 412 changes nothing")
	require.Equal(t, []string{"b"}, f.sim.State().Accounts[keyA].Addresses[0].Groups)
	require.Equal(t, 200, f.do(t, "PUT", path, body("c"), hdr("If-Match", `*`)).status)
	require.Equal(t, `"3"`, etagOf())
	require.Equal(t, 200, f.do(t, "POST", path, "", hdr("If-Match", `"3"`)).status)
	require.Equal(t, `"4"`, etagOf(), "a reset bumps the version")
	require.NoError(t, f.sim.ForceSpec(keyA, addr, vnccloud.Spec{Action: "listen"}))
	require.Equal(t, `"5"`, etagOf(), "so does a change behind vncfleet's back")
	requireError(t, f.do(t, "DELETE", path, "", hdr("If-Match", `"4"`)), 412, 0)
	require.Equal(t, 204, f.do(t, "DELETE", path, "", hdr("If-Match", `"4", "5"`)).status)
	requireError(t, f.do(t, "GET", path, ""), 404, 0)
	requireError(t, f.do(t, "DELETE", path, ""), 404, 0)
	st := f.sim.State().Accounts[keyA]
	require.Empty(t, st.Addresses)
	require.EqualValues(t, map[string]int64{"create": 1, "get": 7, "update": 3, "reset": 1, "delete": 3}, st.Counts)
}

// TestReadiness: pending for ReadyDelay after create, change, reset and a forced
// change, then none.
func TestReadiness(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	const delay = 2 * time.Second
	f := newFixture(t, Config{ReadyDelay: delay, Now: clock.Now})
	addr, _ := f.create(t)
	path := "/static-address/" + addr
	ready := func() string {
		r := f.do(t, "GET", path+"/ready", "")
		require.Equal(t, http.StatusOK, r.status)
		var b map[string]string
		require.NoError(t, json.Unmarshal(r.body, &b))
		return b["changes"]
	}
	expectPendingThenNone := func(what string) {
		require.Equal(t, "pending", ready(), what)
		require.False(t, f.sim.State().Accounts[keyA].Addresses[0].Ready, what)
		clock.Advance(delay - time.Nanosecond)
		require.Equal(t, "pending", ready(), what)
		clock.Advance(time.Nanosecond)
		require.Equal(t, "none", ready(), what)
		require.True(t, f.sim.State().Accounts[keyA].Addresses[0].Ready, what)
	}
	expectPendingThenNone("after create")
	require.Equal(t, 200, f.do(t, "PUT", path, `{"cloudAddress":"`+addr+`","allowedActions":["listen"]}`).status)
	expectPendingThenNone("after PUT")
	require.Equal(t, 200, f.do(t, "POST", path, "").status)
	expectPendingThenNone("after reset")
	require.NoError(t, f.sim.ForceSpec(keyA, addr, vnccloud.Spec{Action: "connect"}))
	expectPendingThenNone("after a forced change")
	requireError(t, f.do(t, "PUT", path, `{"cloudAddress":"`+addr+`","allowedActions":["listen"]}`, hdr("If-Match", `"1"`)), 412, 0)
	require.Equal(t, "none", ready(), "a refused change leaves it ready")
	require.Equal(t, 200, f.do(t, "GET", path, "").status)
	require.Equal(t, "none", ready(), "reading does not make it pending")
}

// TestReadinessJitter: with ReadyJitter F each create, change and reset draws its
// own delay, uniformly within ReadyDelay × [1−F, 1+F], and the same seed draws the
// same delays.
func TestReadinessJitter(t *testing.T) {
	t.Parallel()
	const delay, jitter, n = time.Second, 0.5, 400
	delays := func(seed int64) []time.Duration {
		clock := newFakeClock()
		f := newFixture(t, Config{ReadyDelay: delay, ReadyJitter: jitter, Seed: seed, Now: clock.Now})
		for range n {
			f.create(t)
		}
		addr := f.sim.State().Accounts[keyA].Addresses[0].CloudAddress
		clock.Advance(time.Hour)
		require.Equal(t, 200, f.do(t, "POST", "/static-address/"+addr, "").status) // a reset draws anew
		var out []time.Duration
		for _, a := range f.sim.State().Accounts[keyA].Addresses {
			out = append(out, a.ReadyAt.Sub(a.ChangedAt))
		}
		return out
	}
	got := delays(7)
	require.Len(t, got, n)
	lo, hi := time.Duration(float64(delay)*(1-jitter)), time.Duration(float64(delay)*(1+jitter))
	// Uniform: every delay within the bounds, and each quarter of the range holds
	// about a quarter of them (n/4 = 100, a binomial spread of ±9; ±40 never fails
	// by chance in practice).
	quarters := make([]int, 4)
	for _, d := range got {
		require.GreaterOrEqual(t, d, lo)
		require.LessOrEqual(t, d, hi)
		quarters[min(int(4*float64(d-lo)/float64(hi-lo)), 3)]++
	}
	for i, q := range quarters {
		require.InDelta(t, n/4, q, 40, "quarter %d of the range: %v", i, quarters)
	}
	require.Equal(t, got, delays(7), "a seed draws the same delays")
	require.NotEqual(t, got, delays(8))

	// The drawn delay is what /ready answers by.
	clock := newFakeClock()
	f := newFixture(t, Config{ReadyDelay: delay, ReadyJitter: jitter, Seed: 3, Now: clock.Now})
	addr, _ := f.create(t)
	a := f.sim.State().Accounts[keyA].Addresses[0]
	clock.Advance(a.ReadyAt.Sub(a.ChangedAt) - time.Nanosecond)
	require.JSONEq(t, `{"changes":"pending"}`, string(f.do(t, "GET", "/static-address/"+addr+"/ready", "").body))
	clock.Advance(time.Nanosecond)
	require.JSONEq(t, `{"changes":"none"}`, string(f.do(t, "GET", "/static-address/"+addr+"/ready", "").body))
}

// TestReadinessRealTime: the same with the real clock and a short delay.
func TestReadinessRealTime(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{ReadyDelay: 50 * time.Millisecond})
	addr, _ := f.create(t)
	r := f.do(t, "GET", "/static-address/"+addr+"/ready", "")
	require.JSONEq(t, `{"changes":"pending"}`, string(r.body))
	require.Eventually(t, func() bool {
		return string(f.do(t, "GET", "/static-address/"+addr+"/ready", "").body) == "{\"changes\":\"none\"}\n"
	}, 2*time.Second, 10*time.Millisecond)
}

// TestPasswords: created and reset passwords are fresh, only create and reset return
// them, and a reset replaces the old one.
func TestPasswords(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{})
	seen := map[string]bool{}
	addrs := map[string]bool{}
	var addr, pw string
	for range 50 {
		addr, pw = f.create(t)
		require.Regexp(t, passwordShape, pw)
		require.True(t, vnccloud.IsWellFormedAddress(addr))
		require.False(t, seen[pw], "passwords are not reused")
		require.False(t, addrs[addr], "addresses are unique")
		seen[pw], addrs[addr] = true, true
	}
	for _, r := range []reply{f.do(t, "GET", "/static-address/"+addr, ""), f.do(t, "GET", "/static-address?limit=99", ""),
		f.do(t, "GET", "/static-address/"+addr+"/ready", "")} {
		require.Equal(t, http.StatusOK, r.status)
		require.NotContains(t, string(r.body), pw)
		require.NotContains(t, string(r.body), "cloudPassword")
	}
	r := f.do(t, "POST", "/static-address/"+addr, "")
	var c struct{ CloudAddress, CloudPassword string }
	require.NoError(t, json.Unmarshal(r.body, &c))
	require.NotEqual(t, pw, c.CloudPassword)
	require.Regexp(t, passwordShape, c.CloudPassword)
	require.Equal(t, c.CloudPassword, f.sim.State().Accounts[keyA].Addresses[49].Password)
}

// TestAccountIsolation: another account's address is 404 on every operation and
// never listed, exactly like one that does not exist.
func TestAccountIsolation(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{})
	mine, _ := f.create(t)
	theirs, theirPW := f.create(t, as(keyB, secretB))
	for _, tc := range []struct{ method, path, body string }{
		{"GET", "/static-address/" + theirs + "/ready", ""},
		{"GET", "/static-address/" + theirs, ""},
		{"PUT", "/static-address/" + theirs, `{"cloudAddress":"` + theirs + `","allowedActions":["listen"]}`},
		{"POST", "/static-address/" + theirs, ""},
		{"DELETE", "/static-address/" + theirs, ""},
	} {
		r := f.do(t, tc.method, tc.path, tc.body)
		requireError(t, r, 404, 0)
		rMissing := f.do(t, tc.method, strings.Replace(tc.path, theirs, missing, 1), strings.Replace(tc.body, theirs, missing, 1))
		require.Equal(t, rMissing.body, r.body, "indistinguishable from a missing address")
	}
	require.JSONEq(t, `{"cloudAddresses":["`+mine+`"]}`, string(f.do(t, "GET", "/static-address", "").body))
	require.JSONEq(t, `{"cloudAddresses":["`+theirs+`"]}`, string(f.do(t, "GET", "/static-address", "", as(keyB, secretB)).body))
	b := f.sim.State().Accounts[keyB].Addresses[0]
	require.Equal(t, theirPW, b.Password)
	require.Equal(t, 1, b.Version)
}

// TestStateAndDrift: State's contents and the drift helpers, by method and over HTTP.
func TestStateAndDrift(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	f := newFixture(t, Config{Now: clock.Now})
	first, _ := f.create(t)
	clock.Advance(time.Minute)
	listenSpec := vnccloud.Spec{Action: "listen", AccessControl: &vnccloud.AccessControl{Groups: []string{"ops"}, CloudAddresses: []string{first}}}
	foreign, foreignPW, err := f.sim.CreateAddress(keyA, listenSpec)
	require.NoError(t, err)

	st := f.sim.State()
	a := st.Accounts[keyA]
	require.Len(t, a.Addresses, 2)
	require.Equal(t, first, a.Addresses[0].CloudAddress, "creation order")
	require.Equal(t, foreign, a.Addresses[1].CloudAddress)
	require.Equal(t, foreignPW, a.Addresses[1].Password)
	require.True(t, listenSpec.Equal(a.Addresses[1].Spec()))
	require.Equal(t, clock.Now(), a.Addresses[1].CreatedAt)
	require.Equal(t, clock.Now().Add(-time.Minute), a.Addresses[0].CreatedAt)
	require.EqualValues(t, 2, a.Creates, "foreign creates count")
	require.EqualValues(t, 1, a.Requests, "but are no request")
	require.Empty(t, st.Accounts[keyB].Addresses)
	require.NotNil(t, st.Accounts[keyB].Addresses, "an empty list, not null, in JSON")

	// The snapshot shares nothing.
	a.Addresses[1].AccessControl.Groups[0] = "changed"
	require.Equal(t, "ops", f.sim.State().Accounts[keyA].Addresses[1].AccessControl.Groups[0])

	// The same over HTTP, in the API's JSON shape.
	r := f.do(t, "GET", "/sim/state", "", noAuth)
	require.Equal(t, http.StatusOK, r.status)
	var raw map[string]any
	require.NoError(t, json.Unmarshal(r.body, &raw))
	acct := raw["accounts"].(map[string]any)[keyA].(map[string]any)
	addr1 := acct["addresses"].([]any)[1].(map[string]any)
	require.Equal(t, foreignPW, addr1["cloudPassword"])
	require.Equal(t, []any{"listen"}, addr1["allowedActions"])
	require.Equal(t, map[string]any{"groups": []any{"ops"}, "cloudAddresses": []any{first}}, addr1["accessControl"])
	require.NotContains(t, addr1, "groups")
	require.Equal(t, float64(1), raw["requests"])

	// Errors of the helpers.
	require.ErrorIs(t, f.sim.ForceSpec("acct-z", first, vnccloud.Spec{Action: "connect"}), ErrUnknownAccount)
	require.ErrorIs(t, f.sim.ForceSpec(keyB, first, vnccloud.Spec{Action: "connect"}), ErrNoSuchAddress)
	var ve *vnccloud.ValidationError
	require.ErrorAs(t, f.sim.ForceSpec(keyA, first, vnccloud.Spec{Action: "serve"}), &ve)
	require.Equal(t, vnccloud.CodeInvalidAction, ve.Code)
	require.ErrorIs(t, f.sim.ForceDelete(keyA, missing), ErrNoSuchAddress)
	_, _, err = f.sim.CreateAddress("acct-z", vnccloud.Spec{Action: "connect"})
	require.ErrorIs(t, err, ErrUnknownAccount)
	_, _, err = f.sim.CreateAddress(keyA, vnccloud.Spec{Action: "connect", Groups: []string{}})
	require.ErrorAs(t, err, &ve)
	require.Equal(t, vnccloud.CodeEmptyList, ve.Code)

	// Drift over HTTP.
	for _, tc := range []struct {
		method, path, body string
		status             int
	}{
		{"POST", "/sim/accounts/" + keyA + "/addresses/" + first + "/force", `{"allowedActions":["connect"],"groups":["drifted"]}`, 204},
		{"POST", "/sim/accounts/" + keyA + "/addresses/" + first + "/force", `{"allowedActions":["connect"],"groups":[]}`, 400},
		{"POST", "/sim/accounts/" + keyA + "/addresses/" + first + "/force", `{`, 400},
		{"POST", "/sim/accounts/" + keyB + "/addresses/" + first + "/force", `{"allowedActions":["connect"]}`, 404},
		{"POST", "/sim/accounts/acct-z/addresses/" + first + "/force", `{"allowedActions":["connect"]}`, 404},
		{"DELETE", "/sim/accounts/" + keyA + "/addresses/" + foreign, "", 204},
		{"DELETE", "/sim/accounts/" + keyA + "/addresses/" + foreign, "", 404},
		{"POST", "/sim/accounts/" + keyB + "/addresses", `{"allowedActions":["listen"]}`, 201},
		{"POST", "/sim/accounts/acct-z/addresses", `{"allowedActions":["listen"]}`, 404},
	} {
		r := f.do(t, tc.method, tc.path, tc.body, noAuth)
		require.Equal(t, tc.status, r.status, "%s %s: %s", tc.method, tc.path, r.body)
	}
	st = f.sim.State()
	require.Len(t, st.Accounts[keyA].Addresses, 1)
	require.Equal(t, []string{"drifted"}, st.Accounts[keyA].Addresses[0].Groups)
	require.Equal(t, 2, st.Accounts[keyA].Addresses[0].Version)
	require.Len(t, st.Accounts[keyB].Addresses, 1)
	require.Equal(t, []string{"listen"}, st.Accounts[keyB].Addresses[0].AllowedActions)
}

// TestNew: the configuration is checked in one place.
func TestNew(t *testing.T) {
	t.Parallel()
	ok := []Account{{keyA, secretA}}
	for _, tc := range []struct {
		name string
		cfg  Config
		err  string
	}{
		{"no account", Config{}, "at least one account"},
		{"malformed key", Config{Accounts: []Account{{"bad key", "hush-1"}}}, "not well-formed"},
		{"no secret", Config{Accounts: []Account{{keyA, ""}}}, "no secret"},
		{"twice", Config{Accounts: []Account{{keyA, "hush-1"}, {keyA, "hush-2"}}}, "twice"},
		{"fail rate", Config{Accounts: ok, FailRate: 1.1}, "FailRate"},
		{"lost rate", Config{Accounts: ok, LostRate: -0.1}, "LostRate"},
		{"drop rate", Config{Accounts: ok, DropRate: 1.5}, "DropRate"},
		{"garble rate", Config{Accounts: ok, GarbleRate: -1}, "GarbleRate"},
		{"rate", Config{Accounts: ok, Rate: -1}, "Rate"},
		{"latency", Config{Accounts: ok, Latency: -time.Second}, "Latency"},
		{"ready delay", Config{Accounts: ok, ReadyDelay: -time.Second}, "ReadyDelay"},
		{"ready jitter", Config{Accounts: ok, ReadyJitter: 1.5}, "ReadyJitter"},
		{"ready jitter below 0", Config{Accounts: ok, ReadyJitter: -0.1}, "ReadyJitter"},
		{"fine", Config{Accounts: ok, FailRate: 1, LostRate: 1, DropRate: 1, GarbleRate: 1, Rate: 1}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s, err := New(tc.cfg)
			if tc.err == "" {
				require.NoError(t, err)
				require.NotNil(t, s)
				return
			}
			require.ErrorContains(t, err, tc.err)
			for _, a := range tc.cfg.Accounts {
				if a.Secret != "" {
					require.NotContains(t, err.Error(), a.Secret, "no secret in errors")
				}
			}
		})
	}
}

// TestMounts: Zenlayer at /api/v2/zec when configured, /healthz always.
func TestMounts(t *testing.T) {
	t.Parallel()
	zl := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Zenlayer", "yes")
		w.WriteHeader(http.StatusTeapot)
	})
	with := newFixture(t, Config{Zenlayer: zl})
	r := with.do(t, "POST", "/api/v2/zec", `{}`)
	require.Equal(t, http.StatusTeapot, r.status)
	require.Equal(t, "yes", r.header.Get("X-Zenlayer"))
	require.Zero(t, with.sim.State().Requests, "Zenlayer requests are not VNC Cloud requests")

	without := newFixture(t, Config{})
	require.Equal(t, http.StatusNotFound, without.do(t, "POST", "/api/v2/zec", `{}`).status)
	h := without.do(t, "GET", "/healthz", "")
	require.Equal(t, http.StatusOK, h.status)
	require.Equal(t, "ok\n", string(h.body))
}

// TestConcurrentUse: many clients at once keep the state consistent (run with -race).
func TestConcurrentUse(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{ReadyDelay: time.Millisecond})
	const workers, each = 16, 25
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				r, err := f.try("POST", "/static-address", `{"allowedActions":["connect"],"groups":["w`+fmt.Sprint(w)+`"]}`)
				if err != nil || r.status != http.StatusCreated {
					errs <- fmt.Errorf("create: %v %d", err, r.status)
					return
				}
				var c struct{ CloudAddress string }
				_ = json.Unmarshal(r.body, &c)
				path := "/static-address/" + c.CloudAddress
				steps := []struct {
					method, body string
					want         int
				}{{"GET", "", 200}, {"PUT", `{"cloudAddress":"` + c.CloudAddress + `","allowedActions":["listen"]}`, 200}, {"POST", "", 200}}
				if i%2 == 0 {
					steps = append(steps, struct {
						method, body string
						want         int
					}{"DELETE", "", 204})
				}
				for _, s := range steps {
					r, err := f.try(s.method, path, s.body)
					if err != nil || r.status != s.want {
						errs <- fmt.Errorf("%s: %v %d", s.method, err, r.status)
						return
					}
				}
				if r, err := f.try("GET", "/static-address?limit=7", ""); err != nil || r.status >= 300 {
					errs <- errors.New("list failed")
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	st := f.sim.State().Accounts[keyA]
	require.EqualValues(t, workers*each, st.Creates)
	require.Len(t, st.Addresses, workers*(each/2))
	for _, a := range st.Addresses {
		require.Equal(t, 3, a.Version)
		require.Equal(t, []string{"listen"}, a.AllowedActions)
	}
	var listed []string
	for _, p := range f.all(t, "/static-address?limit=99") {
		listed = append(listed, p.addrs...)
	}
	require.Len(t, listed, len(st.Addresses))
}
