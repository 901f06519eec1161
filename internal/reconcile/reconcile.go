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
	// adopted or deleted: a younger one may still be in flight. Defaults to 10 minutes;
	// it must exceed the claim lease plus a call's timeout.
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
	Vanished       []string  `json:"vanished"`       // device_ids whose address is gone: created again
	Drifted        []string  `json:"drifted"`        // device_ids whose spec was changed outside vncfleet: put back
	Adopted        []string  `json:"adopted"`        // "device_id: address" orphans given to their device
	DeletedOrphans []string  `json:"deletedOrphans"` // orphan addresses of lost creates, deleted
	Foreign        []string  `json:"foreign"`        // addresses vncfleet did not create
	DeletedForeign []string  `json:"deletedForeign"`
	Rescheduled    int       `json:"rescheduled"` // devices whose owed work had no job
	Checked        int       `json:"checked"`     // drift checks made
	WorkKey        string    `json:"workKey,omitempty"`
	Errors         []string  `json:"errors"`
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
	if r.Config.AdoptGrace <= 0 {
		r.Config.AdoptGrace = 10 * time.Minute
	}
	if r.Config.DriftChecks <= 0 {
		r.Config.DriftChecks = 1000
	}
	if r.Logger == nil {
		r.Logger = slog.New(slog.DiscardHandler)
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
	attemptsBefore := time.Now().Add(-r.Config.AdoptGrace)
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
	// Re-read: addresses recorded while we listed are not orphans.
	knownAfter, err := r.Store.KnownAddresses(ctx)
	if err != nil {
		return nil, err
	}
	if err := r.orphans(ctx, rep, knownAfter, listed, attemptsBefore, key); err != nil {
		return nil, err
	}
	if err := r.drift(ctx, rep, key); err != nil {
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
		rep.Vanished = append(rep.Vanished, dev.Fleet+"/"+dev.DeviceID)
		if !rep.DryRun {
			if err := r.Store.MarkVanished(ctx, dev.PK, key); err != nil {
				return err
			}
		}
	}
	return nil
}

// orphans handles listed addresses the store does not know. An unanswered create
// whose spec matches may have made it: each such attempt accounts for at most one
// orphan, which is adopted when the attempt's device still has no address and
// deleted otherwise. Orphans no attempt accounts for are foreign.
func (r *Reconciler) orphans(ctx context.Context, rep *Report, known map[string]store.KnownDevice, listed map[string]bool, before time.Time, key string) error {
	attempts, err := r.Store.OpenAttempts(ctx, before)
	if err != nil {
		return err
	}
	used := make([]bool, len(attempts))
	adoptedFor := map[int64]bool{}
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
			rep.Errors = append(rep.Errors, fmt.Sprintf("inspect %s: %v", addr, err))
			continue
		}
		match := -1
		for i, a := range attempts {
			if used[i] {
				continue
			}
			if a.MadeAddress == addr {
				match = i // known to be ours: no guessing by spec
				break
			}
			if a.MadeAddress != "" || !a.Spec.Equal(details.Spec) {
				continue
			}
			// Prefer an attempt whose device still wants an address.
			if match == -1 || (a.DeviceWantsAddress && !adoptedFor[a.DevicePK] && !attempts[match].DeviceWantsAddress) {
				match = i
			}
		}
		if match == -1 {
			rep.Foreign = append(rep.Foreign, addr)
			if r.Config.DeleteForeign && !rep.DryRun {
				if err := r.deleteAddress(ctx, addr, details.ETag); err != nil {
					rep.Errors = append(rep.Errors, fmt.Sprintf("delete foreign %s: %v", addr, err))
					continue
				}
				rep.DeletedForeign = append(rep.DeletedForeign, addr)
			}
			continue
		}
		used[match] = true
		a := attempts[match]
		if a.DeviceWantsAddress && !adoptedFor[a.DevicePK] {
			adoptedFor[a.DevicePK] = true
			rep.Adopted = append(rep.Adopted, a.Fleet+"/"+a.DeviceID+": "+addr)
			if rep.DryRun {
				continue
			}
			ok, err := r.Store.AdoptAddress(ctx, a.ID, a.DevicePK, addr, key)
			if err != nil {
				return err
			}
			if ok {
				continue
			}
			// The device got an address meanwhile: this orphan is surplus.
			rep.Adopted = rep.Adopted[:len(rep.Adopted)-1]
		}
		rep.DeletedOrphans = append(rep.DeletedOrphans, addr)
		if rep.DryRun {
			continue
		}
		if err := r.deleteAddress(ctx, addr, details.ETag); err != nil {
			rep.Errors = append(rep.Errors, fmt.Sprintf("delete orphan %s: %v", addr, err))
			continue
		}
		if err := r.Store.ResolveAttempt(ctx, a.ID, "discarded", addr); err != nil {
			return err
		}
	}
	if rep.DryRun {
		return nil
	}
	// The listing was complete and these attempts are past their grace: whatever
	// they did not make, they never will.
	for i, a := range attempts {
		if !used[i] {
			if err := r.Store.ResolveAttempt(ctx, a.ID, "discarded", ""); err != nil {
				return err
			}
		}
	}
	return nil
}

func (r *Reconciler) deleteAddress(ctx context.Context, addr, etag string) error {
	err := r.call(ctx, func(ctx context.Context) error { return r.Cloud.Delete(ctx, addr, etag) })
	if errors.Is(err, vnccloud.ErrNotFound) {
		return nil
	}
	return err
}

// drift compares the cloud's spec of settled devices with the desired one.
func (r *Reconciler) drift(ctx context.Context, rep *Report, key string) error {
	candidates, err := r.Store.DriftCandidates(ctx, r.Config.DriftChecks)
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
			rep.Drifted = append(rep.Drifted, c.DeviceID)
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
