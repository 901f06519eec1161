// Package reconcile compares the VNC Cloud account with the store and acts on the
// differences: addresses that vanished are created again, drifted specs are put back,
// orphans of lost creates are adopted or deleted, foreign addresses are reported, and
// any device whose row owes work without a job gets one. It is level-triggered and
// idempotent: a second run right after the first finds nothing to do.
//
// One run converges: it first waits (within MaxWait) for the creates whose requests
// may still be in progress at the server, retries transient API failures within the
// run, and says in its report (Converged) whether anything was left unsettled.
package reconcile

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"iter"
	"log/slog"
	"slices"
	"time"

	"github.com/vncfleet/vncfleet/fleet"
	"github.com/vncfleet/vncfleet/internal/cloudop"
	"github.com/vncfleet/vncfleet/internal/store"
	"github.com/vncfleet/vncfleet/jobs"
	"github.com/vncfleet/vncfleet/vnccloud"
)

// Cloud is what reconciliation needs of VNC Cloud: a listing, and what cloudop
// needs to inspect and delete one address.
type Cloud interface {
	cloudop.Deleter
	List(ctx context.Context, opts vnccloud.ListOptions) iter.Seq2[string, error]
}

// Defaults of Config.
const (
	// DefaultMaxWait is the workers' default claim lease plus a call's timeout: a
	// create recorded before the run can be in progress no longer than that.
	DefaultMaxWait     = jobs.DefaultClaimLease + jobs.DefaultCallTimeout
	DefaultDriftChecks = 1000
	DefaultAttempts    = 5
)

// Config tunes reconciliation.
type Config struct {
	// MaxWait bounds how long a run waits, before listing, for the creates recorded
	// before it whose requests may still be in progress at the server (on the
	// database's clock: until their in_flight_until, which their answer, or their
	// process found dead, brings forward). Creates still in flight after it are
	// reported and the run does not converge. Defaults to DefaultMaxWait; set it to
	// the claim lease plus a call's timeout, the longest a create can be in flight.
	MaxWait time.Duration
	// DeleteForeign deletes addresses vncfleet did not create, and ambiguous ones
	// (that may be another tool's). Defaults to false: they are only reported,
	// because the account may be shared with other tools.
	DeleteForeign bool
	// DriftChecks bounds how many devices one run GETs to compare specs, the least
	// recently checked first; each check spends rate budget. Defaults to 1000.
	DriftChecks int
	// Attempts is how often one API call is made before a transient failure (503,
	// 429, a timeout) is given up and reported. Defaults to 5.
	Attempts int
	// Backoff is the delay before retry n (1-based) of a call; a longer Retry-After
	// of the answer wins. Defaults to 0.5s doubling up to 8s (7.5s over the default
	// four retries).
	Backoff func(n int) time.Duration
}

// withDefaults fills every unset field.
func (c Config) withDefaults() Config {
	c.MaxWait = cmp.Or(c.MaxWait, DefaultMaxWait)
	c.DriftChecks = cmp.Or(c.DriftChecks, DefaultDriftChecks)
	c.Attempts = cmp.Or(c.Attempts, DefaultAttempts)
	if c.Backoff == nil {
		c.Backoff = defaultBackoff
	}
	return c
}

func defaultBackoff(n int) time.Duration {
	return min(500*time.Millisecond<<min(n-1, 4), 8*time.Second)
}

// maxRetryAfter caps how long one retry waits on a server's Retry-After.
const maxRetryAfter = 30 * time.Second

