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
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/vncfleet/vncfleet/fleet"
	"github.com/vncfleet/vncfleet/ratelimit"
	"github.com/vncfleet/vncfleet/vnccloud"
)

// Cloud is what an operation needs of VNC Cloud; *vnccloud.Client provides it.
type Cloud interface {
	Deleter
	Create(ctx context.Context, spec vnccloud.Spec) (vnccloud.Created, error)
	Update(ctx context.Context, address string, spec vnccloud.Spec, ifMatch string) error
	ResetPassword(ctx context.Context, address string, ifMatch string) (vnccloud.Created, error)
	Ready(ctx context.Context, address string) (bool, error)
}

// Reader is what Inspect needs of VNC Cloud.
type Reader interface {
	Get(ctx context.Context, address string) (vnccloud.Details, error)
}

// Deleter is what Delete needs of VNC Cloud.
type Deleter interface {
	Reader
	Delete(ctx context.Context, address string, ifMatch string) error
}

// Caller makes one call: through the rate limiter, under a timeout. sent is false
// when the request never left the process, which proves it had no effect.
type Caller func(ctx context.Context, fn func(ctx context.Context) error) (sent bool, err error)

// Direct calls fn at once, for callers with no limiter.
func Direct(ctx context.Context, fn func(ctx context.Context) error) (bool, error) {
	return true, fn(ctx)
}

// Limited makes calls through a rate limiter, each under a timeout, and feeds every
// answer back to the limiter by one rule (LimiterOutcome, ratelimit.Feedback): the
// River worker and reconciliation both call VNC Cloud through it.
type Limited struct {
	Limiter ratelimit.Limiter
	// Timeout bounds each call once it is sent; 0 leaves it to ctx.
	Timeout time.Duration
	// Logger hears of a pause the limiter could not record; nil discards.
	Logger *slog.Logger
}

// Call is a Caller: it waits for a send slot, then calls fn.
func (l Limited) Call(ctx context.Context, fn func(ctx context.Context) error) (sent bool, err error) {
	return l.CallAfterWait(ctx, ctx, fn)
}

// CallAfterWait is Call whose wait for a send slot ends, unsent, when waitCtx does
// (a cancelled manifest), while the call itself, once sent, runs under ctx alone.
func (l Limited) CallAfterWait(waitCtx, ctx context.Context, fn func(ctx context.Context) error) (sent bool, err error) {
	if err := l.Limiter.Wait(waitCtx); err != nil {
		return false, err
	}
	callCtx := ctx
	if l.Timeout > 0 {
		var cancel context.CancelFunc
		callCtx, cancel = context.WithTimeout(ctx, l.Timeout)
		defer cancel()
	}
	err = fn(callCtx)
	o, retryAfter := LimiterOutcome(err)
	if perr := ratelimit.Feedback(ctx, l.Limiter, o, retryAfter); perr != nil && l.Logger != nil {
		l.Logger.Warn("rate limiter pause failed", "err", perr)
	}
	return true, err
}

// LimiterOutcome is what the answer of one sent request tells the rate limiter: OK
// for an answer, Throttled for a 503 or a 429 (with the Retry-After it named, if
// any), Failed for anything else, which says nothing about the rate.
func LimiterOutcome(err error) (ratelimit.Outcome, time.Duration) {
	var apiErr *vnccloud.APIError
	switch {
	case err == nil:
		return ratelimit.OK, 0
	case errors.As(err, &apiErr) && (apiErr.StatusCode == vnccloud.StatusServiceUnavailable || apiErr.StatusCode == vnccloud.StatusTooManyRequests):
		return ratelimit.Throttled, apiErr.RetryAfter
	}
	return ratelimit.Failed, 0
}

// Task is one device's operation.
type Task struct {
	Op           fleet.Op
	DeviceID     string
	Spec         vnccloud.Spec // create and update
	CloudAddress string        // every operation but create
	// ETag, when set, is the address's ETag as the caller last read it: the first
	// write of an update, delete or reset uses it instead of a GET of its own. A 412
	// (changed since) is met like any other: a fresh GET and another try.
	ETag string
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
	p := &performer{ctx: ctx, reader: cloud, call: call}
	switch t.Op {
	case fleet.OpCreate:
		p.create(cloud, t)
	case fleet.OpUpdate:
		p.update(cloud, t)
	case fleet.OpDelete:
		p.delete(cloud, t)
	case fleet.OpRotate:
		p.rotate(cloud, t)
	case fleet.OpPoll:
		p.poll(cloud, t)
	default:
		p.rep.Outcome, p.rep.Err = fleet.Refused, fmt.Errorf("unknown operation %q", t.Op)
	}
	return p.rep
}

