// Package webhook announces device events (device.ready, device.rotated,
// device.failed, device.deleted) to one receiver, so that a factory pipeline or an MDM
// can push a device's new password to it. Deliveries are signed with HMAC-SHA256,
// made at least once, retried with exponential backoff and paced by a rate limiter of
// their own, separate from VNC Cloud's.
//
// Events come from a transactional outbox, the webhook_events table: the store inserts
// a row in the same transaction as the device change it announces, so no event is lost
// and none announces a change that rolled back. The store inserts events only while a
// URL is configured; a DispatchWorker without a URL delivers nothing and leaves any rows
// where they are. The dispatcher runs as a periodic River job: each run claims due
// events with a lease (FOR UPDATE SKIP LOCKED, so processes never share an event),
// posts them, and records the outcome, until nothing is due or its time budget is spent.
//
// A body never holds a password (a receiver fetches it from the credentials
// endpoint); the signing secret is never logged; the URL's userinfo and query, which
// may hold credentials, are redacted from logs and recorded errors. Receivers dedupe
// on the X-Vncfleet-Delivery header (the event id) and must not rely on order.
package webhook

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"

	"github.com/vncfleet/vncfleet/ratelimit"
)

// Event types the store records.
const (
	EventReady   = "device.ready"
	EventRotated = "device.rotated"
	EventFailed  = "device.failed"
	EventDeleted = "device.deleted"
)

// Headers of a delivery.
const (
	HeaderEvent     = "X-Vncfleet-Event"
	HeaderDelivery  = "X-Vncfleet-Delivery" // the event id: the same on every attempt, for dedupe
	HeaderAttempt   = "X-Vncfleet-Attempt"  // 1 for the first attempt
	HeaderTimestamp = "X-Vncfleet-Timestamp"
	HeaderSignature = "X-Vncfleet-Signature"
	userAgent       = "vncfleet-webhook"
)

// Errors of Verify, for receivers that answer differently to each.
var (
	ErrMissingTimestamp = errors.New("webhook: missing or malformed " + HeaderTimestamp)
	ErrStaleTimestamp   = errors.New("webhook: timestamp outside the tolerance")
	ErrBadSignature     = errors.New("webhook: signature does not match")
)

// ErrInvalidConfig is returned by NewDispatchWorker for a configuration it cannot use.
var ErrInvalidConfig = errors.New("webhook: invalid configuration")

// DefaultTolerance is the clock skew Verify accepts when given no tolerance.
const DefaultTolerance = 5 * time.Minute

// Sign is "v1=" + hex(HMAC-SHA256(secret, "<timestamp>." + body)). The timestamp is
// signed with the body, so a captured delivery cannot be replayed later as new.
func Sign(secret []byte, timestamp int64, body []byte) string {
	mac := hmac.New(sha256.New, secret)
	fmt.Fprintf(mac, "%d.", timestamp)
	mac.Write(body)
	return "v1=" + hex.EncodeToString(mac.Sum(nil))
}

// Verify checks a delivery: that one of its signatures is by secret over the timestamp
// and body, and that the timestamp is within tolerance of now (DefaultTolerance when
// tolerance ≤ 0). The errors are ErrMissingTimestamp, ErrStaleTimestamp and
// ErrBadSignature. A receiver should also dedupe on HeaderDelivery, since a delivery
// may be repeated.
//
// HeaderSignature holds one signature, or, while the sender rotates its secret, a
// comma-separated list (the new secret's first): a receiver accepts the delivery when
// any of them matches its secret, so it may switch secrets at any time during the
// overlap.
func Verify(secret []byte, header http.Header, body []byte, now time.Time, tolerance time.Duration) error {
	if tolerance <= 0 {
		tolerance = DefaultTolerance
	}
	ts, err := strconv.ParseInt(strings.TrimSpace(header.Get(HeaderTimestamp)), 10, 64)
	if err != nil {
		return ErrMissingTimestamp
	}
	if d := now.Sub(time.Unix(ts, 0)); d > tolerance || -d > tolerance {
		return ErrStaleTimestamp
	}
	want := []byte(Sign(secret, ts, body))
	for sig := range strings.SplitSeq(header.Get(HeaderSignature), ",") {
		// Constant-time comparison: a timing difference must not reveal a valid prefix.
		if hmac.Equal([]byte(strings.TrimSpace(sig)), want) {
			return nil
		}
	}
	return ErrBadSignature
}

