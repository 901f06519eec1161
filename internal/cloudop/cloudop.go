// Package cloudop performs one device's operation against VNC Cloud and says what it
// came to, as a fleet.Outcome. It is the one place that knows which calls an
// operation makes (a GET for the ETag before every write, again on a 412) and what
// each answer means for the device; the River worker, reconciliation and the test
// harnesses all call Perform, so none of them can differ from another.
package cloudop

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/vncfleet/vncfleet/fleet"
	"github.com/vncfleet/vncfleet/vnccloud"
)

// Cloud is what an operation needs of VNC Cloud; *vnccloud.Client provides it.
type Cloud interface {
	Create(ctx context.Context, spec vnccloud.Spec) (vnccloud.Created, error)
	Get(ctx context.Context, address string) (vnccloud.Details, error)
	Update(ctx context.Context, address string, spec vnccloud.Spec, ifMatch string) error
	ResetPassword(ctx context.Context, address string, ifMatch string) (vnccloud.Created, error)
	Delete(ctx context.Context, address string, ifMatch string) error
	Ready(ctx context.Context, address string) (bool, error)
}

// Caller makes one call: through the rate limiter, under a timeout. sent is false
// when the request never left the process, which proves it had no effect.
type Caller func(ctx context.Context, fn func(ctx context.Context) error) (sent bool, err error)

// Direct calls fn at once, for callers with no limiter.
func Direct(ctx context.Context, fn func(ctx context.Context) error) (bool, error) {
	return true, fn(ctx)
}

// Task is one device's operation.
type Task struct {
	Op           fleet.Op
	DeviceID     string
	Spec         vnccloud.Spec // create and update
	CloudAddress string        // every operation but create
	// Unresolved names the allow_devices entries that have no address: a create or
	// update of such a listen device is refused without a request.
	Unresolved []string
}

// Call is one request made, for the device's event log.
type Call struct {
	Operation string // create, get, update, reset, delete, ready
	Err       error  // nil: answered 2xx
	Pending   bool   // ready: answered "changes pending"
}

// Report is what an operation came to.
type Report struct {
	Outcome fleet.Outcome
	// Address and Password: Created (both) and Rotated (the password).
	Address, Password string
	// Err is the cause of a Refused, Retryable or Unknown outcome.
	Err   error
	Calls []Call
}

// maxPreconditionRetries bounds the GET/write loop when another writer keeps changing
// the address between our GET and our write (412).
const maxPreconditionRetries = 3

// Perform carries out t and reports its outcome. It never returns an error of its
// own: whatever fails is an outcome (see Classify).
func Perform(ctx context.Context, cloud Cloud, call Caller, t Task) Report {
	p := &performer{ctx: ctx, cloud: cloud, call: call}
	switch t.Op {
	case fleet.OpCreate:
		p.create(t)
	case fleet.OpUpdate:
		p.update(t)
	case fleet.OpDelete:
		p.delete(t)
	case fleet.OpRotate:
		p.rotate(t)
	case fleet.OpPoll:
		p.poll(t)
	default:
		p.rep.Outcome, p.rep.Err = fleet.Refused, fmt.Errorf("unknown operation %q", t.Op)
	}
	return p.rep
}

type performer struct {
	ctx   context.Context
	cloud Cloud
	call  Caller
	rep   Report
	sent  bool // some request left the process
}

// do makes one call and logs it.
func (p *performer) do(op string, fn func(ctx context.Context) error) error {
	sent, err := p.call(p.ctx, fn)
	if sent {
		p.sent = true
		p.rep.Calls = append(p.rep.Calls, Call{Operation: op, Err: err})
	}
	return err
}

// fail records the outcome of err; mutating says whether err is the answer (or the
// lack of one) to a call that may change the address, rather than to a GET before it.
func (p *performer) fail(err error, mutating bool) {
	p.rep.Err = err
	p.rep.Outcome = Classify(err, p.sent, mutating)
}

func (p *performer) refuseUnresolved(t Task) bool {
	if len(t.Unresolved) == 0 {
		return false
	}
	p.rep.Outcome = fleet.Refused
	p.rep.Err = fmt.Errorf("allow_devices %s: no cloud address (failed or deleted)", strings.Join(t.Unresolved, ", "))
	return true
}

func (p *performer) create(t Task) {
	if p.refuseUnresolved(t) {
		return
	}
	var created vnccloud.Created
	err := p.do("create", func(ctx context.Context) error {
		var err error
		created, err = p.cloud.Create(ctx, t.Spec)
		return err
	})
	if err != nil {
		p.fail(err, true)
		return
	}
	p.rep.Outcome, p.rep.Address, p.rep.Password = fleet.Created, created.CloudAddress, created.CloudPassword
}

