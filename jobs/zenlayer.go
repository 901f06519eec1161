package jobs

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"

	"github.com/vncfleet/vncfleet/internal/store"
	"github.com/vncfleet/vncfleet/ratelimit"
	"github.com/vncfleet/vncfleet/zenlayer"
)

// ConsoleURLArgs fetches the Zenlayer VNC console URL of one device's instance.
type ConsoleURLArgs struct {
	DevicePK   int64  `json:"device_pk"`
	InstanceID string `json:"instance_id"`
}

func (ConsoleURLArgs) Kind() string { return "zenlayer_console_url" }

// consoleURLMaxAttempts bounds the retries while an instance is in a state that
// does not allow a console (starting, stopped): about an hour with River's backoff.
const consoleURLMaxAttempts = 12

func (ConsoleURLArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{MaxAttempts: consoleURLMaxAttempts, UniqueOpts: river.UniqueOpts{ByArgs: true}}
}

// ConsoleURLs is what the console URL job needs of Zenlayer.
type ConsoleURLs interface {
	DescribeVncUrl(ctx context.Context, instanceID string) (string, error)
}

// ConsoleURLWorker calls DescribeVncUrl under Zenlayer's own rate limit.
type ConsoleURLWorker struct {
	river.WorkerDefaults[ConsoleURLArgs]
	deps *Deps
}

// NextRetry backs off from 10 s to 10 min: an instance that is starting usually
// allows a console within minutes.
func (w *ConsoleURLWorker) NextRetry(job *river.Job[ConsoleURLArgs]) time.Time {
	return time.Now().Add(nthBackoff(10*time.Second, 2, 10*time.Minute, 0.2, job.Attempt))
}

func (w *ConsoleURLWorker) Work(ctx context.Context, job *river.Job[ConsoleURLArgs]) error {
	d := w.deps
	if d.Zenlayer == nil {
		return river.JobCancel(errors.New("no Zenlayer credentials configured"))
	}
	if err := d.ZenlayerLimiter.Wait(ctx); err != nil {
		return err
	}
	url, err := d.Zenlayer.DescribeVncUrl(ctx, job.Args.InstanceID)
	switch {
	case err == nil:
		d.ZenlayerLimiter.Report(ratelimit.OK)
		return d.Store.SetConsoleURL(ctx, job.Args.DevicePK, job.Args.InstanceID, url)
	case errors.Is(err, zenlayer.ErrInstanceNotFound):
		// Permanent: the manifest names an instance that does not exist.
		if serr := d.Store.SetConsoleURLError(ctx, job.Args.DevicePK, job.Args.InstanceID, err.Error()); serr != nil {
			return serr
		}
		return river.JobCancel(err)
	case zenlayer.IsThrottled(err):
		// Only throttling slows the limiter; a 5xx or a transport error is just retried.
		d.ZenlayerLimiter.Report(ratelimit.Throttled)
	}
	if job.Attempt >= job.MaxAttempts || !(zenlayer.IsRetryable(err) || zenlayer.IsInstanceNotReady(err)) {
		if serr := d.Store.SetConsoleURLError(ctx, job.Args.DevicePK, job.Args.InstanceID, err.Error()); serr != nil {
			return serr
		}
		if !zenlayer.IsRetryable(err) && !zenlayer.IsInstanceNotReady(err) {
			return river.JobCancel(err)
		}
	}
	return fmt.Errorf("describe console URL of %s: %w", job.Args.InstanceID, err)
}

// EnqueueConsoleURLs inserts a console URL job per device, in tx.
func EnqueueConsoleURLs(ctx context.Context, client *river.Client[pgx.Tx], tx pgx.Tx, wanted []store.ConsoleURLWanted) error {
	params := make([]river.InsertManyParams, len(wanted))
	for i, w := range wanted {
		params[i] = river.InsertManyParams{Args: ConsoleURLArgs{DevicePK: w.DevicePK, InstanceID: w.InstanceID}}
	}
	if _, err := client.InsertManyTx(ctx, tx, params); err != nil {
		return fmt.Errorf("enqueue console URL jobs: %w", err)
	}
	return nil
}