// signatures is HeaderSignature's value: a signature by each secret, in order.
func signatures(secrets []string, timestamp int64, body []byte) string {
	sigs := make([]string, 0, len(secrets))
	for _, s := range secrets {
		if s != "" {
			sigs = append(sigs, Sign([]byte(s), timestamp, body))
		}
	}
	return strings.Join(sigs, ", ")
}

// Config configures delivery. Zero fields take the defaults named on each.
type Config struct {
	// URL receives every event as a POST. Empty disables delivery: the worker does
	// nothing, and the application then does not record events either. Userinfo and
	// query are allowed (some receivers authenticate that way) and are redacted
	// wherever the URL would be logged.
	URL string
	// Secret is the HMAC key of the signature. Required when URL is set: an unsigned
	// announcement of a new password would let anyone trigger a push to a device.
	Secret string
	// PreviousSecret, during a rotation of Secret, signs every delivery too (its
	// signature follows Secret's in HeaderSignature), so a receiver still holding it
	// keeps verifying until it switches. Empty: one signature.
	PreviousSecret string
	// Rate is deliveries per second. Defaults to 5, a pace any small receiver takes;
	// it only sizes the limiter built when NewDispatchWorker is given none.
	Rate float64
	// MaxAttempts is how many deliveries of an event fail before it is dead (kept, with
	// dead_at set, but no longer tried). Defaults to 10, which with the default backoff
	// spans about four hours: enough to ride out a receiver's deploy or outage.
	MaxAttempts int
	// Timeout bounds one delivery, connection included. Defaults to 10 seconds: a
	// receiver should acknowledge and work asynchronously.
	Timeout time.Duration
	// BackoffInitial and BackoffMax shape the exponential backoff between attempts of
	// one event (doubling, with ±50% jitter so that events that failed together do not
	// retry together). Defaults 5 seconds and 1 hour. A Retry-After on a 429 or 503
	// answer lengthens the wait (up to 24 hours), never shortens it.
	BackoffInitial, BackoffMax time.Duration
	// HTTPClient sends deliveries. Defaults to a client that does not follow
	// redirects: a signed body goes to the configured URL and nowhere else, and a
	// redirect counts as a failure that shows in last_status.
	HTTPClient *http.Client
	// Logger receives delivery failures and dead events. Defaults to discarding.
	Logger *slog.Logger
	// BatchSize is how many due events one claim takes. Defaults to 50: ten seconds of
	// deliveries at the default rate, so a claim is neither a round trip per event nor
	// a lease over more than a run can send.
	BatchSize int
	// Retention is how long delivered events are kept before each run deletes them (a
	// bounded number per run). Defaults to 7 days; negative keeps them for ever. Dead
	// events are never deleted, so that an operator can see and replay them.
	Retention time.Duration
	// Observe, when set, is told of each delivery attempt once its outcome is
	// recorded: the event type and "delivered", "failed" or "dead". Defaults to nil.
	Observe func(eventType, outcome string)
}

const (
	// runBudget bounds one run; the periodic job starts the next one.
	runBudget = 20 * time.Second
	// maxRetryAfter caps a receiver's Retry-After, so a bogus value cannot park an
	// event for ever.
	maxRetryAfter = 24 * time.Hour
	// recordTimeout bounds recording a batch's outcomes, which must happen even when
	// the job's context has ended: deliveries that were made must not be made again.
	recordTimeout = 10 * time.Second
	// pruneBatch is how many delivered events one run deletes at most.
	pruneBatch = 1000
	// maxErrorLen bounds last_error.
	maxErrorLen = 500
)

// The defaults of Config that the configuration layer shows too.
const (
	DefaultRate        = 5
	DefaultMaxAttempts = 10
)

