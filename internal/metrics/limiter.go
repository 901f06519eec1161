package metrics

import (
	"context"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vncfleet/vncfleet/ratelimit"
)

// Limiter measures the VNC Cloud limiter it wraps: how long Wait takes, the pauses
// asked for, the outcomes fed back to AIMD, and (when the limiter says) its current
// AIMD factor.
type Limiter struct {
	ratelimit.Limiter
	m *Metrics

	mu          sync.Mutex
	pausedUntil time.Time // the end of the latest pause this process asked for
}

// factorer is the limiter that reports its AIMD factor (*ratelimit.Cluster does).
type factorer interface{ Factor() float64 }

// InstrumentLimiter wraps l, the limiter with VNC Cloud's configured rate.
func (m *Metrics) InstrumentLimiter(l ratelimit.Limiter, rate float64) *Limiter {
	m.limiterPerSecond.Set(max(rate, 0))
	wrapped := &Limiter{Limiter: l, m: m}
	m.registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: namespace, Name: "ratelimit_aimd_factor",
		Help: "This process's AIMD rate factor: 1 at full speed, lower after runs of 503s; its pace is VNCCLOUD_RATE times this."},
		func() float64 {
			if f, ok := l.(factorer); ok {
				return f.Factor()
			}
			return 1 // a limiter without AIMD always runs at full speed
		}))
	m.registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: namespace, Name: "ratelimit_paused",
		Help: "1 while a pause that this process asked for (a Retry-After) holds every VNC Cloud request back."},
		func() float64 {
			if time.Now().Before(wrapped.paused()) {
				return 1
			}
			return 0
		}))
	return wrapped
}

func (l *Limiter) paused() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.pausedUntil
}

// Wait times the wait for a slot, granted or not.
func (l *Limiter) Wait(ctx context.Context) error {
	start := time.Now()
	err := l.Limiter.Wait(ctx)
	l.m.limiterWait.Observe(time.Since(start).Seconds())
	return err
}

// Pause counts a pause and how long it asked for.
func (l *Limiter) Pause(ctx context.Context, d time.Duration) error {
	l.m.limiterPauses.Inc()
	l.m.limiterPausedFor.Add(max(d, 0).Seconds())
	l.mu.Lock()
	if until := time.Now().Add(d); until.After(l.pausedUntil) {
		l.pausedUntil = until
	}
	l.mu.Unlock()
	return l.Limiter.Pause(ctx, d)
}

// Report counts the outcome fed back to AIMD.
func (l *Limiter) Report(o ratelimit.Outcome) {
	l.Limiter.Report(o)
	l.m.limiterOutcomes.WithLabelValues(o.String()).Inc()
}
