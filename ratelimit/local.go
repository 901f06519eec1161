package ratelimit

import (
	"context"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Local limits one process with golang.org/x/time/rate.
type Local struct {
	cfg     Config
	base    time.Duration // slot spacing at full speed
	limiter *rate.Limiter // nil: unlimited
	aimd    *aimd
	turn    chan struct{} // held by the one goroutine with a reservation

	mu          sync.Mutex
	pausedUntil time.Time
}

var _ Limiter = (*Local)(nil)

// NewLocal builds an in-process limiter.
func NewLocal(cfg Config) *Local {
	cfg.setDefaults()
	l := &Local{cfg: cfg}
	if cfg.Rate > 0 {
		l.base = cfg.spacing()
		// Burst 1: two grants are never closer than the spacing, so no one-second window
		// holds more than Rate of them.
		l.limiter = rate.NewLimiter(rate.Every(l.base), 1)
		l.aimd = newAIMD(cfg)
		l.turn = make(chan struct{}, 1)
	}
	return l
}

// Wait blocks until the next request may be sent.
func (l *Local) Wait(ctx context.Context) error {
	if l.limiter == nil {
		return ctx.Err()
	}
	// One reservation at a time: x/time/rate gives back only part of a cancelled
	// reservation when later ones exist, so a few cancelled waiters could otherwise
	// hold the limiter back for seconds. Grants are one at a time anyway.
	select {
	case l.turn <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-l.turn }()
	for {
		if err := sleepUntil(ctx, l.paused()); err != nil {
			return err
		}
		l.limiter.SetLimit(rate.Every(time.Duration(float64(l.base) / l.aimd.get())))
		// Reserve rather than rate.Limiter.Wait: Wait fails at once, with an error of its
		// own, when the turn lies past ctx's deadline; callers want ctx.Err() when ctx
		// ends, and a turn that might still come before it.
		r := l.limiter.Reserve()
		at := time.Now().Add(r.Delay())
		if err := sleepUntil(ctx, at); err != nil {
			r.Cancel()
			return err
		}
		if now := time.Now(); !now.Before(l.paused()) && now.Sub(at) <= l.cfg.MaxLate {
			return nil
		}
		// A pause began while this goroutine waited for its turn, or it woke too late
		// (a busy machine) to keep the spacing: the turn is void.
	}
}

func (l *Local) paused() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.pausedUntil
}

// Pause holds every Wait of this limiter back for d.
func (l *Local) Pause(_ context.Context, d time.Duration) error {
	if l.limiter == nil || d <= 0 {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if until := time.Now().Add(d); until.After(l.pausedUntil) {
		l.pausedUntil = until
	}
	return nil
}

// Report feeds back a request's outcome.
func (l *Local) Report(o Outcome) {
	if l.aimd != nil {
		l.aimd.report(o)
	}
}

// Factor is the current AIMD rate factor, 1 at full speed (and when unlimited).
func (l *Local) Factor() float64 {
	if l.aimd == nil {
		return 1
	}
	return l.aimd.get()
}