func (c *Config) setDefaults() {
	if c.Rate <= 0 {
		c.Rate = DefaultRate
	}
	if c.MaxAttempts <= 0 {
		c.MaxAttempts = DefaultMaxAttempts
	}
	if c.Timeout <= 0 {
		c.Timeout = 10 * time.Second
	}
	if c.BackoffInitial <= 0 {
		c.BackoffInitial = 5 * time.Second
	}
	if c.BackoffMax <= 0 {
		c.BackoffMax = time.Hour
	}
	if c.BackoffMax < c.BackoffInitial {
		c.BackoffMax = c.BackoffInitial
	}
	if c.BatchSize <= 0 {
		c.BatchSize = 50
	}
	if c.Retention == 0 {
		c.Retention = 7 * 24 * time.Hour
	}
	if c.HTTPClient == nil {
		c.HTTPClient = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		}}
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// DispatchArgs runs the dispatcher once. It is a periodic job; MaxAttempts 1 because
// the next period is the retry, and unique while queued or running so that a slow
// run is not joined by a pile of others.
type DispatchArgs struct{}

func (DispatchArgs) Kind() string { return "webhook_dispatch" }

func (DispatchArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{
		MaxAttempts: 1,
		UniqueOpts: river.UniqueOpts{ByState: []rivertype.JobState{
			rivertype.JobStateAvailable, rivertype.JobStatePending, rivertype.JobStateScheduled, rivertype.JobStateRunning,
		}},
	}
}

// DispatchWorker delivers due events from the outbox.
type DispatchWorker struct {
	river.WorkerDefaults[DispatchArgs]
	cfg     Config
	pool    *pgxpool.Pool
	limiter ratelimit.Limiter
	target  string // the URL as it may be logged

	mu          sync.Mutex
	pausedUntil time.Time // a receiver's Retry-After, seen by this process
}

// NewDispatchWorker builds the worker. limiter paces deliveries (share one across
// processes with ratelimit.NewCluster); nil builds a local one at cfg.Rate. An empty
// cfg.URL gives a worker that does nothing.
func NewDispatchWorker(cfg Config, pool *pgxpool.Pool, limiter ratelimit.Limiter) (*DispatchWorker, error) {
	if pool == nil {
		return nil, fmt.Errorf("%w: no database pool", ErrInvalidConfig)
	}
	if cfg.URL != "" {
		// url.Parse's error quotes the URL, credentials and all: report without it.
		u, err := url.Parse(cfg.URL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("%w: URL must be an absolute http(s) URL", ErrInvalidConfig)
		}
		if cfg.Secret == "" {
			return nil, fmt.Errorf("%w: a signing secret is required", ErrInvalidConfig)
		}
	}
	cfg.setDefaults()
	if limiter == nil {
		limiter = ratelimit.NewLocal(ratelimit.Config{Name: "webhook", Rate: cfg.Rate})
	}
	return &DispatchWorker{cfg: cfg, pool: pool, limiter: limiter, target: Redact(cfg.URL)}, nil
}

// Timeout lets a run finish its budget, its last deliveries and their recording.
func (w *DispatchWorker) Timeout(*river.Job[DispatchArgs]) time.Duration {
	return runBudget + w.cfg.Timeout + recordTimeout + 30*time.Second
}

// Redact returns rawURL without its password and with every query value replaced, for
// logs. A URL that does not parse is withheld entirely.
func Redact(rawURL string) string {
	if rawURL == "" {
		return ""
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		return "(unparsable URL)"
	}
	if u.User != nil {
		u.User = url.User("redacted")
	}
	if u.RawQuery != "" {
		q := u.Query()
		for k := range q {
			q[k] = []string{"redacted"}
		}
		u.RawQuery = q.Encode()
	}
	return u.String()
}

// event is one claimed outbox row.
type event struct {
	id        int64
	eventType string
	payload   json.RawMessage
	createdAt time.Time
	attempts  int       // failed attempts so far
	claim     time.Time // claim_until as set by this claim: fences the recording
}

