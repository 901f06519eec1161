// Package reconcile compares the VNC Cloud account with the store and acts on the
// differences: addresses that vanished are created again, drifted specs are put back,
// orphans of lost creates are adopted or deleted, foreign addresses are reported, and
// any device whose row owes work without a job gets one. It is level-triggered and
// idempotent: a second run right after the first finds nothing to do.
package reconcile

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"log/slog"
	"time"

	"github.com/vncfleet/vncfleet/internal/store"
	"github.com/vncfleet/vncfleet/vnccloud"
)

// Cloud is what reconciliation needs of VNC Cloud.
type Cloud interface {
	List(ctx context.Context, opts vnccloud.ListOptions) iter.Seq2[string, error]
	Get(ctx context.Context, address string) (vnccloud.Details, error)
	Delete(ctx context.Context, address string, ifMatch string) error
}

// Config tunes reconciliation.
type Config struct {
	// AdoptGrace is how old an unanswered create must be before its orphan may be
	// adopted or deleted: a younger one may still be in flight, so an address it may
	// have made (same spec) is reported InFlight and left for a later run, never taken
	// for foreign. Defaults to 10 minutes; it must exceed the claim lease plus a call's
	// timeout.
	AdoptGrace time.Duration
	// DeleteForeign deletes addresses vncfleet did not create. Defaults to false:
	// they are only reported, because the account may be shared with other tools.
	DeleteForeign bool
	// DriftChecks bounds how many devices one run GETs to compare specs, the least
	// recently checked first; each check spends rate budget. Defaults to 1000.
	DriftChecks int
}

// Reconciler runs reconciliation.
type Reconciler struct {
	Store *store.Store
	Cloud Cloud
	// Call wraps every API call (the rate limiter); nil calls directly.
	Call   func(ctx context.Context, fn func(ctx context.Context) error) error
	Config Config
	Logger *slog.Logger
	// Enqueue starts work jobs for the devices scheduled under key.
	Enqueue func(ctx context.Context, key string, devices int) error
}

// Report says what a run found and did (or, in a dry run, would do).
type Report struct {
	DryRun         bool      `json:"dryRun"`
	StartedAt      time.Time `json:"startedAt"`
	Listed         int       `json:"listed"`
	Known          int       `json:"known"`
	Vanished       []string  `json:"vanished"`       // "fleet/device_id" whose address is gone: created again
	Drifted        []string  `json:"drifted"`        // "fleet/device_id" whose spec was changed outside vncfleet: put back
	Adopted        []string  `json:"adopted"`        // "fleet/device_id: address" orphans given to their device
	DeletedOrphans []string  `json:"deletedOrphans"` // orphan addresses of lost creates, deleted
	// InFlight are unknown addresses that a create still within its grace period may
	// have made: neither adopted, deleted nor called foreign; a later run settles them.
	InFlight       []string `json:"inFlight"`
	Foreign        []string `json:"foreign"` // addresses vncfleet did not create
	DeletedForeign []string `json:"deletedForeign"`
	Rescheduled    int      `json:"rescheduled"` // devices whose owed work had no job
	Checked        int      `json:"checked"`     // drift checks made
	WorkKey        string   `json:"workKey,omitempty"`
	Errors         []string `json:"errors"`
}

func (r *Reconciler) call(ctx context.Context, fn func(ctx context.Context) error) error {
	if r.Call == nil {
		return fn(ctx)
	}
	return r.Call(ctx, fn)
}