// Store is what reconciliation needs of the database; *store.Store provides it.
// Declared here, by its consumer, so that the run's decisions have unit tests with a
// store of their own; the SQL behind it has its tests in internal/store.
type Store interface {
	// What the store knows: addresses, creates still in flight, open attempts.
	// NewListing snapshots the addresses the store holds, to compare a listing with
	// (store.NewListing keeps both in the database).
	NewListing(ctx context.Context) (store.AddressListing, error)
	CreatesInFlight(ctx context.Context, sentBefore time.Time) (store.CreatesInFlight, error)
	OpenAttempts(ctx context.Context) ([]store.OpenAttempt, error)
	FirstSeen(ctx context.Context, addrs []string, record bool) (map[string]time.Time, error)
	DriftCandidates(ctx context.Context, limit int) ([]store.DriftCandidate, error)

	// What a run records, each only if the row is still as it was read.
	MarkVanished(ctx context.Context, devicePK int64, address string, key string) (bool, error)
	ResolveAttempt(ctx context.Context, attemptID int64, outcome, address string) error
	AdoptAddress(ctx context.Context, attemptID, devicePK int64, address string, key string) (bool, error)
	MarkChecked(ctx context.Context, devicePK int64, specVersion int, drift string, key string) error
	Reschedule(ctx context.Context, key string) (int, error)
	OwedUnder(ctx context.Context, key string) (int, error)
}

var _ Store = (*store.Store)(nil)

// Reconciler runs reconciliation.
type Reconciler struct {
	Store Store
	Cloud Cloud
	// Call makes every API request, retries included: the rate limiter
	// (cloudop.Limited, as the worker's calls). Nil calls directly.
	Call   cloudop.Caller
	Config Config
	Logger *slog.Logger
	// Enqueue starts work jobs for the devices scheduled under key.
	Enqueue func(ctx context.Context, key string, devices int) error
}

// Report says what a run found and did (or, in a dry run, would do).
type Report struct {
	DryRun bool `json:"dryRun"`
	// Converged: nothing was left unsettled or unchecked (Errors, InFlight,
	// CreatesInFlight and Ambiguous are empty), so the account holds exactly one
	// address per present device once the work the run started is done.
	Converged bool      `json:"converged"`
	StartedAt time.Time `json:"startedAt"`
	// WaitedFor is how many creates that may still have been in flight the run waited
	// for before listing, and WaitedSeconds how long.
	WaitedFor      int      `json:"waitedForCreatesInFlight"`
	WaitedSeconds  float64  `json:"waitedSeconds"`
	Listed         int      `json:"listed"`
	Known          int      `json:"known"`
	Vanished       []string `json:"vanished"`       // "fleet/device_id" whose address is gone: created again
	Drifted        []string `json:"drifted"`        // "fleet/device_id" whose spec was changed outside vncfleet: put back
	Adopted        []string `json:"adopted"`        // "fleet/device_id: address" orphans given to their device
	DeletedOrphans []string `json:"deletedOrphans"` // orphan addresses of lost creates, deleted
	// InFlight are unknown addresses that a create still in flight may have made:
	// neither adopted, deleted nor called foreign.
	InFlight []string `json:"inFlight"`
	// CreatesInFlight are "fleet/device_id" whose create may still be in progress at
	// the server after the wait, with no address of theirs seen yet.
	CreatesInFlight []string `json:"createsInFlight"`
	// Ambiguous are unknown addresses that lost creates of vncfleet may have made,
	// but more of them than those creates could have: some are another tool's and
	// nothing tells which. They are left alone unless DeleteForeign.
	Ambiguous      []string `json:"ambiguous"`
	Foreign        []string `json:"foreign"` // addresses vncfleet did not create
	DeletedForeign []string `json:"deletedForeign"`
	Rescheduled    int      `json:"rescheduled"` // devices whose owed work had no job
	Checked        int      `json:"checked"`     // drift checks made
	WorkKey        string   `json:"workKey,omitempty"`
	Errors         []string `json:"errors"` // what could not be checked or done, after retries
}

// ListingError is a listing of the account that failed after its retries: the run
// could not start, and changed nothing.
type ListingError struct{ Err error }

func (e *ListingError) Error() string { return "list cloud addresses: " + e.Err.Error() }
func (e *ListingError) Unwrap() error { return e.Err }

// HTTPStatus lets the API answer 502 Bad Gateway (VNC Cloud failed) without knowing
// this package.
func (e *ListingError) HTTPStatus() int { return 502 }

func (r *Reconciler) logger() *slog.Logger {
	if r.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return r.Logger
}

