package webhook_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/stretchr/testify/require"

	"github.com/vncfleet/vncfleet/internal/dbtest"
	"github.com/vncfleet/vncfleet/internal/webhook"
	"github.com/vncfleet/vncfleet/ratelimit"
)

const secret = "hook-secret"

// delivery is one request a receiver got.
type delivery struct {
	at     time.Time
	header http.Header
	body   []byte
	verify error
	path   string
	user   string
	pass   string
}

// receiver is a real HTTP receiver that answers with respond (204 when nil) and keeps
// every request.
type receiver struct {
	mu      sync.Mutex
	got     []delivery
	respond func(w http.ResponseWriter, n int) bool // n: this delivery id's call count; true if it answered
	srv     *httptest.Server
}

func newReceiver(t *testing.T, respond func(w http.ResponseWriter, n int) bool) *receiver {
	rc := &receiver{respond: respond}
	rc.srv = httptest.NewServer(rc)
	t.Cleanup(rc.srv.Close)
	return rc
}

func (rc *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	user, pass, _ := r.BasicAuth()
	d := delivery{at: time.Now(), header: r.Header.Clone(), body: body, path: r.URL.Path, user: user, pass: pass,
		verify: webhook.Verify([]byte(secret), r.Header, body, time.Now(), time.Minute)}
	rc.mu.Lock()
	rc.got = append(rc.got, d)
	n := rc.callsLocked(r.Header.Get(webhook.HeaderDelivery))
	rc.mu.Unlock()
	if rc.respond != nil && rc.respond(w, n) {
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (rc *receiver) callsLocked(id string) int {
	n := 0
	for _, d := range rc.got {
		if d.header.Get(webhook.HeaderDelivery) == id {
			n++
		}
	}
	return n
}

func (rc *receiver) deliveries() []delivery {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]delivery(nil), rc.got...)
}

// failFirst answers status to the first n calls of each event.
func failFirst(n, status int, retryAfter string) func(http.ResponseWriter, int) bool {
	return func(w http.ResponseWriter, call int) bool {
		if call > n {
			return false
		}
		if retryAfter != "" {
			w.Header().Set("Retry-After", retryAfter)
		}
		w.WriteHeader(status)
		return true
	}
}

// fastConfig retries within milliseconds so that tests run quickly.
func fastConfig(url string) webhook.Config {
	return webhook.Config{URL: url, Secret: secret, Rate: 1000, BackoffInitial: 10 * time.Millisecond,
		BackoffMax: 20 * time.Millisecond, Timeout: 2 * time.Second}
}

func newWorker(t *testing.T, cfg webhook.Config, pool *pgxpool.Pool, lim ratelimit.Limiter) *webhook.DispatchWorker {
	t.Helper()
	w, err := webhook.NewDispatchWorker(cfg, pool, lim)
	require.NoError(t, err)
	return w
}

func insert(t *testing.T, pool *pgxpool.Pool, typ, payload string) int64 {
	t.Helper()
	var id int64
	require.NoError(t, pool.QueryRow(context.Background(),
		`INSERT INTO webhook_events (event_type, payload) VALUES ($1, $2) RETURNING id`, typ, payload).Scan(&id))
	return id
}

type row struct {
	Attempts    int
	Delivered   bool
	Dead        bool
	Claimed     bool
	LastStatus  *int
	LastError   *string
	NextAttempt time.Duration // from now
}

func load(t *testing.T, pool *pgxpool.Pool, id int64) row {
	t.Helper()
	var r row
	var next float64
	require.NoError(t, pool.QueryRow(context.Background(), `
		SELECT attempts, delivered_at IS NOT NULL, dead_at IS NOT NULL, claim_until IS NOT NULL,
		       last_status, last_error, extract(epoch FROM next_attempt_at - now())
		FROM webhook_events WHERE id = $1`, id).
		Scan(&r.Attempts, &r.Delivered, &r.Dead, &r.Claimed, &r.LastStatus, &r.LastError, &next))
	r.NextAttempt = time.Duration(next * float64(time.Second))
	return r
}