// result of one event in a run.
type result struct {
	ev         event
	sent       bool // false: never left this process, so not an attempt
	delivered  bool
	status     int
	err        string
	retryAfter time.Duration
}

// Work delivers due events until none is due or the run's budget is spent. A
// delivery that has not started when the budget ends is released for the next run
// without counting as an attempt.
func (w *DispatchWorker) Work(ctx context.Context, _ *river.Job[DispatchArgs]) error {
	if w.cfg.URL == "" {
		return nil
	}
	if err := w.prune(ctx); err != nil {
		// Pruning is housekeeping: delivery goes on without it.
		w.cfg.Logger.Warn("webhook: pruning delivered events failed", "err", err)
	}
	stop := time.Now().Add(runBudget)
	for time.Now().Before(stop) {
		if w.paused() {
			return nil
		}
		// Every delivery of the claim ends by stop+Timeout; the lease outlasts that
		// and the recording, so no other process claims an event still in flight.
		lease := time.Until(stop) + w.cfg.Timeout + recordTimeout
		events, err := w.claim(ctx, lease)
		if err != nil || len(events) == 0 {
			return err
		}
		results, waitErr := w.deliverAll(ctx, stop, events)
		budgetSpent := !time.Now().Before(stop)
		recCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), recordTimeout)
		err = w.record(recCtx, results)
		cancel()
		switch {
		case err != nil:
			return err
		case ctx.Err() != nil:
			return ctx.Err()
		case waitErr != nil && !budgetSpent:
			// A limiter that fails (its database, say) would otherwise have this loop
			// claim and release the same events without pause.
			return fmt.Errorf("webhook: rate limiter: %w", waitErr)
		}
	}
	return nil
}

func (w *DispatchWorker) paused() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return time.Now().Before(w.pausedUntil)
}

func (w *DispatchWorker) pause(d time.Duration) {
	w.mu.Lock()
	if until := time.Now().Add(d); until.After(w.pausedUntil) {
		w.pausedUntil = until
	}
	w.mu.Unlock()
}

func (w *DispatchWorker) claim(ctx context.Context, lease time.Duration) ([]event, error) {
	rows, err := w.pool.Query(ctx, `
		UPDATE webhook_events SET claim_until = now() + $2::interval
		WHERE id IN (
			SELECT id FROM webhook_events
			WHERE delivered_at IS NULL AND dead_at IS NULL AND next_attempt_at <= now()
			  AND (claim_until IS NULL OR claim_until < now())
			ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED)
		RETURNING id, event_type, payload, created_at, attempts, claim_until`, w.cfg.BatchSize, lease)
	if err != nil {
		return nil, fmt.Errorf("webhook: claim events: %w", err)
	}
	events, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (event, error) {
		var ev event
		err := r.Scan(&ev.id, &ev.eventType, &ev.payload, &ev.createdAt, &ev.attempts, &ev.claim)
		return ev, err
	})
	if err != nil {
		return nil, fmt.Errorf("webhook: claim events: %w", err)
	}
	return events, nil
}

// deliverAll sends each event when the limiter allows, concurrently, so one slow
// receiver answer does not hold back the pace. No delivery starts after stop (one
// started before may take its full Timeout): events still waiting then are returned
// unsent, as are all after the limiter fails (its error is returned).
func (w *DispatchWorker) deliverAll(ctx context.Context, stop time.Time, events []event) ([]result, error) {
	waitCtx, cancel := context.WithDeadline(ctx, stop)
	defer cancel()
	results := make([]result, len(events))
	var waitErr error
	var wg sync.WaitGroup
	for i, ev := range events {
		results[i] = result{ev: ev}
		if waitErr != nil || waitCtx.Err() != nil || w.paused() {
			continue
		}
		if waitErr = w.limiter.Wait(waitCtx); waitErr != nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = w.deliver(ctx, ev)
			w.feedback(ctx, results[i])
		}()
	}
	wg.Wait()
	return results, waitErr
}