// Delete deletes t.CloudAddress (Deleted when it is gone, 404 included): Perform's
// delete, for callers that hold only a Deleter (reconciliation deleting orphans).
func Delete(ctx context.Context, cloud Deleter, call Caller, t Task) Report {
	p := &performer{ctx: ctx, reader: cloud, call: call}
	p.delete(cloud, t)
	return p.rep
}

// Inspect reads an address. Its Report's Outcome is empty when the address was
// read, Vanished on a 404, and otherwise what the failed read came to (Retryable,
// Refused or NotSent; a read is never Unknown).
func Inspect(ctx context.Context, cloud Reader, call Caller, address string) (vnccloud.Details, Report) {
	p := &performer{ctx: ctx, reader: cloud, call: call}
	details, vanished, err := p.get(address)
	switch {
	case vanished:
		p.rep.Outcome, p.rep.Err = fleet.Vanished, err
	case err != nil:
		p.fail(err, false)
	}
	return details, p.rep
}

// Read makes one read request that is not of one address (a page of a listing)
// and classifies its failure as Inspect does; the Outcome is empty when it answered.
func Read(ctx context.Context, call Caller, op string, fn func(ctx context.Context) error) Report {
	p := &performer{ctx: ctx, call: call}
	if err := p.do(op, fn); err != nil {
		p.fail(err, false)
	}
	return p.rep
}

type performer struct {
	ctx    context.Context
	reader Reader // the GET before a write
	call   Caller
	rep    Report
	sent   bool // some request left the process
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

func (p *performer) create(cloud Cloud, t Task) {
	if p.refuseUnresolved(t) {
		return
	}
	var created vnccloud.Created
	err := p.do("create", func(ctx context.Context) error {
		var err error
		created, err = cloud.Create(ctx, t.Spec)
		return err
	})
	if err != nil {
		p.fail(err, true)
		return
	}
	p.rep.Outcome, p.rep.Address, p.rep.Password = fleet.Created, created.CloudAddress, created.CloudPassword
}

// get GETs address; vanished: answered 404 (err is then that answer).
func (p *performer) get(address string) (details vnccloud.Details, vanished bool, err error) {
	err = p.do("get", func(ctx context.Context) error {
		var err error
		details, err = p.reader.Get(ctx, address)
		return err
	})
	return details, errors.Is(err, vnccloud.ErrNotFound), err
}

// withETag runs GET then write(etag), again on 412; the first GET is skipped when the
// task carries an ETag. vanished: a 404 at either step. mutating says whether a
// failure was the write's.
func (p *performer) withETag(t Task, op string, write func(ctx context.Context, etag string) error) (vanished bool, err error, mutating bool) {
	for try := 0; ; try++ {
		etag := t.ETag
		if try > 0 || etag == "" {
			details, vanished, err := p.get(t.CloudAddress)
			if vanished {
				return true, nil, false
			}
			if err != nil {
				return false, err, false
			}
			etag = details.ETag
		}
		err = p.do(op, func(ctx context.Context) error { return write(ctx, etag) })
		switch {
		case errors.Is(err, vnccloud.ErrNotFound):
			return true, nil, true
		case errors.Is(err, vnccloud.ErrPreconditionFailed) && try < maxPreconditionRetries:
			continue
		}
		return false, err, true
	}
}

func (p *performer) update(cloud Cloud, t Task) {
	if p.refuseUnresolved(t) {
		return
	}
	vanished, err, mutating := p.withETag(t, "update", func(ctx context.Context, etag string) error {
		return cloud.Update(ctx, t.CloudAddress, t.Spec, etag)
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

func (p *performer) delete(cloud Deleter, t Task) {
	if t.CloudAddress == "" {
		p.rep.Outcome = fleet.Deleted
		return
	}
	// A 404 at any step means the address is already gone, which is what we wanted.
	_, err, mutating := p.withETag(t, "delete", func(ctx context.Context, etag string) error {
		return cloud.Delete(ctx, t.CloudAddress, etag)
	})
	if err != nil {
		p.fail(err, mutating)
		return
	}
	p.rep.Outcome = fleet.Deleted
}

func (p *performer) rotate(cloud Cloud, t Task) {
	var created vnccloud.Created
	vanished, err, mutating := p.withETag(t, "reset", func(ctx context.Context, etag string) error {
		var err error
		created, err = cloud.ResetPassword(ctx, t.CloudAddress, etag)
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

func (p *performer) poll(cloud Cloud, t Task) {
	var ready bool
	err := p.do("ready", func(ctx context.Context) error {
		var err error
		ready, err = cloud.Ready(ctx, t.CloudAddress)
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