func work(t *testing.T, w *webhook.DispatchWorker) {
	t.Helper()
	require.NoError(t, w.Work(context.Background(), &river.Job[webhook.DispatchArgs]{}))
}

// driveUntil runs the worker as the periodic job would until done holds.
func driveUntil(t *testing.T, w *webhook.DispatchWorker, within time.Duration, done func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !done() {
		require.True(t, time.Now().Before(deadline), "condition not reached within %s", within)
		work(t, w)
		time.Sleep(15 * time.Millisecond)
	}
}

func TestSignMatchesAnIndependentHMAC(t *testing.T) {
	t.Parallel()
	// printf '1700000000.{"id":1}' | openssl dgst -sha256 -hmac hook-secret
	require.Equal(t, "v1=e4b31a06ef37c736c5ad75c8068d0cf126a4586fb412de6a631d39a792484fda",
		webhook.Sign([]byte(secret), 1700000000, []byte(`{"id":1}`)))
}

func TestVerify(t *testing.T) {
	t.Parallel()
	body := []byte(`{"id":1,"type":"device.ready"}`)
	const ts = 1700000000
	signed := func() http.Header {
		h := http.Header{}
		h.Set(webhook.HeaderTimestamp, strconv.Itoa(ts))
		h.Set(webhook.HeaderSignature, webhook.Sign([]byte(secret), ts, body))
		return h
	}
	tests := map[string]struct {
		secret    string
		header    func() http.Header
		body      []byte
		now       time.Time
		tolerance time.Duration
		want      error
	}{
		"valid":                    {secret: secret, header: signed, body: body, now: time.Unix(ts+10, 0), tolerance: time.Minute},
		"valid, default tolerance": {secret: secret, header: signed, body: body, now: time.Unix(ts+299, 0)},
		"tampered body": {secret: secret, header: signed, body: []byte(`{"id":2,"type":"device.ready"}`),
			now: time.Unix(ts, 0), tolerance: time.Minute, want: webhook.ErrBadSignature},
		"wrong secret": {secret: "other", header: signed, body: body, now: time.Unix(ts, 0), tolerance: time.Minute,
			want: webhook.ErrBadSignature},
		"stale timestamp": {secret: secret, header: signed, body: body, now: time.Unix(ts+61, 0), tolerance: time.Minute,
			want: webhook.ErrStaleTimestamp},
		"timestamp from the future": {secret: secret, header: signed, body: body, now: time.Unix(ts-61, 0),
			tolerance: time.Minute, want: webhook.ErrStaleTimestamp},
		"stale, default tolerance": {secret: secret, header: signed, body: body, now: time.Unix(ts+301, 0),
			want: webhook.ErrStaleTimestamp},
		"replayed with a new timestamp": {secret: secret, header: func() http.Header {
			h := signed()
			h.Set(webhook.HeaderTimestamp, strconv.Itoa(ts+30))
			return h
		}, body: body, now: time.Unix(ts+30, 0), tolerance: time.Minute, want: webhook.ErrBadSignature},
		"missing timestamp": {secret: secret, header: func() http.Header {
			h := signed()
			h.Del(webhook.HeaderTimestamp)
			return h
		}, body: body, now: time.Unix(ts, 0), tolerance: time.Minute, want: webhook.ErrMissingTimestamp},
		"missing signature": {secret: secret, header: func() http.Header {
			h := signed()
			h.Del(webhook.HeaderSignature)
			return h
		}, body: body, now: time.Unix(ts, 0), tolerance: time.Minute, want: webhook.ErrBadSignature},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			err := webhook.Verify([]byte(tt.secret), tt.header(), tt.body, tt.now, tt.tolerance)
			if tt.want == nil {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, tt.want)
		})
	}
}

func TestSignedDelivery(t *testing.T) {
	t.Parallel()
	pool, _ := dbtest.New(t)
	rc := newReceiver(t, nil)
	w := newWorker(t, fastConfig(rc.srv.URL), pool, nil)
	payload := `{"fleet":"line-7","deviceId":"d1","cloudAddress":"addr-1","status":"ready","error":null}`
	id := insert(t, pool, webhook.EventReady, payload)

	before := time.Now().Add(-time.Second)
	work(t, w)

	got := rc.deliveries()
	require.Len(t, got, 1)
	d := got[0]
	require.NoError(t, d.verify)
	require.Equal(t, "application/json", d.header.Get("Content-Type"))
	require.Equal(t, "vncfleet-webhook", d.header.Get("User-Agent"))
	require.Equal(t, webhook.EventReady, d.header.Get(webhook.HeaderEvent))
	require.Equal(t, strconv.FormatInt(id, 10), d.header.Get(webhook.HeaderDelivery))
	require.Equal(t, "1", d.header.Get(webhook.HeaderAttempt))
	ts, err := strconv.ParseInt(d.header.Get(webhook.HeaderTimestamp), 10, 64)
	require.NoError(t, err)
	require.WithinDuration(t, time.Now(), time.Unix(ts, 0), 5*time.Second)

	var body struct {
		ID         int64           `json:"id"`
		Type       string          `json:"type"`
		OccurredAt time.Time       `json:"occurredAt"`
		Data       json.RawMessage `json:"data"`
	}
	require.NoError(t, json.Unmarshal(d.body, &body))
	require.Equal(t, id, body.ID)
	require.Equal(t, webhook.EventReady, body.Type)
	require.True(t, body.OccurredAt.After(before) && body.OccurredAt.Before(time.Now()), "occurredAt %s", body.OccurredAt)
	require.JSONEq(t, payload, string(body.Data))

	r := load(t, pool, id)
	require.Equal(t, row{Attempts: 1, Delivered: true, LastStatus: ptr(204), NextAttempt: r.NextAttempt}, r)

	work(t, w)
	require.Len(t, rc.deliveries(), 1, "a delivered event is not sent again")
}

func TestRetries(t *testing.T) {
	t.Parallel()
	tests := map[string]struct {
		respond       func(http.ResponseWriter, int) bool
		maxAttempts   int
		wantCalls     int
		wantDelivered bool
		wantStatus    int
		wantObserved  []string // outcomes told to Config.Observe, in order
	}{
		"accepted on the third attempt after two 500s": {
			respond: failFirst(2, 500, ""), maxAttempts: 10, wantCalls: 3, wantDelivered: true, wantStatus: 204,
			wantObserved: []string{"failed", "failed", "delivered"},
		},
		"dead after MaxAttempts": {
			respond: failFirst(1000, 503, ""), maxAttempts: 3, wantCalls: 3, wantStatus: 503,
			wantObserved: []string{"failed", "failed", "dead"},
		},
		"a redirect is not followed and counts as a failure": {
			respond: func(w http.ResponseWriter, _ int) bool {
				w.Header().Set("Location", "/elsewhere")
				w.WriteHeader(http.StatusFound)
				return true
			},
			maxAttempts: 2, wantCalls: 2, wantStatus: 302, wantObserved: []string{"failed", "dead"},
		},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			pool, _ := dbtest.New(t)
			rc := newReceiver(t, tt.respond)
			cfg := fastConfig(rc.srv.URL)
			cfg.MaxAttempts = tt.maxAttempts
			var mu sync.Mutex
			var observed []string
			cfg.Observe = func(eventType, outcome string) {
				mu.Lock()
				defer mu.Unlock()
				require.Equal(t, webhook.EventRotated, eventType)
				observed = append(observed, outcome)
			}
			w := newWorker(t, cfg, pool, nil)
			id := insert(t, pool, webhook.EventRotated, `{"deviceId":"d1"}`)

			driveUntil(t, w, 10*time.Second, func() bool { r := load(t, pool, id); return r.Delivered || r.Dead })
			// Runs after the end change nothing.
			for range 5 {
				work(t, w)
				time.Sleep(25 * time.Millisecond)
			}

			got := rc.deliveries()
			require.Len(t, got, tt.wantCalls)
			for i, d := range got {
				require.NoError(t, d.verify, "attempt %d signed", i+1)
				require.Equal(t, strconv.Itoa(i+1), d.header.Get(webhook.HeaderAttempt))
				require.Equal(t, got[0].body, d.body, "every attempt carries the same body")
				require.Equal(t, "/", d.path, "only the configured URL is posted to")
			}
			mu.Lock()
			require.Equal(t, tt.wantObserved, observed, "each recorded attempt observed once")
			mu.Unlock()
			r := load(t, pool, id)
			require.Equal(t, tt.wantCalls, r.Attempts)
			require.Equal(t, tt.wantDelivered, r.Delivered)
			require.Equal(t, !tt.wantDelivered, r.Dead)
			require.False(t, r.Claimed)
			require.Equal(t, ptr(tt.wantStatus), r.LastStatus)
			if tt.wantDelivered {
				require.Nil(t, r.LastError)
			} else {
				require.NotNil(t, r.LastError)
				require.Contains(t, *r.LastError, strconv.Itoa(tt.wantStatus))
			}
		})
	}
}

