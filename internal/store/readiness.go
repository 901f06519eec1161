package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/vncfleet/vncfleet/internal/readiness"
)

// firstPollSQL is when device (an SQL expression of its row id) that starts waiting
// for readiness now is first polled: the delay learned for the account in the
// parameter acct (migration 0020), else the one in fallback. An empty account learns
// nothing: the fallback. The estimate is read by an uncorrelated subquery, once per
// statement however many rows it schedules (migration 0027).
func firstPollSQL(acct, fallback, device string) string {
	return `now() + ` + firstPollDelaySQL(acct, fallback, device)
}

// firstPollDelaySQL is the delay of firstPollSQL.
func firstPollDelaySQL(acct, fallback, device string) string {
	return `vncfleet_first_poll_for((SELECT vncfleet_learned_first_poll(` + acct + `)), ` + fallback + `::interval, ` + device + `)`
}

// ReadinessEstimate is what was learned of account's readiness delay; ok is false
// when nothing was yet.
func (s *Store) ReadinessEstimate(ctx context.Context, account string) (e readiness.Estimate, ok bool, err error) {
	var secs float64
	err = s.pool.QueryRow(ctx, `SELECT first_poll_seconds, observations, pending FROM readiness_estimates WHERE account = $1`, account).
		Scan(&secs, &e.Observations, &e.Pending)
	if errors.Is(err, pgx.ErrNoRows) {
		return readiness.Estimate{}, false, nil
	}
	if err != nil {
		return readiness.Estimate{}, false, fmt.Errorf("readiness estimate: %w", err)
	}
	e.FirstPoll = seconds(secs)
	return e, true, nil
}

// LearnReadiness folds the answers of first readiness polls into account's estimate,
// under the row's lock so that concurrent learners (the poller's loops, several
// processes) each see the other's result. When the estimate has moved far enough
// from the one the waiting devices were last scheduled by
// (readiness.ShouldReschedule), the first polls not yet made move to it, so that a
// burst of devices created before anything was learned profits from what their first
// few polls taught. Devices claimed or locked at the moment are skipped, never
// waited for. It returns the new estimate.
func (s *Store) LearnReadiness(ctx context.Context, account string, cfg readiness.Config, obs []readiness.Observation) (readiness.Estimate, error) {
	var next readiness.Estimate
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		var cur readiness.Estimate
		var secs float64
		var resched *float64
		err := tx.QueryRow(ctx, `SELECT first_poll_seconds, rescheduled_seconds, observations, pending
			FROM readiness_estimates WHERE account = $1 FOR UPDATE`, account).Scan(&secs, &resched, &cur.Observations, &cur.Pending)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
		case err != nil:
			return err
		default:
			cur.FirstPoll = seconds(secs)
		}
		next = cfg.Update(cur, obs)
		// Until the waiting first polls are first moved, they were scheduled by the
		// initial delay (the fallback of firstPollSQL) or by an estimate still near it:
		// the first fold of a fresh account, a fraction of a per cent from it, moves
		// no row (it rewrote every waiting device: up to 10,250 in a 20,000-device run).
		last := cfg.WithDefaults().Initial
		if resched != nil {
			last = seconds(*resched)
		}
		moved := readiness.ShouldReschedule(last, next.FirstPoll)
		if _, err := tx.Exec(ctx, `
			INSERT INTO readiness_estimates AS r (account, first_poll_seconds, rescheduled_seconds, observations, pending, updated_at)
			VALUES ($1, $2::float8, CASE WHEN $5::bool THEN $2::float8 END, $3, $4, now())
			ON CONFLICT (account) DO UPDATE SET first_poll_seconds = $2::float8,
			    rescheduled_seconds = CASE WHEN $5::bool THEN $2::float8 ELSE r.rescheduled_seconds END,
			    observations = $3, pending = $4, updated_at = now()`,
			account, next.FirstPoll.Seconds(), next.Observations, next.Pending, moved); err != nil {
			return err
		}
		if !moved {
			return nil
		}
		_, err = tx.Exec(ctx, `
			WITH c AS (
				SELECT id FROM devices
				WHERE status = 'awaiting_ready' AND polls = 0 AND next_poll_at > now() AND awaiting_since IS NOT NULL
				  AND (claim_until IS NULL OR claim_until < now())
				FOR UPDATE SKIP LOCKED)
			UPDATE devices d SET next_poll_at = d.awaiting_since + `+firstPollDelaySQL("$1", "interval '0'", "d.id")+`
			FROM c WHERE d.id = c.id`, account)
		return err
	})
	if err != nil {
		return readiness.Estimate{}, fmt.Errorf("learn readiness: %w", err)
	}
	return next, nil
}

func seconds(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }
