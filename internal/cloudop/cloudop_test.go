package cloudop_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/vncfleet/vncfleet/fleet"
	"github.com/vncfleet/vncfleet/internal/cloudop"
	"github.com/vncfleet/vncfleet/internal/sim"
	"github.com/vncfleet/vncfleet/vnccloud"
)

func TestClassify(t *testing.T) {
	t.Parallel()
	api := func(status int) error { return &vnccloud.APIError{StatusCode: status} }
	tests := []struct {
		name           string
		err            error
		sent, mutating bool
		want           fleet.Outcome
	}{
		{"nothing sent", context.DeadlineExceeded, false, true, fleet.NotSent},
		{"invalid spec, never sent", &vnccloud.ValidationError{}, false, true, fleet.Refused},
		{"503 to a create may have made an address", api(503), true, true, fleet.Unknown},
		{"503 to the GET before a write changed nothing", api(503), true, false, fleet.Retryable},
		{"429 is a refusal for now", api(429), true, true, fleet.Retryable},
		{"412 that kept coming", api(412), true, true, fleet.Retryable},
		{"400 is final", api(400), true, true, fleet.Refused},
		{"401 is final", api(401), true, false, fleet.Refused},
		{"connection lost during a write", &vnccloud.TransportError{Op: "reset", Err: errors.New("EOF")}, true, true, fleet.Unknown},
		{"timeout of a write", context.DeadlineExceeded, true, true, fleet.Unknown},
		{"timeout of a read", context.DeadlineExceeded, true, false, fleet.Retryable},
		{"an unreadable 2xx to a write", fmt.Errorf("decode reset: %w", errors.New("unexpected end of JSON input")), true, true, fleet.Unknown},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.Equal(t, tt.want, cloudop.Classify(tt.err, tt.sent, tt.mutating))
		})
	}
}

const (
	apiKey    = "key"
	apiSecret = "secret-value"
)

// newCloud serves the simulator over real HTTP, through wrap when given.
func newCloud(t *testing.T, wrap func(http.Handler) http.Handler) (*vnccloud.Client, *sim.Server) {
	t.Helper()
	s, err := sim.New(sim.Config{Accounts: []sim.Account{{Key: apiKey, Secret: apiSecret}}, Seed: 1})
	require.NoError(t, err)
	h := s.Handler()
	if wrap != nil {
		h = wrap(h)
	}
	ts := httptest.NewServer(h)
	t.Cleanup(ts.Close)
	c, err := vnccloud.New(vnccloud.Config{BaseURL: ts.URL + sim.APIPrefix, APIKey: apiKey, APISecret: apiSecret, Timeout: 5 * time.Second})
	require.NoError(t, err)
	return c, s
}

func TestPerformEveryOperation(t *testing.T) {
	t.Parallel()
	c, s := newCloud(t, nil)
	ctx := context.Background()
	spec := vnccloud.Spec{Action: vnccloud.ActionConnect, Groups: []string{"line-a"}}

	created := cloudop.Perform(ctx, c, cloudop.Direct, cloudop.Task{Op: fleet.OpCreate, Spec: spec})
	require.Equal(t, fleet.Created, created.Outcome, "%v", created.Err)
	addr := created.Address
	require.Equal(t, addressOf(s, addr).Password, created.Password)

	poll := cloudop.Perform(ctx, c, cloudop.Direct, cloudop.Task{Op: fleet.OpPoll, CloudAddress: addr})
	require.Contains(t, []fleet.Outcome{fleet.Ready, fleet.Pending}, poll.Outcome)

	spec.Groups = []string{"line-b"}
	updated := cloudop.Perform(ctx, c, cloudop.Direct, cloudop.Task{Op: fleet.OpUpdate, Spec: spec, CloudAddress: addr})
	require.Equal(t, fleet.Applied, updated.Outcome, "%v", updated.Err)
	require.Equal(t, []string{"line-b"}, addressOf(s, addr).Groups)
	require.Equal(t, []string{"get", "update"}, operations(updated.Calls))

	rotated := cloudop.Perform(ctx, c, cloudop.Direct, cloudop.Task{Op: fleet.OpRotate, CloudAddress: addr})
	require.Equal(t, fleet.Rotated, rotated.Outcome, "%v", rotated.Err)
	require.Equal(t, addressOf(s, addr).Password, rotated.Password)
	require.NotEqual(t, created.Password, rotated.Password)

	deleted := cloudop.Perform(ctx, c, cloudop.Direct, cloudop.Task{Op: fleet.OpDelete, CloudAddress: addr})
	require.Equal(t, fleet.Deleted, deleted.Outcome, "%v", deleted.Err)
	again := cloudop.Perform(ctx, c, cloudop.Direct, cloudop.Task{Op: fleet.OpDelete, CloudAddress: addr})
	require.Equal(t, fleet.Deleted, again.Outcome, "a 404 on delete is done")
	for _, op := range []fleet.Op{fleet.OpUpdate, fleet.OpRotate, fleet.OpPoll} {
		gone := cloudop.Perform(ctx, c, cloudop.Direct, cloudop.Task{Op: op, Spec: spec, CloudAddress: addr})
		require.Equal(t, fleet.Vanished, gone.Outcome, "%s of a deleted address", op)
	}

	unresolved := cloudop.Perform(ctx, c, cloudop.Direct, cloudop.Task{Op: fleet.OpCreate,
		Spec: vnccloud.Spec{Action: vnccloud.ActionListen}, Unresolved: []string{"v9"}})
	require.Equal(t, fleet.Refused, unresolved.Outcome)
	require.Empty(t, unresolved.Calls, "refused without a request")
	require.ErrorContains(t, unresolved.Err, "v9")
}