func TestRetryAfter(t *testing.T) {
	t.Parallel()
	tests := map[string]struct {
		status     int
		retryAfter func() string
		wantWait   time.Duration // minimum wait before the next delivery; 0: only the backoff
	}{
		"429 with seconds": {status: 429, retryAfter: func() string { return "2" }, wantWait: 1900 * time.Millisecond},
		"503 with an HTTP date": {status: 503, retryAfter: func() string {
			return time.Now().Add(3 * time.Second).UTC().Format(http.TimeFormat)
		}, wantWait: 1900 * time.Millisecond}, // the date has one-second resolution
		"ignored on a 500": {status: 500, retryAfter: func() string { return "3600" }},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			pool, _ := dbtest.New(t)
			var calls int
			var mu sync.Mutex
			rc := newReceiver(t, func(w http.ResponseWriter, _ int) bool {
				mu.Lock()
				defer mu.Unlock()
				if calls++; calls > 1 {
					return false
				}
				w.Header().Set("Retry-After", tt.retryAfter())
				w.WriteHeader(tt.status)
				return true
			})
			cfg := fastConfig(rc.srv.URL)
			// A backoff no slow run of Work can outlast, so that the one attempt
			// is the one looked at (fastConfig's 10 ms could be due again at once).
			cfg.BackoffInitial, cfg.BackoffMax = 300*time.Millisecond, 600*time.Millisecond
			w := newWorker(t, cfg, pool, nil)
			id := insert(t, pool, webhook.EventDeleted, `{"deviceId":"d1"}`)

			work(t, w)
			r := load(t, pool, id)
			require.Equal(t, 1, r.Attempts)
			require.Equal(t, ptr(tt.status), r.LastStatus)
			if tt.wantWait > 0 {
				require.Greater(t, r.NextAttempt, tt.wantWait-500*time.Millisecond, "next attempt scheduled after Retry-After")
				require.Less(t, r.NextAttempt, 4*time.Second)
			} else {
				require.Less(t, r.NextAttempt, time.Second, "the backoff, not a Retry-After of an hour")
			}

			// An event that is due at once still waits: the receiver asked for a pause.
			other := insert(t, pool, webhook.EventDeleted, `{"deviceId":"d2"}`)
			driveUntil(t, w, 10*time.Second, func() bool {
				return load(t, pool, id).Delivered && load(t, pool, other).Delivered
			})
			got := rc.deliveries()
			require.Len(t, got, 3)
			for _, d := range got[1:] {
				wait := d.at.Sub(got[0].at)
				if tt.wantWait > 0 {
					require.GreaterOrEqual(t, wait, tt.wantWait, "delivery %s", d.header.Get(webhook.HeaderDelivery))
				} else {
					require.Less(t, wait, time.Second, "delivery %s", d.header.Get(webhook.HeaderDelivery))
				}
			}
		})
	}
}