func (r *Reconciler) caller() cloudop.Caller {
	if r.Call == nil {
		return cloudop.Direct
	}
	return r.Call
}

// retry makes one operation (a cloudop call), and again after a transient outcome
// (Retryable, or Unknown: a 503, 429 or timeout, which is safe to repeat for the
// reads and deletes reconciliation makes), with backoff, up to Attempts times. Each
// try goes through Call, so the rate limiter paces it and hears of the failure.
func (r *Reconciler) retry(ctx context.Context, op func() cloudop.Report) cloudop.Report {
	cfg := r.Config.withDefaults()
	for n := 1; ; n++ {
		rep := op()
		if n >= cfg.Attempts || (rep.Outcome != fleet.Retryable && rep.Outcome != fleet.Unknown) || ctx.Err() != nil {
			return rep
		}
		delay := cfg.Backoff(n)
		var apiErr *vnccloud.APIError
		if errors.As(rep.Err, &apiErr) {
			delay = max(delay, min(apiErr.RetryAfter, maxRetryAfter))
		}
		if err := sleep(ctx, delay); err != nil {
			return rep
		}
	}
}

// inspect GETs addr, with retries. found is false on a 404; err is what failed.
func (r *Reconciler) inspect(ctx context.Context, addr string) (details vnccloud.Details, found bool, err error) {
	rep := r.retry(ctx, func() cloudop.Report {
		var rep cloudop.Report
		details, rep = cloudop.Inspect(ctx, r.Cloud, r.caller(), addr)
		return rep
	})
	switch rep.Outcome {
	case "":
		return details, true, nil
	case fleet.Vanished:
		return vnccloud.Details{}, false, nil
	}
	return vnccloud.Details{}, false, rep.Err
}

// listPage makes one page's request of a listing, with retries.
func (r *Reconciler) listPage(ctx context.Context, fetch func(ctx context.Context) error) error {
	return r.retry(ctx, func() cloudop.Report { return cloudop.Read(ctx, r.caller(), "list", fetch) }).Err
}

