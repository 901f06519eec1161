// Package progress renders the progress of a long wait (settled of total, counts
// per status, rate, ETA) and states the rule of its ETA (eta.go). On a terminal it is one line redrawn in place; anywhere
// else (CI logs, pipes) it prints plain lines, sparingly, so that a log shows the
// run's course without thousands of lines.
package progress

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"time"
	"unicode/utf8"
)

// Config configures a Renderer.
type Config struct {
	// Out receives the output (the CLI passes stderr: stdout stays machine-readable).
	Out io.Writer
	// TTY selects the bar redrawn in place. Default false: plain lines.
	TTY bool
	// Label starts every line, e.g. "manifest #12". Default none.
	Label string
	// Now is the clock. Default time.Now; tests inject a fake one.
	Now func() time.Time
	// PlainEvery is the shortest gap between two plain lines whose only news is a
	// count inside the same tenth. Default 5s: often enough to see life in a log.
	PlainEvery time.Duration
	// Heartbeat prints a plain line even when nothing changed, so that a long quiet
	// wait does not look hung. Default 1m.
	Heartbeat time.Duration
	// RateWindow is how far back the rate of devices settled, and the calls paid off
	// that the ETA divides by (Pace), look. Default 30s (DefaultWindow).
	RateWindow time.Duration
	// Order lists the statuses in the order shown; others follow alphabetically.
	// Default none: alphabetical.
	Order []string
	// Width is the bar's width in cells. Default 24.
	Width int
	// Columns is the terminal's width; a longer TTY line is cut so that the
	// carriage return still reaches its start. Default 0: no limit.
	Columns int
}

// Snapshot is one observation of the work.
type Snapshot struct {
	Settled  int
	Total    int
	ByStatus map[string]int // the calls owed are counted from it (CallsOwed)
	// Budget is the requests per second the cluster's limiter allows now
	// (BudgetShare); 0: unknown. The ETA uses it until the rate achieved is measured.
	Budget float64
	// PausedUntil is the end of a Retry-After pause of every call (zero: none).
	PausedUntil time.Time
	// Note ends the line, e.g. the limiter's state ("sending 4/s of 40/s: VNC Cloud
	// asked to slow down"); "" for none.
	Note string
}

// Renderer draws progress. It is not safe for concurrent use: one waiter owns it.
type Renderer struct {
	cfg   Config
	start time.Time
	pace  Pace

	drawn      bool // a TTY line is on screen without its newline
	printed    bool // a plain line was printed
	lastPrint  time.Time
	lastDecile int
	lastSnap   Snapshot
}