func TestNoURLDeliversNothing(t *testing.T) {
	t.Parallel()
	pool, _ := dbtest.New(t)
	w := newWorker(t, webhook.Config{}, pool, nil)
	id := insert(t, pool, webhook.EventFailed, `{"deviceId":"d1"}`)
	work(t, w)
	r := load(t, pool, id)
	require.Equal(t, 0, r.Attempts)
	require.False(t, r.Delivered || r.Dead || r.Claimed, "the event stays as it was")
}

// TestCredentialsStayOutOfLogsAndErrors: the URL's userinfo and query and the signing
// secret appear in no log line and no recorded error.
func TestCredentialsStayOutOfLogsAndErrors(t *testing.T) {
	t.Parallel()
	const password, token = "pw-s3cr3t-9f2", "tok-8c1e55"
	tests := map[string]struct {
		closed bool // the receiver is down: a transport error
	}{
		"receiver answers 500": {},
		"receiver unreachable": {closed: true},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			pool, _ := dbtest.New(t)
			rc := newReceiver(t, failFirst(1000, 500, ""))
			if tt.closed {
				rc.srv.Close()
			}
			var logs bytes.Buffer
			cfg := fastConfig(strings.Replace(rc.srv.URL, "http://", "http://hooks:"+password+"@", 1) + "/in?token=" + token)
			cfg.MaxAttempts = 2
			cfg.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
			w := newWorker(t, cfg, pool, nil)
			id := insert(t, pool, webhook.EventReady, `{"deviceId":"d1"}`)
			driveUntil(t, w, 10*time.Second, func() bool { return load(t, pool, id).Dead })

			r := load(t, pool, id)
			require.NotNil(t, r.LastError)
			if tt.closed {
				require.Nil(t, r.LastStatus)
				require.Empty(t, rc.deliveries())
			} else {
				got := rc.deliveries()
				require.Len(t, got, 2)
				require.Equal(t, "hooks", got[0].user)
				require.Equal(t, password, got[0].pass, "the userinfo is used for the request")
			}
			out := logs.String()
			require.Contains(t, out, "dead after its last attempt")
			require.Contains(t, out, "redacted", "the URL is logged, redacted")
			for _, leak := range []string{password, token, secret} {
				require.NotContains(t, out, leak)
				require.NotContains(t, *r.LastError, leak)
			}
		})
	}
}

func TestRedact(t *testing.T) {
	t.Parallel()
	tests := map[string]struct{ in, want string }{
		"plain":      {"https://hooks.example.com/in", "https://hooks.example.com/in"},
		"userinfo":   {"https://u:pw@hooks.example.com/in", "https://redacted@hooks.example.com/in"},
		"query":      {"https://hooks.example.com/in?token=abc&x=1", "https://hooks.example.com/in?token=redacted&x=redacted"},
		"unparsable": {"http://u:pw@[::1/x", "(unparsable URL)"},
		"empty":      {"", ""},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			require.Equal(t, tt.want, webhook.Redact(tt.in))
		})
	}
}

func TestNewDispatchWorkerRejects(t *testing.T) {
	t.Parallel()
	pool, _ := dbtest.New(t)
	tests := map[string]webhook.Config{
		"no secret":      {URL: "https://hooks.example.com"},
		"not http":       {URL: "ftp://hooks.example.com", Secret: "s"},
		"relative":       {URL: "/hooks", Secret: "s"},
		"unparsable URL": {URL: "http://u:pw-leak@[::1/x", Secret: "s"},
		"control in URL": {URL: "http://u:pw-leak@h\x7f/", Secret: "s"},
	}
	for name, cfg := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			_, err := webhook.NewDispatchWorker(cfg, pool, nil)
			require.ErrorIs(t, err, webhook.ErrInvalidConfig)
			require.NotContains(t, err.Error(), "pw-leak")
		})
	}
}