// feedback tells the limiter how the receiver coped, and honours its Retry-After for
// every event, not only the one it answered.
func (w *DispatchWorker) feedback(ctx context.Context, r result) {
	o := ratelimit.Failed
	switch {
	case r.delivered:
		o = ratelimit.OK
	case r.status == http.StatusTooManyRequests || r.status == http.StatusServiceUnavailable:
		o = ratelimit.Throttled
		if r.retryAfter > 0 {
			w.pause(r.retryAfter)
		}
	}
	if err := ratelimit.Feedback(ctx, w.limiter, o, r.retryAfter); err != nil {
		w.cfg.Logger.Warn("webhook: pausing the limiter failed", "err", err)
	}
}

// envelope is a delivery's body.
type envelope struct {
	ID         int64           `json:"id"`
	Type       string          `json:"type"`
	OccurredAt string          `json:"occurredAt"`
	Data       json.RawMessage `json:"data"`
}

func (w *DispatchWorker) deliver(ctx context.Context, ev event) result {
	res := result{ev: ev, sent: true}
	body, err := json.Marshal(envelope{
		ID: ev.id, Type: ev.eventType, OccurredAt: ev.createdAt.UTC().Format(time.RFC3339Nano), Data: ev.payload,
	})
	if err != nil {
		res.err = "encode body: " + err.Error()
		return res
	}
	ctx, cancel := context.WithTimeout(ctx, w.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.cfg.URL, bytes.NewReader(body))
	if err != nil {
		res.err = "build request: " + w.scrub(err)
		return res
	}
	ts := time.Now().Unix()
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", userAgent)
	req.Header.Set(HeaderEvent, ev.eventType)
	req.Header.Set(HeaderDelivery, strconv.FormatInt(ev.id, 10))
	req.Header.Set(HeaderAttempt, strconv.Itoa(ev.attempts+1))
	req.Header.Set(HeaderTimestamp, strconv.FormatInt(ts, 10))
	req.Header.Set(HeaderSignature, signatures([]string{w.cfg.Secret, w.cfg.PreviousSecret}, ts, body))
	resp, err := w.cfg.HTTPClient.Do(req)
	if err != nil {
		res.err = w.scrub(err)
		return res
	}
	// Drain a little so the connection can be reused; a receiver's body is not ours
	// to store.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	res.status = resp.StatusCode
	res.delivered = resp.StatusCode >= 200 && resp.StatusCode < 300
	if !res.delivered {
		res.err = "receiver answered " + resp.Status
		if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable {
			res.retryAfter = parseRetryAfter(resp.Header.Get("Retry-After"), time.Now())
		}
	}
	return res
}

// scrub turns a transport error into text that names neither the URL's credentials
// nor its query: *url.Error quotes the whole URL, so only its cause is kept.
func (w *DispatchWorker) scrub(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	msg := err.Error()
	if u, perr := url.Parse(w.cfg.URL); perr == nil {
		if pw, ok := u.User.Password(); ok && pw != "" {
			msg = strings.ReplaceAll(msg, pw, "redacted")
		}
		if u.RawQuery != "" {
			msg = strings.ReplaceAll(msg, u.RawQuery, "redacted")
		}
	}
	return truncate(msg, maxErrorLen)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// parseRetryAfter reads a Retry-After in seconds or as an HTTP date; 0 when absent or
// unreadable.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	var d time.Duration
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs <= 0 {
			return 0
		}
		d = time.Duration(min(secs, int64(maxRetryAfter/time.Second))) * time.Second
	} else if t, err := http.ParseTime(v); err == nil {
		d = t.Sub(now)
	}
	return min(max(d, 0), maxRetryAfter)
}

// retryDelay is the wait before the attempt after the n-th failure (n ≥ 1). The
// schedule lives in the row, so it is computed from the failure count alone.
func (w *DispatchWorker) retryDelay(n int) time.Duration {
	b := &backoff.ExponentialBackOff{
		InitialInterval:     w.cfg.BackoffInitial,
		RandomizationFactor: 0.5,
		Multiplier:          2,
		MaxInterval:         w.cfg.BackoffMax,
		Clock:               backoff.SystemClock,
	}
	b.Reset()
	d := b.NextBackOff()
	for i := 1; i < n; i++ {
		d = b.NextBackOff()
	}
	return d
}

