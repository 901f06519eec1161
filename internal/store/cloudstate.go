package store

import (
	"context"
	"fmt"
	"strconv"
	"time"
)

// CloudState is what a waiting operator needs to see of the cloud behind a
// manifest's progress: the errors it answered lately, the devices waiting out a
// backoff, whether the cluster-wide limiter is paused by a Retry-After, and how fast
// the cluster's limiter lets calls go (slowed down after runs of 503/429).
type CloudState struct {
	// Calls counts the calls made for the manifest's devices that ended in the last
	// minute (the bucket of ten seconds at each end makes it 50 to 60 seconds);
	// ErrorsLastMinute how many of them the cloud answered with an HTTP error, by
	// status, and Unanswered how many got no answer (a timeout, a lost connection).
	Calls            int            `json:"calls"`
	ErrorsLastMinute map[string]int `json:"errorsLastMinute,omitempty"`
	Unanswered       int            `json:"unanswered,omitempty"`
	// InBackoff counts devices owing a call that wait until NextRetryAt at the earliest.
	InBackoff   int        `json:"inBackoff"`
	NextRetryAt *time.Time `json:"nextRetryAt,omitempty"`
	// PausedUntil is set while a Retry-After pauses every process's calls.
	PausedUntil *time.Time `json:"pausedUntil,omitempty"`
	// Limiter is the cluster's VNC Cloud limiter as its processes last published it;
	// absent when no process publishes (none running, or an in-process limiter).
	Limiter *LimiterState `json:"limiter,omitempty"`
}

// LimiterState is the whole cluster's rate limiter, from the rows its processes
// refresh every second (rate_limit_processes, ratelimit.Cluster.Publish).
type LimiterState struct {
	// Rate is the cap, requests per second for the whole cluster (VNCCLOUD_RATE).
	Rate float64 `json:"rate"`
	// Factor is the lowest AIMD factor of a slowed process: 1 at full speed, less
	// while the cloud's 503/429s slow the limiter down (a process then sends at most
	// Rate*Factor).
	Factor float64 `json:"factor"`
	// Sending is the requests per second all processes sent together over their last
	// second.
	Sending float64 `json:"sending"`
	// Processes counts the processes publishing; Slowed those below full speed that
	// sent a request in the last limiterIdle (AIMD recovers only on answers, so a
	// process left without work keeps a low factor while slowing nothing down), since
	// SlowedSince.
	Processes   int        `json:"processes"`
	Slowed      int        `json:"slowed"`
	SlowedSince *time.Time `json:"slowedSince,omitempty"`
}

// limiterLive is how recent a process's row must be to count: a few of its
// one-second refreshes, so that a busy database does not hide a live process, while
// a process that is gone stops counting within seconds.
const limiterLive = 5 * time.Second

// limiterIdle is how long a process may have sent nothing and still count as slowed:
// longer than the gaps between the requests of a slowed process (MinFactor of a low
// rate), shorter than an operator's patience with a stale "slowed down".
const limiterIdle = 10 * time.Second

// LimiterState reads the state of the limiter name ("vnccloud"), nil when no live
// process publishes it.
func (s *Store) LimiterState(ctx context.Context, name string) (*LimiterState, error) {
	l, _, err := s.limiterState(ctx, name)
	return l, err
}

// limiterState reads LimiterState and, in the same statement, until when the limiter
// is paused (nil: it is not), which holds whether or not a process is live.
func (s *Store) limiterState(ctx context.Context, name string) (*LimiterState, *time.Time, error) {
	l := &LimiterState{}
	var paused *time.Time
	err := s.pool.QueryRow(ctx, `
		WITH live AS (
			SELECT *, factor < 1 AND sent_at > now() - $3::float8 * interval '1 second' AS slowed
			FROM rate_limit_processes WHERE name = $1 AND updated_at > now() - $2::float8 * interval '1 second'
		)
		SELECT count(*), coalesce(max(rate), 0), coalesce(min(factor) FILTER (WHERE slowed), 1), coalesce(sum(sending), 0),
			count(*) FILTER (WHERE slowed), min(slowed_at) FILTER (WHERE slowed),
			(SELECT paused_until FROM rate_limits WHERE name = $1 AND paused_until > now())
		FROM live`,
		name, limiterLive.Seconds(), limiterIdle.Seconds()).Scan(&l.Processes, &l.Rate, &l.Factor, &l.Sending, &l.Slowed, &l.SlowedSince, &paused)
	if err != nil {
		return nil, nil, fmt.Errorf("limiter state: %w", err)
	}
	if l.Processes == 0 {
		return nil, paused, nil
	}
	return l, paused, nil
}

// ManifestCloudState reads the cloud state of manifest id's devices. Its cost does not
// grow with the manifest: the answers are counted as they are recorded
// (cloud_answers), and the devices in backoff are found by a partial index.
func (s *Store) ManifestCloudState(ctx context.Context, id int64) (*CloudState, error) {
	c := &CloudState{}
	rows, err := s.pool.Query(ctx, `
		SELECT status, sum(answers) FROM cloud_answers
		WHERE manifest_id = $1 AND bucket > now() - interval '1 minute' GROUP BY 1`, id)
	if err != nil {
		return nil, fmt.Errorf("cloud state: %w", err)
	}
	for rows.Next() {
		var status, n int
		if err := rows.Scan(&status, &n); err != nil {
			rows.Close()
			return nil, fmt.Errorf("cloud state: %w", err)
		}
		c.Calls += n
		if status > 0 {
			if c.ErrorsLastMinute == nil {
				c.ErrorsLastMinute = map[string]int{}
			}
			c.ErrorsLastMinute[strconv.Itoa(status)] = n
		} else if status == answerNoAnswer {
			c.Unanswered = n
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("cloud state: %w", err)
	}
	if err := s.pool.QueryRow(ctx, `
		SELECT count(*), min(next_attempt_at) FROM devices
		WHERE manifest_id = $1 AND next_attempt_at > now() AND op IS NOT NULL`, id).Scan(&c.InBackoff, &c.NextRetryAt); err != nil {
		return nil, fmt.Errorf("cloud state: %w", err)
	}
	if err := s.limiterCloud(ctx, c); err != nil {
		return nil, err
	}
	return c, nil
}

// limiterCloud fills the cluster-wide parts of c: the VNC Cloud limiter's pause and
// state, in one statement.
func (s *Store) limiterCloud(ctx context.Context, c *CloudState) (err error) {
	c.Limiter, c.PausedUntil, err = s.limiterState(ctx, "vnccloud")
	return err
}