// TestWorkersShareNothing: two processes' workers running at once deliver every
// event exactly once between them.
func TestWorkersShareNothing(t *testing.T) {
	t.Parallel()
	pool, _ := dbtest.New(t)
	rc := newReceiver(t, func(http.ResponseWriter, int) bool {
		time.Sleep(5 * time.Millisecond) // keep both workers' claims in flight together
		return false
	})
	cfg := fastConfig(rc.srv.URL)
	cfg.BatchSize = 7
	w1, w2 := newWorker(t, cfg, pool, nil), newWorker(t, cfg, pool, nil)
	const n = 60
	for i := range n {
		insert(t, pool, webhook.EventReady, `{"deviceId":"d`+strconv.Itoa(i)+`"}`)
	}
	var wg sync.WaitGroup
	for _, w := range []*webhook.DispatchWorker{w1, w2} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			require.NoError(t, w.Work(context.Background(), &river.Job[webhook.DispatchArgs]{}))
		}()
	}
	wg.Wait()

	seen := map[string]int{}
	for _, d := range rc.deliveries() {
		seen[d.header.Get(webhook.HeaderDelivery)]++
	}
	require.Len(t, seen, n)
	for id, c := range seen {
		require.Equal(t, 1, c, "event %s", id)
	}
	var left int
	require.NoError(t, pool.QueryRow(context.Background(),
		`SELECT count(*) FROM webhook_events WHERE delivered_at IS NULL`).Scan(&left))
	require.Zero(t, left)
}

func TestClaims(t *testing.T) {
	t.Parallel()
	pool, _ := dbtest.New(t)
	rc := newReceiver(t, nil)
	w := newWorker(t, fastConfig(rc.srv.URL), pool, nil)
	held := insert(t, pool, webhook.EventReady, `{"deviceId":"held"}`)
	expired := insert(t, pool, webhook.EventReady, `{"deviceId":"expired"}`)
	later := insert(t, pool, webhook.EventReady, `{"deviceId":"later"}`)
	ctx := context.Background()
	_, err := pool.Exec(ctx, `UPDATE webhook_events SET claim_until = now() + interval '1 hour' WHERE id = $1`, held)
	require.NoError(t, err)
	_, err = pool.Exec(ctx, `UPDATE webhook_events SET claim_until = now() - interval '1 second' WHERE id = $1`, expired)
	require.NoError(t, err)
	_, err = pool.Exec(ctx, `UPDATE webhook_events SET next_attempt_at = now() + interval '1 hour' WHERE id = $1`, later)
	require.NoError(t, err)

	work(t, w)

	require.False(t, load(t, pool, held).Delivered, "another process's live claim is respected")
	require.True(t, load(t, pool, expired).Delivered, "a dead process's expired claim is taken over")
	require.False(t, load(t, pool, later).Delivered, "an event is not sent before its next attempt")
	require.Len(t, rc.deliveries(), 1)
}

// failingLimiter never lets a request go.
type failingLimiter struct{ ratelimit.Limiter }

var errLimiterDown = errors.New("limiter down")

func (failingLimiter) Wait(context.Context) error { return errLimiterDown }

func TestUnsentIsNotAnAttempt(t *testing.T) {
	t.Parallel()
	pool, _ := dbtest.New(t)
	rc := newReceiver(t, nil)
	w := newWorker(t, fastConfig(rc.srv.URL), pool, failingLimiter{})
	id := insert(t, pool, webhook.EventReady, `{"deviceId":"d1"}`)

	err := w.Work(context.Background(), &river.Job[webhook.DispatchArgs]{})
	require.ErrorIs(t, err, errLimiterDown)
	require.Empty(t, rc.deliveries())
	r := load(t, pool, id)
	require.Equal(t, 0, r.Attempts)
	require.False(t, r.Claimed, "the claim is released for the next run")
	require.False(t, r.Delivered || r.Dead)
}

