package store

import (
	"errors"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/vncfleet/vncfleet/internal/cloudop"
	"github.com/vncfleet/vncfleet/vnccloud"
)

// Answers of VNC Cloud are counted per manifest as they are recorded (cloud_answers,
// migration 0025), so that a progress read says what the cloud answered lately at the
// cost of a few rows.

// Statuses of an answer as cloud_answers counts it, besides HTTP error statuses.
const (
	answerOK       = 0  // a 2xx answer
	answerNoAnswer = -1 // a timeout, a lost connection, an unreadable answer
)

// answerStatus is how the answer to call c is counted.
func answerStatus(c cloudop.Call) int32 {
	if c.Err == nil {
		return answerOK
	}
	var apiErr *vnccloud.APIError
	if errors.As(c.Err, &apiErr) && apiErr.StatusCode > 0 {
		return int32(apiErr.StatusCode)
	}
	return answerNoAnswer
}

// answerCounts gathers the answers of one recording transaction by manifest and status.
type answerCounts map[[2]int64]int32

func (a answerCounts) add(manifestID int64, calls []cloudop.Call) {
	if manifestID == 0 {
		return
	}
	for _, c := range calls {
		a[[2]int64{manifestID, int64(answerStatus(c))}]++
	}
}

// addAnswersSQL adds the answers of source, rows (m, s, n): n answers of status s for
// manifest m, to the current bucket. In key order (as the status counters do), so
// that writers sharing a shard lock rows in the same order.
func addAnswersSQL(source string) string {
	return `
	INSERT INTO cloud_answers AS c (manifest_id, bucket, status, shard, answers)
	SELECT a.m, date_bin('10 seconds', now(), 'epoch'), a.s, vncfleet_counter_shard(), sum(a.n)
	FROM (` + source + `) AS a(m, s, n)
	GROUP BY 1, 2, 3, 4 ORDER BY 1, 3
	ON CONFLICT (manifest_id, bucket, status, shard) DO UPDATE SET answers = c.answers + EXCLUDED.answers`
}

// addCountedAnswersSQL adds the counts an answerCounts gathered.
var addCountedAnswersSQL = addAnswersSQL(`SELECT * FROM unnest($1::bigint[], $2::int[], $3::int[])`)

// addPollAnswersSQL adds one answer per (device, status) pair, counted under the
// device's manifest.
var addPollAnswersSQL = addAnswersSQL(`
	SELECT d.manifest_id, p.s, 1 FROM unnest($1::bigint[], $2::int[]) AS p(pk, s) JOIN devices d ON d.id = p.pk
	WHERE d.manifest_id IS NOT NULL`)

func (a answerCounts) queue(b *pgx.Batch) {
	if len(a) == 0 {
		return
	}
	manifests := make([]int64, 0, len(a))
	statuses := make([]int32, 0, len(a))
	counts := make([]int32, 0, len(a))
	for k, n := range a {
		manifests, statuses, counts = append(manifests, k[0]), append(statuses, int32(k[1])), append(counts, n)
	}
	b.Queue(addCountedAnswersSQL, manifests, statuses, counts)
}

// queuePollAnswers counts the answers to polls, whose items do not carry their
// manifest: the devices' rows do.
func queuePollAnswers(b *pgx.Batch, results []PollResult) {
	pks := make([]int64, 0, len(results))
	statuses := make([]int32, 0, len(results))
	for _, r := range results {
		for _, c := range r.Report.Calls {
			pks, statuses = append(pks, r.Item.PK), append(statuses, answerStatus(c))
		}
	}
	if len(pks) == 0 {
		return
	}
	b.Queue(addPollAnswersSQL, pks, statuses)
}

// answersKept is how long counted answers are kept; answersPruneEvery how often a
// process deletes older ones.
const (
	answersKept       = 10 * time.Minute
	answersPruneEvery = time.Minute
)

// queueAnswersPrune deletes the buckets older than answersKept, at most once every
// answersPruneEvery per store (s.answersPrunedAt: unix nanoseconds).
func (s *Store) queueAnswersPrune(b *pgx.Batch) {
	now := time.Now().UnixNano()
	last := s.answersPrunedAt.Load()
	if now-last < int64(answersPruneEvery) || !s.answersPrunedAt.CompareAndSwap(last, now) {
		return
	}
	b.Queue(`DELETE FROM cloud_answers WHERE bucket < now() - $1::float8 * interval '1 second'`, answersKept.Seconds())
}
