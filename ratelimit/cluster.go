package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Cluster shares one rate between every process on a database.
type Cluster struct {
	cfg  Config
	pool *pgxpool.Pool
	base time.Duration // slot spacing at full speed
	aimd *aimd

	mu          sync.Mutex
	slots       []time.Time              // leased slot times on the local monotonic clock, in order
	queue       [numClasses][2][]*waiter // by class, then finishing (1) before new work (0)
	shares      shares
	leasing     chan struct{} // closed when the lease in progress ends; nil when none
	retryAt     time.Time     // no lease can succeed before this (the schedule is booked)
	pausedUntil time.Time     // the latest pause this process knows of
	// othersOnboarding is until when another process said it has onboarding waiters
	// (its leases mark it), as this process last read it.
	othersOnboarding time.Time
	ownOnboarding    time.Time // the row's onboarding_until as this process last marked it
	clock            clockMap
	demand           ewma // grants per second in this process
	stats            Stats
}

// waiter is a goroutine in Wait without a slot. Slots are handed to waiters, in
// class order (shares) and first come first served within a class, by whoever
// holds mu when both a slot and a waiter are there.
type waiter struct {
	class     Class
	finishing bool
	slot      chan time.Time // receives the waiter's slot; buffered, so handing out never blocks
}

var _ Limiter = (*Cluster)(nil)

// Stats counts what a Cluster did, for benchmarks and metrics.
type Stats struct {
	Grants int64 // Wait calls that returned nil
	Leases int64 // lease statements sent to the database
	Slots  int64 // slots leased (more than Grants: unused slots are dropped)
	// ByClass is Grants by Class.
	ByClass [numClasses]int64
	// UncertainClock counts the leases whose slots were dropped because the mapping of
	// the database's clock to this process's was not known to within the jitter budget.
	UncertainClock int64
	// Late counts the slots voided because their goroutine woke more than MaxLate after
	// them (a busy machine); Unused the slots that passed, or fell in a pause, with
	// nobody to take them. Both are budget left unspent, safely.
	Late, Unused int64
}

// setupTimeout bounds NewCluster's one statement, which has no context of its own.
const setupTimeout = 10 * time.Second

// NewCluster builds a cluster limiter on pool. The table comes from the migrations and
// the pool's search_path decides its schema; NewCluster creates the limiter's row, so
// a missing table fails here rather than at the first request.
func NewCluster(pool *pgxpool.Pool, cfg Config) (*Cluster, error) {
	cfg.setDefaults()
	c := &Cluster{cfg: cfg, pool: pool, shares: newShares(cfg.OnboardingShare)}
	if cfg.Rate <= 0 {
		return c, nil
	}
	c.base = cfg.spacing()
	c.aimd = newAIMD(cfg)
	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()
	if err := c.ensureRow(ctx); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *Cluster) ensureRow(ctx context.Context) error {
	_, err := c.pool.Exec(ctx, `
		INSERT INTO rate_limits (name) VALUES ($1)
		ON CONFLICT (name) DO NOTHING`, c.cfg.Name)
	if err != nil {
		return fmt.Errorf("rate limiter %s: create its row: %w", c.cfg.Name, err)
	}
	return nil
}

// Stats returns the counters so far.
func (c *Cluster) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stats
}

// Leases is the number of lease statements sent to the database so far.
func (c *Cluster) Leases() int64 { return c.Stats().Leases }

// Factor is the current AIMD rate factor, 1 at full speed (and when unlimited).
func (c *Cluster) Factor() float64 {
	if c.aimd == nil {
		return 1
	}
	return c.aimd.get()
}

// Report feeds back a request's outcome.
func (c *Cluster) Report(o Outcome) {
	if c.aimd != nil {
		c.aimd.report(o)
	}
}

