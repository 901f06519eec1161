package progress

import (
	"time"
)

// The ETA of a run, stated once: the CLI's wait and the operator's console both
// estimate with this rule, from the progress answer's counts and limiter state.
//
//   - What is left is counted in VNC Cloud calls, not devices: CallsOwed, the calls
//     each status still owes at the least, times the devices in it. Calls are what
//     the rate limit meters, so calls owed divided by calls per second is a time;
//     devices settle in bursts (a create now, its readiness poll seconds later), and
//     dividing the devices left by a rate of devices settled early in a run gave
//     "ETA 46m25s" for a job that took 54 s.
//   - The rate is the one achieved: how fast the calls owed fell over the last
//     window (Pace). Once a third of the window is measured it alone decides; if
//     nothing was paid off over it (every call failing, every device in backoff),
//     no ETA is shown: none would mean anything.
//   - Before that, the rate is the budget share: the requests per second the
//     cluster's limiter allows now (VNCCLOUD_RATE times the AIMD factor of a slowed
//     limiter). That is a floor: the cluster cannot go faster, and other manifests
//     may share the budget.
//   - A Retry-After pause adds the time until it ends.
//   - Neither measured nor budgeted: no ETA.
//   - Calls still owed and an estimate under MinETA: no ETA either.

// CallsPerStatus is how many VNC Cloud calls a device in a status still owes at the
// least: a create then a readiness poll (pending, creating, and a manifest's rows not
// yet applied, "staged"); a poll (awaiting_ready); a GET for the ETag, the change and
// a poll (updating, rotating); a GET and a DELETE (deleting). A cloud slow to be
// ready takes more polls, so the calls owed are a floor too. Settled statuses owe
// nothing.
var CallsPerStatus = map[string]int{
	"staged": 2, "pending": 2, "creating": 2, "awaiting_ready": 1, "updating": 3, "rotating": 3, "deleting": 2,
}

// CallsOwed is the calls the devices counted by status still owe (CallsPerStatus).
func CallsOwed(byStatus map[string]int) int {
	n := 0
	for status, count := range byStatus {
		n += CallsPerStatus[status] * count
	}
	return n
}

// MinETA is the shortest ETA shown while calls are still owed. Under it the estimate
// means nothing: the next poll of the progress, a worker's batch and a readiness
// delay each take longer than that; and "ETA 0s" would say the work is done when it
// is not.
const MinETA = time.Second

// DefaultWindow is how far back Pace measures the rate achieved: long enough to
// smooth the workers' batches, short enough to follow a slow-down.
const DefaultWindow = 30 * time.Second

// Pace measures the rate achieved: how fast the calls owed fall, and for the display
// how fast devices settle, over one sliding window. The zero value measures over
// DefaultWindow. It is not safe for concurrent use.
type Pace struct {
	// Window is how far back the rate looks (0: DefaultWindow); a third of it must be
	// covered before the rate counts as measured.
	Window  time.Duration
	samples []paceSample
}

type paceSample struct {
	at      time.Time
	owed    int
	settled int
}

func (p *Pace) window() time.Duration {
	if p.Window <= 0 {
		return DefaultWindow
	}
	return p.Window
}

// Observe records the calls owed and the devices settled at now. Samples older than
// the window are dropped, but for the newest of them, so that the window is always
// spanned.
func (p *Pace) Observe(now time.Time, owed, settled int) {
	p.samples = append(p.samples, paceSample{now, owed, settled})
	cut := 0
	for cut < len(p.samples)-1 && now.Sub(p.samples[cut+1].at) >= p.window() {
		cut++
	}
	p.samples = p.samples[cut:]
}

// Achieved is the calls paid off per second over the window, and whether enough of
// the window is covered (a third) for it to count. A rise in the calls owed (a retry
// scheduling failed devices again) counts as nothing paid off.
func (p *Pace) Achieved() (perSecond float64, measured bool) {
	if len(p.samples) < 2 {
		return 0, false
	}
	first, last := p.samples[0], p.samples[len(p.samples)-1]
	span := last.at.Sub(first.at)
	if span <= 0 {
		return 0, false
	}
	if last.owed < first.owed {
		perSecond = float64(first.owed-last.owed) / span.Seconds()
	}
	return perSecond, span >= p.window()/3
}

// Settled is the devices settled per second over the window; 0 before two samples
// or when none settled.
func (p *Pace) Settled() float64 {
	if len(p.samples) < 2 {
		return 0
	}
	first, last := p.samples[0], p.samples[len(p.samples)-1]
	secs := last.at.Sub(first.at).Seconds()
	if secs <= 0 || last.settled <= first.settled {
		return 0
	}
	return float64(last.settled-first.settled) / secs
}

// ETA estimates the time left for owed calls by the rule above: at the achieved rate
// once measured, else at budget (requests/s the limiter allows now; 0: unknown), plus
// a pause still to run. ok is false when no estimate means anything.
func ETA(owed int, achieved float64, measured bool, budget float64, paused time.Duration) (eta time.Duration, ok bool) {
	if owed <= 0 {
		return 0, true
	}
	rate := budget
	if measured {
		rate = achieved
	}
	if rate <= 0 {
		return 0, false
	}
	secs := float64(owed) / rate
	eta = time.Duration(secs*float64(time.Second)) + max(paused, 0)
	if eta < MinETA {
		return 0, false
	}
	return eta, true
}

// BudgetShare is the requests per second the cluster's limiter allows now: its cap
// times the AIMD factor (1 at full speed; 0 or less is read as 1).
func BudgetShare(rate, factor float64) float64 {
	if factor <= 0 || factor > 1 {
		factor = 1
	}
	return max(rate, 0) * factor
}

// ETA estimates the time left from a snapshot of the work by the rule above.
func (p *Pace) ETA(owed int, budget float64, paused time.Duration) (time.Duration, bool) {
	achieved, measured := p.Achieved()
	return ETA(owed, achieved, measured, budget, paused)
}