// deleteAddress deletes addr, whose ETag was read as etag, as the worker deletes a
// device's address (cloudop.Delete: a 412 is met by a fresh GET), with retries.
func (r *Reconciler) deleteAddress(ctx context.Context, addr, etag string) error {
	rep := r.retry(ctx, func() cloudop.Report {
		return cloudop.Delete(ctx, r.Cloud, r.caller(), cloudop.Task{Op: fleet.OpDelete, CloudAddress: addr, ETag: etag})
	})
	if rep.Outcome == fleet.Deleted {
		return nil
	}
	return cmp.Or(rep.Err, fmt.Errorf("delete %s: %s", addr, rep.Outcome))
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Run reconciles once. Errors on single addresses are collected in the report; an
// error return means the run could not complete (listing or database failed).
func (r *Reconciler) Run(ctx context.Context, dryRun bool) (*Report, error) {
	cfg := r.Config.withDefaults()
	rep := &Report{DryRun: dryRun, StartedAt: time.Now().UTC()}
	key := fmt.Sprintf("reconcile:%d", rep.StartedAt.UnixNano())
	rep.WorkKey = key

	// A dry run does not wait: it reports such creates in flight instead.
	if !dryRun {
		if err := r.waitForCreatesInFlight(ctx, rep, cfg); err != nil {
			return nil, err
		}
	}
	// What the store knew before listing: an address of it missing from the listing
	// vanished (confirmed by a GET, since a listing can miss entries changed while
	// paging). The listing is kept in the database, not here: a million addresses.
	listing, err := r.Store.NewListing(ctx)
	if err != nil {
		return nil, err
	}
	defer listing.Close()
	// Each page is a request of its own, so each goes through the rate limiter, and
	// a page that fails transiently is asked for again.
	for addr, err := range r.Cloud.List(ctx, vnccloud.ListOptions{Limit: 99, PerRequest: r.listPage}) {
		if err != nil {
			return nil, &ListingError{err}
		}
		if err := listing.Add(ctx, addr); err != nil {
			return nil, err
		}
	}
	if rep.Listed, err = listing.Done(ctx); err != nil {
		return nil, err
	}
	rep.Known = listing.Known()

	unlisted, err := listing.Unlisted(ctx)
	if err != nil {
		return nil, err
	}
	if err := r.vanished(ctx, rep, unlisted, key); err != nil {
		return nil, err
	}
	// The open attempts first, then the addresses known: a create answered in between
	// is in one or the other (read the other way round, its address would be in
	// neither and taken for foreign).
	attempts, err := r.Store.OpenAttempts(ctx)
	if err != nil {
		return nil, err
	}
	// Compared with the devices now: addresses recorded while we listed are not orphans.
	unknownAddrs, err := listing.Unknown(ctx)
	if err != nil {
		return nil, err
	}
	if err := r.orphans(ctx, rep, cfg, attempts, unknownAddrs, key); err != nil {
		return nil, err
	}
	if err := r.drift(ctx, rep, cfg, key); err != nil {
		return nil, err
	}
	if !dryRun {
		if rep.Rescheduled, err = r.Store.Reschedule(ctx, key); err != nil {
			return nil, err
		}
		owed, err := r.Store.OwedUnder(ctx, key)
		if err != nil {
			return nil, err
		}
		if owed > 0 && r.Enqueue != nil {
			if err := r.Enqueue(ctx, key, owed); err != nil {
				return nil, err
			}
		}
	}
	rep.Converged = len(rep.Errors) == 0 && len(rep.InFlight) == 0 && len(rep.CreatesInFlight) == 0 && len(rep.Ambiguous) == 0
	return rep, nil
}

// waitForCreatesInFlight waits, at most MaxWait, until no create recorded before the
// run can still be in progress at the server, so that whatever they made is either
// recorded by their job or in the listing for good. Which are in flight is read
// from the database (its clock) every second, so an answer recorded meanwhile ends
// the wait early.
func (r *Reconciler) waitForCreatesInFlight(ctx context.Context, rep *Report, cfg Config) error {
	inFlight, err := r.Store.CreatesInFlight(ctx, time.Time{})
	if err != nil || inFlight.Count == 0 {
		return err
	}
	sentBefore := inFlight.Now
	rep.WaitedFor = inFlight.Count
	r.logger().Info("reconcile: waiting for creates that may still be in flight", "creates", inFlight.Count,
		"at_most", min(inFlight.Remaining, cfg.MaxWait).Round(time.Second))
	started := time.Now()
	defer func() { rep.WaitedSeconds = time.Since(started).Seconds() }()
	for inFlight.Count > 0 {
		left := cfg.MaxWait - time.Since(started)
		if left <= 0 {
			return nil // what is still in flight is reported by the orphan pass
		}
		if err := sleep(ctx, min(inFlight.Remaining, left, time.Second)); err != nil {
			return err
		}
		if inFlight, err = r.Store.CreatesInFlight(ctx, sentBefore); err != nil {
			return err
		}
	}
	return nil
}

// vanished checks the devices whose address the listing did not show, unless the
// work jobs see to them (busy or being deleted), and marks those whose address is
// gone.
func (r *Reconciler) vanished(ctx context.Context, rep *Report, unlisted []store.KnownDevice, key string) error {
	for _, dev := range unlisted {
		addr := dev.CloudAddress
		if dev.Busy || dev.Status == "deleting" {
			continue
		}
		_, found, err := r.inspect(ctx, addr)
		if err != nil {
			rep.Errors = append(rep.Errors, fmt.Sprintf("check %s (%s): %v", dev.DeviceID, addr, err))
			continue
		}
		if found {
			continue // missed by the listing, but there
		}
		if !rep.DryRun {
			// Only if the row still holds this address, unclaimed: a job may have
			// replaced it, or be at work on the device, since the store was read.
			marked, err := r.Store.MarkVanished(ctx, dev.PK, addr, key)
			if err != nil {
				return err
			}
			if !marked {
				continue
			}
		}
		rep.Vanished = append(rep.Vanished, dev.Fleet+"/"+dev.DeviceID)
	}
	return nil
}

// unknownAddress is a listed address the store does not know, as inspected.
type unknownAddress struct {
	addr      string
	details   vnccloud.Details
	firstSeen time.Time // first listed, on the database's clock
}

// orphans handles listed addresses the store does not know. An open create may have
// made one when the spec matches and the create was sent before the address was
// first listed; each such attempt accounts for at most one orphan, which is adopted
// when a matching attempt's device still has no address and deleted otherwise. An
// address a create still in flight may have made is left alone. Where more addresses
// match than the attempts that may have made them, some are another tool's and
// nothing tells which: they are ambiguous. Addresses no attempt may have made are
// foreign.
func (r *Reconciler) orphans(ctx context.Context, rep *Report, cfg Config, attempts []store.OpenAttempt,
	unknownAddrs []string, key string) error {
	firstSeen, err := r.Store.FirstSeen(ctx, unknownAddrs, !rep.DryRun)
	if err != nil {
		return err
	}
	checkFailed := false
	var unknown []unknownAddress
	for _, addr := range unknownAddrs {
		details, found, err := r.inspect(ctx, addr)
		if err == nil && !found {
			continue // deleted meanwhile
		}
		if err != nil {
			// Whatever attempt made this address, it must not be discarded below.
			checkFailed = true
			rep.Errors = append(rep.Errors, fmt.Sprintf("inspect %s: %v", addr, err))
			continue
		}
		unknown = append(unknown, unknownAddress{addr, details, firstSeen[addr]})
	}
	// The earliest seen first: they have the fewest attempts that may have made them.
	slices.SortFunc(unknown, func(a, b unknownAddress) int {
		return cmp.Or(a.firstSeen.Compare(b.firstSeen), cmp.Compare(a.addr, b.addr))
	})

	o := &orphanPass{attempts: attempts, used: make([]bool, len(attempts)), keep: make([]bool, len(attempts)),
		adoptedFor: map[int64]bool{}, refused: map[int64]bool{}}
	for _, c := range o.classify(unknown) {
		u := c.unknownAddress
		switch c.verdict {
		case inFlight:
			rep.InFlight = append(rep.InFlight, u.addr)
			continue
		case foreign, ambiguous:
			r.notOurs(ctx, rep, cfg, o, c)
			continue
		}
		// Attempts that accounted for an earlier orphan are taken. The order of
		// classification leaves a free one for every orphan; should none be, nothing
		// decides whose the address is.
		c.cands = slices.DeleteFunc(c.cands, func(i int) bool { return o.used[i] })
		if len(c.cands) == 0 {
			c.verdict = ambiguous
			r.notOurs(ctx, rep, cfg, o, c)
			continue
		}
		adopted, err := r.adopt(ctx, rep, o, c.cands, u.addr, key)
		if err != nil {
			return err
		}
		if adopted {
			continue
		}
		// No device takes it: the orphan is surplus, accounted for by one attempt.
		i := o.surplusOf(c.cands)
		o.used[i] = true
		rep.DeletedOrphans = append(rep.DeletedOrphans, u.addr)
		if rep.DryRun {
			continue
		}
		if err := r.deleteAddress(ctx, u.addr, u.details.ETag); err != nil {
			rep.Errors = append(rep.Errors, fmt.Sprintf("delete orphan %s: %v", u.addr, err))
			continue
		}
		if err := r.Store.ResolveAttempt(ctx, attempts[i].ID, "discarded", u.addr); err != nil {
			return err
		}
	}
	for i, a := range attempts {
		if a.Young && !o.used[i] && !o.keep[i] {
			rep.CreatesInFlight = append(rep.CreatesInFlight, a.Fleet+"/"+a.DeviceID)
		}
	}
	if rep.DryRun || checkFailed {
		// After a failed check the listing is not fully known: an unused attempt may
		// have made the address that could not be inspected.
		return nil
	}
	// The listing was complete and these attempts are no longer in flight: whatever
	// they did not make, they never will.
	for i, a := range attempts {
		if a.Young || o.used[i] || o.keep[i] {
			continue
		}
		if err := r.Store.ResolveAttempt(ctx, a.ID, "discarded", ""); err != nil {
			return err
		}
	}
	return nil
}

// notOurs handles an address that is foreign, or ambiguous (perhaps another tool's):
// it is reported, and deleted only under the foreign policy DeleteForeign. The open
// attempts that may have made an ambiguous address left in the account stay open.
func (r *Reconciler) notOurs(ctx context.Context, rep *Report, cfg Config, o *orphanPass, c classified) {
	if c.verdict == foreign {
		rep.Foreign = append(rep.Foreign, c.addr)
	}
	if cfg.DeleteForeign && !rep.DryRun {
		if err := r.deleteAddress(ctx, c.addr, c.details.ETag); err != nil {
			rep.Errors = append(rep.Errors, fmt.Sprintf("delete %s %s: %v", c.verdict, c.addr, err))
			cfg.DeleteForeign = false // reported as left
		}
	}
	switch {
	case cfg.DeleteForeign:
		rep.DeletedForeign = append(rep.DeletedForeign, c.addr)
	case c.verdict == ambiguous:
		rep.Ambiguous = append(rep.Ambiguous, c.addr)
		for _, i := range c.cands {
			o.keep[i] = true
		}
	}
}

// orphanPass is what one run's orphan pass knows of the open attempts.
type orphanPass struct {
	attempts   []store.OpenAttempt
	used       []bool         // accounts for an orphan of this run
	keep       []bool         // may have made an address left alone: not discarded
	adoptedFor map[int64]bool // devices given an orphan in this run
	refused    map[int64]bool // devices that would not adopt in this run (AdoptAddress said no)
}

// verdict is what an unknown address is to this run.
type verdict int

func (v verdict) String() string {
	return [...]string{"orphan", "in flight", "ambiguous", "foreign"}[v]
}

const (
	orphan    verdict = iota // an open attempt of ours made it: adopt or delete
	inFlight                 // a create still in flight may have made it: leave it
	ambiguous                // ours or another tool's, nothing tells: leave it (or the foreign policy)
	foreign                  // no attempt of ours can have made it
)

// classified is an unknown address with its verdict and, for an orphan, the attempts
// that may have made it.
type classified struct {
	unknownAddress
	verdict verdict
	cands   []int
}

// classify decides what each unknown address is; unknown must be sorted by first
// sighting. An address an attempt is known to have made is that attempt's. Of the
// others, an address may have been made by the open attempts of its spec, with no
// known address, sent before it was first listed. Those sets are nested (an address
// seen later has every candidate of one seen earlier), so the addresses of one spec
// can all be ours only if the k-th of them has at least k candidates: up to the last
// one that has fewer, they are ambiguous, and the later ones may only be made by
// attempts that are not candidates of those.
func (o *orphanPass) classify(unknown []unknownAddress) []classified {
	out := make([]classified, len(unknown))
	var rest []int // indexes into out not decided by a known address
	for n, u := range unknown {
		out[n].unknownAddress = u
		i := slices.IndexFunc(o.attempts, func(a store.OpenAttempt) bool { return a.MadeAddress == u.addr })
		switch {
		case i < 0:
			rest = append(rest, n)
		case o.attempts[i].Young:
			out[n].verdict = inFlight
			o.keep[i] = true
		default:
			out[n].verdict, out[n].cands = orphan, []int{i} // known to be ours: no guessing by spec
		}
	}
	for len(rest) > 0 {
		// One spec at a time, in the order of first sighting.
		spec := unknown[rest[0]].details.Spec
		var group, others []int
		for _, n := range rest {
			if unknown[n].details.Spec.Equal(spec) {
				group = append(group, n)
			} else {
				others = append(others, n)
			}
		}
		rest = others
		var candidates []int // addresses of the group with at least one candidate
		for _, n := range group {
			for i, a := range o.attempts {
				if a.MadeAddress == "" && a.Spec.Equal(spec) && a.SentAt.Before(unknown[n].firstSeen) {
					out[n].cands = append(out[n].cands, i)
				}
			}
			if len(out[n].cands) == 0 {
				out[n].verdict = foreign
			} else {
				candidates = append(candidates, n)
			}
		}
		deficient := -1
		for k, n := range candidates {
			if len(out[n].cands) < k+1 {
				deficient = k
			}
		}
		for k, n := range candidates {
			young := slices.ContainsFunc(out[n].cands, func(i int) bool { return o.attempts[i].Young })
			switch {
			case young:
				out[n].verdict = inFlight
				for _, i := range out[n].cands {
					o.keep[i] = true
				}
				out[n].cands = nil
			case k <= deficient:
				out[n].verdict = ambiguous // its candidates are kept if it is left alone
			case deficient >= 0:
				// Not one of the deficient's candidates: those stay with the
				// ambiguous addresses.
				shared := out[candidates[deficient]].cands
				out[n].cands = slices.DeleteFunc(slices.Clone(out[n].cands), func(i int) bool { return slices.Contains(shared, i) })
			}
		}
	}
	return out
}

// wants reports whether the device of attempt i may still take an orphan in this run.
func (o *orphanPass) wants(i int) bool {
	pk := o.attempts[i].DevicePK
	return !o.adoptedFor[pk] && !o.refused[pk]
}

// surplusOf picks the attempt among cands that accounts for a deleted orphan: one
// whose device does not want an address, so that those that do stay free to match
// another orphan.
func (o *orphanPass) surplusOf(cands []int) int {
	for _, i := range cands {
		if !o.attempts[i].DeviceWantsAddress || !o.wants(i) {
			return i
		}
	}
	return cands[0]
}

// adopt gives addr to the device of one of cands that still wants an address, those
// that wanted one when the attempts were read first. A dry run goes by that reading;
// a real run asks AdoptAddress, which decides on the row as it is now, and tries the
// next device when one refuses.
func (r *Reconciler) adopt(ctx context.Context, rep *Report, o *orphanPass, cands []int, addr, key string) (bool, error) {
	order := make([]int, 0, len(cands))
	for _, i := range cands {
		if o.attempts[i].DeviceWantsAddress {
			order = append(order, i)
		}
	}
	if !rep.DryRun {
		for _, i := range cands {
			if !o.attempts[i].DeviceWantsAddress {
				order = append(order, i)
			}
		}
	}
	for _, i := range order {
		if !o.wants(i) {
			continue
		}
		a := o.attempts[i]
		if !rep.DryRun {
			ok, err := r.Store.AdoptAddress(ctx, a.ID, a.DevicePK, addr, key)
			if err != nil {
				return false, err
			}
			if !ok {
				o.refused[a.DevicePK] = true // it got an address, or a claim, meanwhile
				continue
			}
		}
		o.used[i] = true
		o.adoptedFor[a.DevicePK] = true
		rep.Adopted = append(rep.Adopted, a.Fleet+"/"+a.DeviceID+": "+addr)
		return true, nil
	}
	return false, nil
}

// drift compares the cloud's spec of settled devices with the desired one.
func (r *Reconciler) drift(ctx context.Context, rep *Report, cfg Config, key string) error {
	candidates, err := r.Store.DriftCandidates(ctx, cfg.DriftChecks)
	if err != nil {
		return err
	}
	for _, c := range candidates {
		details, found, err := r.inspect(ctx, c.CloudAddress)
		if err == nil && !found {
			continue // the vanished pass or the next run handles it
		}
		if err != nil {
			rep.Errors = append(rep.Errors, fmt.Sprintf("check drift of %s: %v", c.DeviceID, err))
			continue
		}
		rep.Checked++
		want := c.Spec()
		drift := ""
		if !want.Equal(details.Spec) {
			drift = "spec changed outside vncfleet"
			rep.Drifted = append(rep.Drifted, c.Fleet+"/"+c.DeviceID)
		}
		if rep.DryRun {
			continue
		}
		if err := r.Store.MarkChecked(ctx, c.PK, c.SpecVersion, drift, key); err != nil {
			return err
		}
	}
	return nil
}
