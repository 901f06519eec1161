package metrics

import (
	"context"
	"time"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"
)

// JobMiddleware is a River worker middleware that records how long each job waited
// between its scheduled time and the start of its work: the queue latency River's
// users ask for (riverqueue/river#781).
type JobMiddleware struct {
	river.MiddlewareDefaults
	m *Metrics
}

var _ rivertype.WorkerMiddleware = (*JobMiddleware)(nil)

// JobMiddleware returns the middleware to put in river.Config.Middleware.
func (m *Metrics) JobMiddleware() *JobMiddleware { return &JobMiddleware{m: m} }

// Work implements rivertype.WorkerMiddleware.
func (j *JobMiddleware) Work(ctx context.Context, job *rivertype.JobRow, doInner func(context.Context) error) error {
	started := time.Now()
	if job.AttemptedAt != nil {
		started = *job.AttemptedAt // River's record of this attempt's start
	}
	j.m.jobWait.WithLabelValues(job.Kind).Observe(max(started.Sub(job.ScheduledAt), 0).Seconds())
	return doInner(ctx)
}