// record writes each outcome. A delivered event is marked delivered whatever became
// of the claim: it was delivered. A failure is recorded only while this run's claim
// still holds (claim_until unchanged), so a run whose lease ran out cannot overwrite
// the record of a newer one.
func (w *DispatchWorker) record(ctx context.Context, results []result) error {
	batch := &pgx.Batch{}
	var delivered, failed, dead int
	for _, r := range results {
		ev := r.ev
		switch w.outcome(r) {
		case "":
			batch.Queue(`UPDATE webhook_events SET claim_until = NULL WHERE id = $1 AND claim_until = $2`, ev.id, ev.claim)
		case "delivered":
			delivered++
			batch.Queue(`UPDATE webhook_events SET delivered_at = now(), attempts = attempts + 1, claim_until = NULL,
				last_status = $2, last_error = NULL WHERE id = $1 AND delivered_at IS NULL`, ev.id, r.status)
		case "dead":
			dead++
			w.cfg.Logger.Warn("webhook event dead after its last attempt", "event", ev.id, "type", ev.eventType,
				"attempts", ev.attempts+1, "status", r.status, "err", r.err, "url", w.target)
			batch.Queue(`UPDATE webhook_events SET dead_at = now(), attempts = attempts + 1, claim_until = NULL,
				last_status = nullif($3, 0), last_error = $4 WHERE id = $1 AND claim_until = $2`,
				ev.id, ev.claim, r.status, r.err)
		default:
			failed++
			delay := max(w.retryDelay(ev.attempts+1), r.retryAfter)
			w.cfg.Logger.Debug("webhook delivery failed", "event", ev.id, "type", ev.eventType,
				"attempt", ev.attempts+1, "status", r.status, "err", r.err, "retry_in", delay, "url", w.target)
			batch.Queue(`UPDATE webhook_events SET next_attempt_at = now() + $3::interval, attempts = attempts + 1,
				claim_until = NULL, last_status = nullif($4, 0), last_error = $5 WHERE id = $1 AND claim_until = $2`,
				ev.id, ev.claim, delay, r.status, r.err)
		}
	}
	if err := w.pool.SendBatch(ctx, batch).Close(); err != nil {
		return fmt.Errorf("webhook: record %d deliveries: %w", len(results), err)
	}
	w.observe(results)
	if failed > 0 || dead > 0 {
		w.cfg.Logger.Info("webhook deliveries", "delivered", delivered, "failed", failed, "dead", dead, "url", w.target)
	}
	return nil
}

// outcome of one attempt: "" when nothing was sent, else "delivered", "dead" (its
// last allowed attempt failed) or "failed" (to be tried again).
func (w *DispatchWorker) outcome(r result) string {
	switch {
	case !r.sent:
		return ""
	case r.delivered:
		return "delivered"
	case r.ev.attempts+1 >= w.cfg.MaxAttempts:
		return "dead"
	}
	return "failed"
}

// observe tells Config.Observe of each recorded attempt.
func (w *DispatchWorker) observe(results []result) {
	if w.cfg.Observe == nil {
		return
	}
	for _, r := range results {
		if o := w.outcome(r); o != "" {
			w.cfg.Observe(r.ev.eventType, o)
		}
	}
}

// prune deletes delivered events older than Retention, a bounded number per run.
func (w *DispatchWorker) prune(ctx context.Context) error {
	if w.cfg.Retention < 0 {
		return nil
	}
	_, err := w.pool.Exec(ctx, `
		DELETE FROM webhook_events WHERE id IN (
			SELECT id FROM webhook_events WHERE delivered_at < now() - $1::interval LIMIT $2)`,
		w.cfg.Retention, pruneBatch)
	if err != nil {
		return fmt.Errorf("webhook: prune: %w", err)
	}
	return nil
}