// withETag runs GET then write(etag), again on 412. vanished: a 404 at either step.
// mutating says whether a failure was the write's.
func (p *performer) withETag(t Task, op string, write func(ctx context.Context, etag string) error) (vanished bool, err error, mutating bool) {
	for try := 0; ; try++ {
		var details vnccloud.Details
		err = p.do("get", func(ctx context.Context) error {
			var err error
			details, err = p.cloud.Get(ctx, t.CloudAddress)
			return err
		})
		if errors.Is(err, vnccloud.ErrNotFound) {
			return true, nil, false
		}
		if err != nil {
			return false, err, false
		}
		err = p.do(op, func(ctx context.Context) error { return write(ctx, details.ETag) })
		switch {
		case errors.Is(err, vnccloud.ErrNotFound):
			return true, nil, true
		case errors.Is(err, vnccloud.ErrPreconditionFailed) && try < maxPreconditionRetries:
			continue
		}
		return false, err, true
	}
}

func (p *performer) update(t Task) {
	if p.refuseUnresolved(t) {
		return
	}
	vanished, err, mutating := p.withETag(t, "update", func(ctx context.Context, etag string) error {
		return p.cloud.Update(ctx, t.CloudAddress, t.Spec, etag)
	})
	switch {
	case err != nil:
		p.fail(err, mutating)
	case vanished:
		p.rep.Outcome = fleet.Vanished
	default:
		p.rep.Outcome = fleet.Applied
	}
}

func (p *performer) delete(t Task) {
	if t.CloudAddress == "" {
		p.rep.Outcome = fleet.Deleted
		return
	}
	// A 404 at any step means the address is already gone, which is what we wanted.
	_, err, mutating := p.withETag(t, "delete", func(ctx context.Context, etag string) error {
		return p.cloud.Delete(ctx, t.CloudAddress, etag)
	})
	if err != nil {
		p.fail(err, mutating)
		return
	}
	p.rep.Outcome = fleet.Deleted
}

func (p *performer) rotate(t Task) {
	var created vnccloud.Created
	vanished, err, mutating := p.withETag(t, "reset", func(ctx context.Context, etag string) error {
		var err error
		created, err = p.cloud.ResetPassword(ctx, t.CloudAddress, etag)
		return err
	})
	switch {
	case err != nil:
		p.fail(err, mutating)
	case vanished:
		p.rep.Outcome = fleet.Vanished
	default:
		p.rep.Outcome, p.rep.Password = fleet.Rotated, created.CloudPassword
	}
}

func (p *performer) poll(t Task) {
	var ready bool
	err := p.do("ready", func(ctx context.Context) error {
		var err error
		ready, err = p.cloud.Ready(ctx, t.CloudAddress)
		return err
	})
	switch {
	case errors.Is(err, vnccloud.ErrNotFound):
		p.rep.Outcome, p.rep.Err = fleet.Vanished, err
	case err != nil:
		p.fail(err, false)
	case ready:
		p.rep.Outcome = fleet.Ready
	default:
		p.rep.Outcome = fleet.Pending
		p.rep.Calls[len(p.rep.Calls)-1].Pending = true
	}
}

// Classify is the outcome of a failed operation whose last call answered err. sent
// says whether any request of the operation left the process; mutating whether err
// belongs to a call that may change the address (create, update, reset, delete) rather
// than to a read.
//
//   - Nothing sent: NotSent. Proof that the cloud did nothing.
//   - A read that failed: Retryable for a transient error, Refused otherwise; a
//     failed read changed nothing, so it is never Unknown.
//   - A 429, or a 412 that kept coming: Retryable; the cloud refused this time.
//   - Another 4xx, or a request the client would not build: Refused.
//   - A 5xx, a timeout, a connection lost, an answer that could not be read: Unknown,
//     since the cloud may have acted (a create committed, then answered 503).
func Classify(err error, sent, mutating bool) fleet.Outcome {
	var invalid *vnccloud.ValidationError
	var apiErr *vnccloud.APIError
	switch {
	case errors.As(err, &invalid):
		return fleet.Refused
	case !sent:
		return fleet.NotSent
	case errors.As(err, &apiErr):
		switch {
		case apiErr.StatusCode == http.StatusTooManyRequests || apiErr.StatusCode == http.StatusPreconditionFailed:
			return fleet.Retryable
		case apiErr.StatusCode >= 500:
			if mutating {
				return fleet.Unknown
			}
			return fleet.Retryable
		}
		return fleet.Refused
	case !mutating:
		if vnccloud.IsRetryable(err) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			return fleet.Retryable
		}
		return fleet.Refused
	}
	return fleet.Unknown
}