func operations(calls []cloudop.Call) []string {
	var out []string
	for _, c := range calls {
		out = append(out, c.Operation)
	}
	return out
}

// A reset the cloud performed but whose answer was cut off is of unknown outcome:
// the state machine then owes another reset rather than fail with the old password.
func TestCutOffResetIsOfUnknownOutcome(t *testing.T) {
	t.Parallel()
	var cut atomic.Bool
	c, s := newCloud(t, func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method != http.MethodPost || strings.HasSuffix(r.URL.Path, "/static-address") || !cut.Load() {
				next.ServeHTTP(w, r)
				return
			}
			rec := httptest.NewRecorder()
			next.ServeHTTP(rec, r)
			body := rec.Body.Bytes()
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(rec.Code)
			_, _ = w.Write(body[:len(body)/2])
		})
	})
	ctx := context.Background()
	created := cloudop.Perform(ctx, c, cloudop.Direct, cloudop.Task{Op: fleet.OpCreate, Spec: vnccloud.Spec{Action: vnccloud.ActionConnect}})
	require.Equal(t, fleet.Created, created.Outcome, "%v", created.Err)

	cut.Store(true)
	rep := cloudop.Perform(ctx, c, cloudop.Direct, cloudop.Task{Op: fleet.OpRotate, CloudAddress: created.Address})
	require.Equal(t, fleet.Unknown, rep.Outcome, "%v", rep.Err)
	require.NotEqual(t, created.Password, addressOf(s, created.Address).Password, "the cloud did reset it")
	require.False(t, bytes.Contains([]byte(rep.Err.Error()), []byte(addressOf(s, created.Address).Password)),
		"the error never carries the password")

	e := fleet.Decide(fleet.OpRotate, rep.Outcome, true)
	require.True(t, e.Retry && e.ForgetPassword, "another reset is owed, and the old password is not the cloud's")
}

// A 412 (someone changed the address between our GET and our write) is met by a
// fresh GET and another try, within a bound.
func TestPreconditionFailedIsRetriedWithAFreshETag(t *testing.T) {
	t.Parallel()
	var conflicts atomic.Int32
	conflicts.Store(2)
	c, _ := newCloud(t, func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodPut && conflicts.Add(-1) >= 0 {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusPreconditionFailed)
				_, _ = w.Write([]byte(`{"errorCode":1000,"errorMessage":"precondition failed"}`))
				return
			}
			next.ServeHTTP(w, r)
		})
	})
	ctx := context.Background()
	spec := vnccloud.Spec{Action: vnccloud.ActionConnect, Groups: []string{"a"}}
	created := cloudop.Perform(ctx, c, cloudop.Direct, cloudop.Task{Op: fleet.OpCreate, Spec: spec})
	require.Equal(t, fleet.Created, created.Outcome)
	spec.Groups = []string{"b"}
	rep := cloudop.Perform(ctx, c, cloudop.Direct, cloudop.Task{Op: fleet.OpUpdate, Spec: spec, CloudAddress: created.Address})
	require.Equal(t, fleet.Applied, rep.Outcome, "%v", rep.Err)
	require.Equal(t, []string{"get", "update", "get", "update", "get", "update"}, operations(rep.Calls))
}

// addressOf is the simulator's state of one address.
func addressOf(s *sim.Server, addr string) sim.AddressState {
	for _, a := range s.State().Accounts[apiKey].Addresses {
		if a.CloudAddress == addr {
			return a
		}
	}
	return sim.AddressState{}
}