// Wait blocks until this process may send one request. ctx's class (WithClass)
// decides its place among the process's waiters.
func (c *Cluster) Wait(ctx context.Context) error {
	if c.cfg.Rate <= 0 {
		return ctx.Err()
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	w := &waiter{class: ClassOf(ctx), finishing: isFinishing(ctx), slot: make(chan time.Time, 1)}
	c.mu.Lock()
	c.enqueue(w)
	for {
		c.dispatch(time.Now())
		select {
		case slot := <-w.slot:
			c.mu.Unlock()
			if err := sleepUntil(ctx, slot); err != nil {
				c.giveBack(slot)
				return err
			}
			c.mu.Lock()
			now := time.Now()
			if now.Before(c.pausedUntil) || now.Sub(slot) > c.cfg.MaxLate {
				// A pause began while this goroutine slept, or it woke too late (a busy
				// machine): its slot is void.
				if !now.Before(c.pausedUntil) {
					c.stats.Late++
				}
				c.enqueue(w)
				continue
			}
			c.stats.Grants++
			c.stats.ByClass[w.class]++
			c.demand.add(now)
			c.mu.Unlock()
			return nil
		default:
		}
		if c.leasing != nil {
			done := c.leasing
			c.mu.Unlock()
			select {
			case <-done:
			case slot := <-w.slot:
				w.slot <- slot // handed out meanwhile: take it at the top of the loop
			case <-ctx.Done():
				c.leave(w)
				return ctx.Err()
			}
			c.mu.Lock()
			continue
		}
		// This goroutine leases for everyone waiting here.
		done := make(chan struct{})
		c.leasing = done
		retryAt := c.retryAt
		c.mu.Unlock()
		err := sleepUntil(ctx, retryAt)
		if err == nil {
			err = c.lease(ctx)
		}
		c.mu.Lock()
		c.leasing = nil
		close(done)
		if err != nil {
			c.mu.Unlock()
			c.leave(w)
			if ctxErr := ctx.Err(); ctxErr != nil {
				return ctxErr
			}
			return err
		}
	}
}

// enqueue adds w to its queue. c.mu is held.
func (c *Cluster) enqueue(w *waiter) {
	q := &c.queue[w.class][b2i(w.finishing)]
	*q = append(*q, w)
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// waiting is how many goroutines of each class wait without a slot. c.mu is held.
func (c *Cluster) waiting() (n [numClasses]int) {
	for k := range numClasses {
		n[k] = len(c.queue[k][0]) + len(c.queue[k][1])
	}
	return n
}

// dispatch hands the usable slots to waiters, by class share, finishing work first
// within a class. c.mu is held.
func (c *Cluster) dispatch(now time.Time) {
	c.dropUnusable(now)
	for len(c.slots) > 0 {
		k := c.shares.pick(c.waiting())
		if k < 0 {
			return
		}
		q := &c.queue[k][1]
		if len(*q) == 0 {
			q = &c.queue[k][0]
		}
		w := (*q)[0]
		*q = (*q)[1:]
		w.slot <- c.slots[0]
		c.slots = c.slots[1:]
	}
}

// leave takes a cancelled waiter out of its queue, or gives back the slot it was
// handed meanwhile.
func (c *Cluster) leave(w *waiter) {
	c.mu.Lock()
	q := &c.queue[w.class][b2i(w.finishing)]
	if i := slices.Index(*q, w); i >= 0 {
		*q = slices.Delete(*q, i, i+1)
	}
	c.mu.Unlock()
	select {
	case slot := <-w.slot:
		c.giveBack(slot)
	default:
	}
}

// dropUnusable forgets slots that are too late to use or that fall in a pause. c.mu
// is held.
func (c *Cluster) dropUnusable(now time.Time) {
	i := 0
	for i < len(c.slots) && (now.Sub(c.slots[i]) > c.cfg.MaxLate || c.slots[i].Before(c.pausedUntil)) {
		i++
	}
	c.stats.Unused += int64(i)
	c.slots = c.slots[i:]
}

// giveBack returns the slot of a cancelled waiter, so that another may use it.
func (c *Cluster) giveBack(slot time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	i, _ := slices.BinarySearchFunc(c.slots, slot, time.Time.Compare)
	c.slots = slices.Insert(c.slots, i, slot)
	c.dispatch(time.Now())
}

// leaseSQL takes up to $2 slots spaced $3 seconds apart from the schedule, reaching at
// most $4 seconds past the database's now, and only if the schedule is booked less
// than $5 seconds ahead. The row is locked first and the clock read afterwards, so
// that a lease that waited for the lock still starts at the true now. Everything is
// computed from the locked row: an UPDATE ... FROM a plain read of the same row could
// act on a stale next_slot under concurrency. $6 says that this process has
// onboarding waiters: it marks onboarding_until two horizons ahead, so that processes
// with only rotation waiters keep to rotation's share meanwhile (Cluster.lease).
const leaseSQL = `
WITH cur AS MATERIALIZED (
    SELECT next_slot, paused_until, onboarding_until FROM rate_limits WHERE name = $1 FOR UPDATE
), clk AS MATERIALIZED (
    SELECT next_slot, paused_until, onboarding_until, clock_timestamp() AS now FROM cur
), plan AS MATERIALIZED (
    SELECT now, paused_until, onboarding_until, greatest(next_slot, paused_until, now) AS start FROM clk
), lease AS MATERIALIZED (
    SELECT now, paused_until, start,
        CASE WHEN $6::bool THEN greatest(onboarding_until, now + 2 * $4::float8 * interval '1 second')
             ELSE onboarding_until END AS onboarding_until,
        CASE WHEN start > now + $5::float8 * interval '1 second' THEN 0
             ELSE least($2::int, 1 + floor(extract(epoch FROM now + $4::float8 * interval '1 second' - start)::float8 / $3::float8))::int
        END AS n
    FROM plan
)
UPDATE rate_limits r SET next_slot = lease.start + lease.n * $3::float8 * interval '1 second',
    onboarding_until = lease.onboarding_until
FROM lease WHERE r.name = $1
RETURNING lease.now, lease.start, lease.n, r.next_slot, lease.paused_until, lease.onboarding_until`

// lease asks the database for slots and queues them. When the schedule is booked too
// far ahead it gets none and sets retryAt instead.
func (c *Cluster) lease(ctx context.Context) error {
	spacing := time.Duration(float64(c.base) / c.aimd.get())
	horizon := c.cfg.MaxLease
	fit := int(horizon/spacing) + 1 // the most slots one lease can get

	c.mu.Lock()
	// Enough for everyone waiting now, or for what this process used in the last half
	// lease if that is more: waiters that come later find a slot without a round trip.
	waiting := c.waiting()
	total := 0
	for _, n := range waiting {
		total += n
	}
	want := max(total, int(math.Ceil(c.demand.rate(time.Now())*(horizon/2).Seconds())))
	onboarding := waiting[Onboarding] > 0
	// With only rotation waiters here while another process onboards, this process
	// leases rotation's share of a horizon and waits out the rest (below), leaving the
	// schedule to the onboarding process; with a share of 1 it only looks (n = 0).
	yielding := !onboarding && waiting[Rotation] > 0 && time.Now().Before(c.othersOnboarding)
	c.mu.Unlock()
	want = max(1, min(want, fit))
	if yielding {
		want = min(want, int(math.Floor(float64(fit)*(1-c.cfg.OnboardingShare)+0.5)))
	}

	var dbNow, start, next, paused, onboardingUntil time.Time
	var n int
	sent := time.Now()
	reach, open := horizon, horizon/2
	if yielding {
		// Rotation's few slots go at the end of what the onboarding process booked,
		// however far ahead that is (within a horizon), rather than waiting for a
		// moment when the schedule is nearly empty: there may be none.
		reach, open = horizon+time.Duration(want)*spacing, horizon
	}
	err := c.pool.QueryRow(ctx, leaseSQL, c.cfg.Name, want, spacing.Seconds(), reach.Seconds(), open.Seconds(), onboarding).
		Scan(&dbNow, &start, &n, &next, &paused, &onboardingUntil)
	if errors.Is(err, pgx.ErrNoRows) {
		// The row went away (a truncated table): create it, and lease next time.
		return c.ensureRow(ctx)
	}
	if err != nil {
		return fmt.Errorf("rate limiter %s: lease: %w", c.cfg.Name, err)
	}
	received := time.Now()

	c.mu.Lock()
	defer c.mu.Unlock()
	c.stats.Leases++
	c.stats.Slots += int64(n)
	c.clock.sample(sent, received, dbNow)
	if p := c.clock.local(paused); p.After(c.pausedUntil) {
		c.pausedUntil = p
	}
	first := c.clock.local(start)
	if c.clock.uncertainty(received) > c.maxClockError() {
		// Slots placed this roughly could land within another process's by more than
		// the jitter budget: drop them (unused slots are safe) and sample the clock
		// until the mapping is good enough (a loaded machine's first round trips).
		c.stats.UncertainClock++
		n = 0
		c.mu.Unlock()
		c.sampleClock(ctx)
		c.mu.Lock()
	}
	for i := range n {
		c.slots = append(c.slots, first.Add(time.Duration(i)*spacing))
	}
	// The schedule will be open to the next lease once it is booked less than half the
	// horizon ahead. The jitter (a tenth of the horizon at most, well inside the half
	// horizon still booked) keeps the process nearest the database from winning every
	// round.
	jitter := time.Duration(rand.Int64N(int64(horizon/10) + 1))
	c.retryAt = c.clock.local(next).Add(-horizon/2 + jitter)
	if onboarding {
		c.ownOnboarding = onboardingUntil
	} else if !onboardingUntil.Equal(c.ownOnboarding) {
		// The mark is another process's (this one's own last mark does not count).
		c.othersOnboarding = c.clock.local(onboardingUntil)
	} else {
		c.othersOnboarding = time.Time{}
	}
	if yielding {
		// Rotation's share: n slots now, then a pause as long as onboarding's part of
		// a horizon, during which the onboarding process leases.
		c.retryAt = received.Add(time.Duration(float64(horizon) * c.cfg.OnboardingShare))
	}
	if n == 0 && c.retryAt.Before(received.Add(time.Millisecond)) {
		// The database said not yet, whatever our mapping says: do not ask again at once.
		c.retryAt = received.Add(time.Millisecond)
	}
	return nil
}

// maxClockError is the most uncertainty of the clock mapping a lease's slots may
// carry.
func (c *Cluster) maxClockError() time.Duration {
	return time.Duration(c.cfg.Margin * clockBudget * float64(time.Second))
}

// clockSamples bounds the round trips sampleClock spends on one attempt.
const clockSamples = 5

// sampleClock takes clock samples, cheap round trips, until the mapping is certain
// enough or clockSamples have been taken.
func (c *Cluster) sampleClock(ctx context.Context) {
	for range clockSamples {
		var dbNow time.Time
		sent := time.Now()
		if err := c.pool.QueryRow(ctx, `SELECT clock_timestamp()`).Scan(&dbNow); err != nil {
			return
		}
		received := time.Now()
		c.mu.Lock()
		c.clock.sample(sent, received, dbNow)
		good := c.clock.uncertainty(received) <= c.maxClockError()
		c.mu.Unlock()
		if good {
			return
		}
	}
}

// Pause holds every process back for d: the pause is written to the shared row, so no
// process gets a slot inside it.
func (c *Cluster) Pause(ctx context.Context, d time.Duration) error {
	if c.cfg.Rate <= 0 || d <= 0 {
		return nil
	}
	var until, dbNow time.Time
	sent := time.Now()
	err := c.pool.QueryRow(ctx, `
		UPDATE rate_limits SET paused_until = greatest(paused_until, clock_timestamp() + $2::float8 * interval '1 second')
		WHERE name = $1
		RETURNING paused_until, clock_timestamp()`, c.cfg.Name, d.Seconds()).Scan(&until, &dbNow)
	if errors.Is(err, pgx.ErrNoRows) {
		if err = c.ensureRow(ctx); err == nil {
			return c.Pause(ctx, d)
		}
	}
	if err != nil {
		return fmt.Errorf("rate limiter %s: pause: %w", c.cfg.Name, err)
	}
	received := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.clock.sample(sent, received, dbNow)
	// Never shorter than asked on our own clock, whatever the mapping's error.
	local := c.clock.local(until)
	if asked := received.Add(d); asked.After(local) {
		local = asked
	}
	if local.After(c.pausedUntil) {
		c.pausedUntil = local
		c.cfg.Logger.Debug("rate limiter paused", "limiter", c.cfg.Name, "for", d)
	}
	c.dropUnusable(received)
	return nil
}

// clockMap converts the database's clock to this process's monotonic clock. Each
// round trip gives a sample: the database read its clock at some point between sending
// and receiving, best guessed as the midpoint, so the error is at most half the round
// trip. The sample with the shortest round trip is kept, aged by driftPerSecond so that
// a newer sample eventually replaces it even if slower.
type clockMap struct {
	local0 time.Time     // a local time, with a monotonic reading
	db0    time.Time     // the database's clock at local0
	rtt    time.Duration // the round trip of that sample
}

// driftPerSecond is how fast an old sample is trusted less: clocks drift by well under
// 100µs per second, so 1ms per second is generous.
const driftPerSecond = time.Millisecond

func (m *clockMap) sample(sent, received, db time.Time) {
	rtt := received.Sub(sent)
	if !m.local0.IsZero() {
		aged := m.rtt + time.Duration(received.Sub(m.local0).Seconds()*float64(driftPerSecond))
		if rtt > aged {
			return
		}
	}
	m.local0, m.db0, m.rtt = sent.Add(rtt/2), db, rtt
}

// uncertainty is how far, at most, the mapping may be off at now: half the round trip
// of its sample, aged.
func (m *clockMap) uncertainty(now time.Time) time.Duration {
	if m.local0.IsZero() {
		return time.Hour
	}
	return m.rtt/2 + time.Duration(now.Sub(m.local0).Seconds()*float64(driftPerSecond))
}

// local maps a database time to the local monotonic clock.
func (m *clockMap) local(db time.Time) time.Time {
	if db.Before(m.db0.Add(-24 * time.Hour)) {
		return time.Time{} // the epoch of a row never paused: long past
	}
	return m.local0.Add(db.Sub(m.db0))
}

// ewma estimates a rate of events per second, decaying over ewmaTau.
type ewma struct {
	value float64
	at    time.Time
}

const ewmaTau = time.Second

func (e *ewma) rate(now time.Time) float64 {
	if e.at.IsZero() {
		return 0
	}
	return e.value * math.Exp(-now.Sub(e.at).Seconds()/ewmaTau.Seconds())
}

func (e *ewma) add(now time.Time) {
	e.value = e.rate(now) + 1/ewmaTau.Seconds()
	e.at = now
}