// New builds a renderer; see Config for the defaults.
func New(cfg Config) *Renderer {
	if cfg.Out == nil {
		cfg.Out = io.Discard
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.PlainEvery <= 0 {
		cfg.PlainEvery = 5 * time.Second
	}
	if cfg.Heartbeat <= 0 {
		cfg.Heartbeat = time.Minute
	}
	if cfg.RateWindow <= 0 {
		cfg.RateWindow = 30 * time.Second
	}
	if cfg.Width <= 0 {
		cfg.Width = 24
	}
	return &Renderer{cfg: cfg, start: cfg.Now(), lastDecile: -1, pace: Pace{Window: cfg.RateWindow}}
}

// Update shows s: on a TTY it redraws the line; otherwise it prints a line when the
// settled count entered a new tenth, or when PlainEvery passed since the last line
// and something changed, or when Heartbeat passed.
func (r *Renderer) Update(s Snapshot) {
	now := r.cfg.Now()
	r.observe(now, s)
	if r.cfg.TTY {
		line := r.line(now, s, true)
		fmt.Fprintf(r.cfg.Out, "\r%s\x1b[K", line)
		r.drawn = true
		return
	}
	d := decile(s)
	since := now.Sub(r.lastPrint)
	changed := !sameSnapshot(s, r.lastSnap)
	if r.printed && d == r.lastDecile && !(changed && since >= r.cfg.PlainEvery) && since < r.cfg.Heartbeat {
		return
	}
	r.printPlain(now, s)
}

// Finish ends the output: the TTY line gets its newline; in plain mode the last
// state is printed unless it already was.
func (r *Renderer) Finish(s Snapshot) {
	now := r.cfg.Now()
	r.observe(now, s)
	if r.cfg.TTY {
		fmt.Fprintf(r.cfg.Out, "\r%s\x1b[K\n", r.line(now, s, true))
		r.drawn = false
		return
	}
	if r.printed && sameSnapshot(s, r.lastSnap) {
		return
	}
	r.printPlain(now, s)
}

// Abandon ends a TTY line as it stands (an error interrupted the wait), so that
// what follows starts on a line of its own.
func (r *Renderer) Abandon() {
	if r.cfg.TTY && r.drawn {
		fmt.Fprintln(r.cfg.Out)
		r.drawn = false
	}
}

func (r *Renderer) printPlain(now time.Time, s Snapshot) {
	fmt.Fprintln(r.cfg.Out, r.line(now, s, false))
	r.printed, r.lastPrint, r.lastDecile, r.lastSnap = true, now, decile(s), cloneSnapshot(s)
}

// observe records a sample for the rates (Pace keeps those inside the window, and
// the newest one before it).
func (r *Renderer) observe(now time.Time, s Snapshot) {
	r.pace.Observe(now, CallsOwed(s.ByStatus), s.Settled)
}

// Rate is devices settled per second over the rate window; 0 before two samples.
func (r *Renderer) Rate() float64 { return r.pace.Settled() }

func (r *Renderer) line(now time.Time, s Snapshot, tty bool) string {
	pct := 100.0
	if s.Total > 0 {
		pct = 100 * float64(s.Settled) / float64(s.Total)
	}
	rate := r.Rate()
	eta := ""
	if s.Settled >= s.Total {
		eta = " ETA 0s"
	} else if d, ok := r.pace.ETA(CallsOwed(s.ByStatus), s.Budget, s.PausedUntil.Sub(now)); ok {
		eta = " ETA " + d.Round(time.Second).String()
	}
	var b strings.Builder
	if r.cfg.Label != "" {
		b.WriteString(r.cfg.Label)
		b.WriteByte(' ')
	}
	if tty {
		filled := int(pct / 100 * float64(r.cfg.Width))
		filled = max(0, min(filled, r.cfg.Width))
		b.WriteString("[" + strings.Repeat("#", filled) + strings.Repeat(".", r.cfg.Width-filled) + "] ")
	}
	fmt.Fprintf(&b, "%d/%d settled (%.0f%%)", s.Settled, s.Total, pct)
	if counts := FormatCounts(s.ByStatus, r.cfg.Order); counts != "" {
		b.WriteString(" | " + counts)
	}
	fmt.Fprintf(&b, " | %.1f/s%s", rate, eta)
	if s.Note != "" {
		b.WriteString(" | " + s.Note)
	}
	if !tty {
		fmt.Fprintf(&b, " | %s elapsed", now.Sub(r.start).Round(time.Second))
	}
	line := b.String()
	if tty && r.cfg.Columns > 1 && utf8.RuneCountInString(line) > r.cfg.Columns-1 {
		line = string([]rune(line)[:r.cfg.Columns-1])
	}
	return line
}

// FormatCounts renders counts as "ready 10, failed 1" in the order of Ordered.
func FormatCounts(m map[string]int, order []string) string {
	keys := Ordered(m, order)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s %d", k, m[k])
	}
	return strings.Join(parts, ", ")
}

// Ordered lists the keys of m with a non-zero count: those of order first, in
// that order, then the others alphabetically.
func Ordered(m map[string]int, order []string) []string {
	seen := make(map[string]bool, len(order))
	var keys []string
	for _, k := range order {
		seen[k] = true
		if m[k] != 0 {
			keys = append(keys, k)
		}
	}
	var rest []string
	for k, n := range m {
		if !seen[k] && n != 0 {
			rest = append(rest, k)
		}
	}
	sort.Strings(rest)
	return append(keys, rest...)
}

func decile(s Snapshot) int {
	if s.Total <= 0 {
		return 10
	}
	return min(10, s.Settled*10/s.Total)
}

func sameSnapshot(a, b Snapshot) bool {
	if a.Settled != b.Settled || a.Total != b.Total || a.Note != b.Note || len(a.ByStatus) != len(b.ByStatus) {
		return false
	}
	for k, v := range a.ByStatus {
		if w, ok := b.ByStatus[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func cloneSnapshot(s Snapshot) Snapshot {
	c := s
	c.ByStatus = make(map[string]int, len(s.ByStatus))
	for k, v := range s.ByStatus {
		c.ByStatus[k] = v
	}
	return c
}