func TestDeliveredEventsArePruned(t *testing.T) {
	t.Parallel()
	pool, _ := dbtest.New(t)
	rc := newReceiver(t, nil)
	w := newWorker(t, fastConfig(rc.srv.URL), pool, nil)
	ctx := context.Background()
	set := func(id int64, sql string) {
		_, err := pool.Exec(ctx, `UPDATE webhook_events SET `+sql+` WHERE id = $1`, id)
		require.NoError(t, err)
	}
	oldDelivered := insert(t, pool, webhook.EventReady, `{}`)
	set(oldDelivered, `delivered_at = now() - interval '8 days'`)
	newDelivered := insert(t, pool, webhook.EventReady, `{}`)
	set(newDelivered, `delivered_at = now() - interval '6 days'`)
	oldDead := insert(t, pool, webhook.EventReady, `{}`)
	set(oldDead, `dead_at = now() - interval '30 days'`)

	work(t, w)

	var ids []int64
	rows, err := pool.Query(ctx, `SELECT id FROM webhook_events ORDER BY id`)
	require.NoError(t, err)
	for rows.Next() {
		var id int64
		require.NoError(t, rows.Scan(&id))
		ids = append(ids, id)
	}
	require.NoError(t, rows.Err())
	require.Equal(t, []int64{newDelivered, oldDead}, ids)
}

func ptr[T any](v T) *T { return &v }

// TestExpiredClaimRecordsNoFailure: when a run's lease has run out and another process
// has claimed the event meanwhile, the first run's failure is not recorded over the
// newer claim; a success still is, because it happened.
func TestExpiredClaimRecordsNoFailure(t *testing.T) {
	t.Parallel()
	tests := map[string]struct {
		status        int
		wantDelivered bool
	}{
		"failure is dropped":  {status: 500},
		"success is recorded": {status: 204, wantDelivered: true},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			pool, _ := dbtest.New(t)
			rc := newReceiver(t, func(w http.ResponseWriter, _ int) bool {
				// Another process takes the event over while this delivery is in flight.
				_, err := pool.Exec(context.Background(), `UPDATE webhook_events SET claim_until = now() + interval '1 hour'`)
				if err != nil {
					t.Error(err)
				}
				w.WriteHeader(tt.status)
				return true
			})
			w := newWorker(t, fastConfig(rc.srv.URL), pool, nil)
			id := insert(t, pool, webhook.EventReady, `{"deviceId":"d1"}`)

			work(t, w)

			r := load(t, pool, id)
			require.Len(t, rc.deliveries(), 1)
			require.Equal(t, tt.wantDelivered, r.Delivered)
			if tt.wantDelivered {
				require.Equal(t, 1, r.Attempts)
				return
			}
			require.Equal(t, 0, r.Attempts, "the newer claim's record is left alone")
			require.True(t, r.Claimed)
			require.Nil(t, r.LastStatus)
		})
	}
}

// TestSecretRotationOverlap: while a previous secret is configured, each delivery is
// signed by both, so receivers on the old secret and on the new one both verify it,
// and a receiver on neither does not.
func TestSecretRotationOverlap(t *testing.T) {
	t.Parallel()
	pool, _ := dbtest.New(t)
	rc := newReceiver(t, nil)
	const newSecret = "the-new-hook-secret"
	cfg := fastConfig(rc.srv.URL)
	cfg.Secret, cfg.PreviousSecret = newSecret, secret
	w := newWorker(t, cfg, pool, nil)
	insert(t, pool, webhook.EventReady, `{"fleet":"f","deviceId":"d1"}`)
	work(t, w)

	got := rc.deliveries()
	require.Len(t, got, 1)
	d := got[0]
	require.NoError(t, d.verify, "a receiver still on the previous secret verifies")
	require.NoError(t, webhook.Verify([]byte(newSecret), d.header, d.body, time.Now(), time.Minute), "a receiver on the new secret verifies")
	require.ErrorIs(t, webhook.Verify([]byte("some-other-secret"), d.header, d.body, time.Now(), time.Minute), webhook.ErrBadSignature)
	ts, err := strconv.ParseInt(d.header.Get(webhook.HeaderTimestamp), 10, 64)
	require.NoError(t, err)
	require.Equal(t, webhook.Sign([]byte(newSecret), ts, d.body)+", "+webhook.Sign([]byte(secret), ts, d.body),
		d.header.Get(webhook.HeaderSignature), "the new secret's signature first")
}