// Run reconciles once. Errors on single addresses are collected in the report; an
// error return means the run could not complete (listing or database failed).
func (r *Reconciler) Run(ctx context.Context, dryRun bool) (*Report, error) {
	cfg := r.Config
	if cfg.AdoptGrace <= 0 {
		cfg.AdoptGrace = 10 * time.Minute
	}
	if cfg.DriftChecks <= 0 {
		cfg.DriftChecks = 1000
	}
	rep := &Report{DryRun: dryRun, StartedAt: time.Now().UTC()}
	key := fmt.Sprintf("reconcile:%d", rep.StartedAt.UnixNano())
	rep.WorkKey = key

	// What the store knew before listing: an address of it missing from the listing
	// vanished (confirmed by a GET, since a listing can miss entries changed while paging).
	knownBefore, err := r.Store.KnownAddresses(ctx)
	if err != nil {
		return nil, err
	}
	// Creates sent since then may still be in flight: they are young (the grace exceeds
	// the claim lease plus a call's timeout, so older ones were answered or given up
	// before the listing began).
	youngSince := time.Now().Add(-cfg.AdoptGrace)
	listed := map[string]bool{}
	// Each page is a request of its own, so each goes through the rate limiter.
	for addr, err := range r.Cloud.List(ctx, vnccloud.ListOptions{Limit: 99, PerRequest: r.call}) {
		if err != nil {
			return nil, fmt.Errorf("list cloud addresses: %w", err)
		}
		listed[addr] = true
	}
	rep.Listed = len(listed)
	rep.Known = len(knownBefore)

	if err := r.vanished(ctx, rep, knownBefore, listed, key); err != nil {
		return nil, err
	}
	// The open attempts first, then the addresses known: a create answered in between
	// is in one or the other (read the other way round, its address would be in
	// neither and taken for foreign).
	attempts, err := r.Store.OpenAttempts(ctx, youngSince)
	if err != nil {
		return nil, err
	}
	// Re-read: addresses recorded while we listed are not orphans.
	knownAfter, err := r.Store.KnownAddresses(ctx)
	if err != nil {
		return nil, err
	}
	if err := r.orphans(ctx, rep, cfg, attempts, knownAfter, listed, key); err != nil {
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
	return rep, nil
}

func (r *Reconciler) vanished(ctx context.Context, rep *Report, known map[string]store.KnownDevice, listed map[string]bool, key string) error {
	for addr, dev := range known {
		if listed[addr] || dev.Busy || dev.Status == "deleting" {
			continue
		}
		err := r.call(ctx, func(ctx context.Context) error {
			_, err := r.Cloud.Get(ctx, addr)
			return err
		})
		if err == nil {
			continue // missed by the listing, but there
		}
		if !errors.Is(err, vnccloud.ErrNotFound) {
			rep.Errors = append(rep.Errors, fmt.Sprintf("check %s (%s): %v", dev.DeviceID, addr, err))
			continue
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

// orphans handles listed addresses the store does not know. An unanswered create
// whose spec matches may have made it: each such attempt accounts for at most one
// orphan, which is adopted when a matching attempt's device still has no address and
// deleted otherwise. An address a young attempt may have made is left for a later
// run: that create may still be in flight, and its job record the address. Orphans no
// attempt accounts for are foreign.
func (r *Reconciler) orphans(ctx context.Context, rep *Report, cfg Config, attempts []store.OpenAttempt,
	known map[string]store.KnownDevice, listed map[string]bool, key string) error {
	o := &orphanPass{attempts: attempts, used: make([]bool, len(attempts)), keep: make([]bool, len(attempts)),
		adoptedFor: map[int64]bool{}, refused: map[int64]bool{}}
	checkFailed := false
	for addr := range listed {
		if _, ok := known[addr]; ok {
			continue
		}
		var details vnccloud.Details
		err := r.call(ctx, func(ctx context.Context) error {
			var err error
			details, err = r.Cloud.Get(ctx, addr)
			return err
		})
		if errors.Is(err, vnccloud.ErrNotFound) {
			continue // deleted meanwhile
		}
		if err != nil {
			// Whatever attempt made this address, it must not be discarded below.
			checkFailed = true
			rep.Errors = append(rep.Errors, fmt.Sprintf("inspect %s: %v", addr, err))
			continue
		}
		cands, inFlight := o.candidates(addr, details.Spec)
		if inFlight {
			rep.InFlight = append(rep.InFlight, addr)
			continue
		}
		if len(cands) == 0 {
			rep.Foreign = append(rep.Foreign, addr)
			if cfg.DeleteForeign && !rep.DryRun {
				if err := r.deleteAddress(ctx, addr, details.ETag); err != nil {
					rep.Errors = append(rep.Errors, fmt.Sprintf("delete foreign %s: %v", addr, err))
					continue
				}
				rep.DeletedForeign = append(rep.DeletedForeign, addr)
			}
			continue
		}
		adopted, err := r.adopt(ctx, rep, o, cands, addr, key)
		if err != nil {
			return err
		}
		if adopted {
			continue
		}
		// No device takes it: the orphan is surplus, accounted for by one attempt.
		i := o.surplusOf(cands)
		o.used[i] = true
		rep.DeletedOrphans = append(rep.DeletedOrphans, addr)
		if rep.DryRun {
			continue
		}
		if err := r.deleteAddress(ctx, addr, details.ETag); err != nil {
			rep.Errors = append(rep.Errors, fmt.Sprintf("delete orphan %s: %v", addr, err))
			continue
		}
		if err := r.Store.ResolveAttempt(ctx, attempts[i].ID, "discarded", addr); err != nil {
			return err
		}
	}
	if rep.DryRun || checkFailed {
		// After a failed check the listing is not fully known: an unused attempt may
		// have made the address that could not be inspected.
		return nil
	}
	// The listing was complete and these attempts are past their grace: whatever
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

// orphanPass is what one run's orphan pass knows of the open attempts.
type orphanPass struct {
	attempts   []store.OpenAttempt
	used       []bool         // accounts for an orphan of this run
	keep       []bool         // may have made an address left for a later run: not discarded
	adoptedFor map[int64]bool // devices given an orphan in this run
	refused    map[int64]bool // devices that would not adopt in this run (AdoptAddress said no)
}

// candidates returns the unused attempts that may have made addr, an unknown address
// with spec: the one known to have made it, else every old one of the same spec. With
// inFlight, a young attempt may have made it: the address is left alone, and so are
// the old attempts that may have made it.
func (o *orphanPass) candidates(addr string, spec vnccloud.Spec) (cands []int, inFlight bool) {
	for i, a := range o.attempts {
		if !o.used[i] && a.MadeAddress == addr {
			if a.Young {
				return nil, true
			}
			return []int{i}, false // known to be ours: no guessing by spec
		}
	}
	for i, a := range o.attempts {
		if a.MadeAddress != "" || !a.Spec.Equal(spec) {
			continue
		}
		if a.Young {
			inFlight = true
		} else if !o.used[i] {
			cands = append(cands, i)
		}
	}
	if inFlight {
		for _, i := range cands {
			o.keep[i] = true
		}
		return nil, true
	}
	return cands, false
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

func (r *Reconciler) deleteAddress(ctx context.Context, addr, etag string) error {
	err := r.call(ctx, func(ctx context.Context) error { return r.Cloud.Delete(ctx, addr, etag) })
	if errors.Is(err, vnccloud.ErrNotFound) {
		return nil
	}
	return err
}

// drift compares the cloud's spec of settled devices with the desired one.
func (r *Reconciler) drift(ctx context.Context, rep *Report, cfg Config, key string) error {
	candidates, err := r.Store.DriftCandidates(ctx, cfg.DriftChecks)
	if err != nil {
		return err
	}
	for _, c := range candidates {
		var details vnccloud.Details
		err := r.call(ctx, func(ctx context.Context) error {
			var err error
			details, err = r.Cloud.Get(ctx, c.CloudAddress)
			return err
		})
		if errors.Is(err, vnccloud.ErrNotFound) {
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
