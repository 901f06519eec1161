package jobs

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/vncfleet/vncfleet/fleet"
	"github.com/vncfleet/vncfleet/internal/store"
	"github.com/vncfleet/vncfleet/ratelimit"
	"github.com/vncfleet/vncfleet/vnccloud"
)

// recordingStore records what Finish is given.
type recordingStore struct {
	Store
	mu      sync.Mutex
	groups  [][]store.Result
	firstIn chan struct{} // closed when the first group is recorded
}

func (s *recordingStore) Finish(_ context.Context, results []store.Result, _ store.RetryPolicy) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.groups = append(s.groups, results)
	if len(s.groups) == 1 {
		close(s.firstIn)
	}
	return nil
}

// gatedCloud answers every create at once, except the last device's, which it holds
// until the first group of answers has been recorded.
type gatedCloud struct {
	Cloud
	last string
	gate <-chan struct{}
}

var errGateTimeout = errors.New("the first answers were not recorded while the batch was still running")

func (c *gatedCloud) Create(ctx context.Context, spec vnccloud.Spec) (vnccloud.Created, error) {
	if spec.Groups[0] == c.last {
		select {
		case <-c.gate:
		case <-time.After(10 * time.Second):
			return vnccloud.Created{}, errGateTimeout
		}
	}
	return vnccloud.Created{CloudAddress: "addr-" + spec.Groups[0], CloudPassword: "pw"}, nil
}

// Answers are recorded as they arrive, not when the whole batch has been answered:
// a process killed in the middle of a batch loses only the answers of the last
// moments. The last call here cannot finish until the first answers are recorded.
func TestAnswersAreRecordedWhileTheBatchRuns(t *testing.T) {
	t.Parallel()
	st := &recordingStore{firstIn: make(chan struct{})}
	const n = 20
	d := &Deps{Store: st, Cloud: &gatedCloud{last: "d19", gate: st.firstIn}, Limiter: ratelimit.NewLocal(ratelimit.Config{}),
		Logger: slog.New(slog.DiscardHandler)}
	d.Config.setDefaults()
	items := make([]store.WorkItem, n)
	for i := range items {
		id := "d" + string(rune('0'+i/10)) + string(rune('0'+i%10))
		items[i] = store.WorkItem{PK: int64(i + 1), DeviceID: id, Op: store.OpCreate, Action: vnccloud.ActionConnect,
			Groups: []string{id}, LeaseEnds: time.Now().Add(d.Config.ClaimLease)}
	}
	require.NoError(t, d.runBatch(context.Background(), context.Background(), items))

	require.GreaterOrEqual(t, len(st.groups), 2, "recorded in more than one group")
	seen := map[int64]bool{}
	for _, g := range st.groups {
		for _, r := range g {
			require.False(t, seen[r.Item.PK], "device %d recorded twice", r.Item.PK)
			seen[r.Item.PK] = true
			require.Equal(t, fleet.Created, r.Report.Outcome, "%s: %v", r.Item.DeviceID, r.Report.Err)
		}
	}
	require.Len(t, seen, n, "every answer recorded")
}

// A group holds at most commitCount answers, so a fast batch is recorded in
// transactions of a bounded size.
func TestGroupsAreBoundedByCount(t *testing.T) {
	t.Parallel()
	st := &recordingStore{firstIn: make(chan struct{})}
	d := &Deps{Store: st, Cloud: &gatedCloud{last: "none"}, Limiter: ratelimit.NewLocal(ratelimit.Config{}),
		Logger: slog.New(slog.DiscardHandler)}
	d.Config.setDefaults()
	items := make([]store.WorkItem, 3*commitCount)
	for i := range items {
		items[i] = store.WorkItem{PK: int64(i + 1), Op: store.OpCreate, Action: vnccloud.ActionConnect,
			Groups: []string{"g"}, LeaseEnds: time.Now().Add(d.Config.ClaimLease)}
	}
	require.NoError(t, d.runBatch(context.Background(), context.Background(), items))
	total := 0
	for _, g := range st.groups {
		require.LessOrEqual(t, len(g), commitCount)
		total += len(g)
	}
	require.Equal(t, len(items), total)
}
