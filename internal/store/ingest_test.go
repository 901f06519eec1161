package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/vncfleet/vncfleet/fleet"
)

// problemsOf returns the *fleet.Problems of a rejected upload.
func problemsOf(t *testing.T, err error) *fleet.Problems {
	t.Helper()
	var problems *fleet.Problems
	require.ErrorAs(t, err, &problems)
	return problems
}

func TestRejectedManifestListsRowAndCrossRowProblemsTogether(t *testing.T) {
	e := newStagedEnv(t)
	body := "device_id,action,groups,allow_devices\n" +
		"c1,connect,line-a,\n" + // line 2
		"c1,connect,line-b,\n" + // line 3: duplicate of line 2
		"c2,launch,line-a,\n" + // line 4: bad action
		"l1,listen,line-a,c1\n" + // line 5: groups on a listen device
		"l2,listen,,nosuch;c2\n" + // line 6: nosuch is nobody (c2 is rejected: not said again)
		"c3,connect,line-a,\n"
	_, err := e.upload(t, fleet.ModeMerge, body)
	problems := problemsOf(t, err)
	var lines []int
	var text []string
	for _, p := range problems.List {
		lines = append(lines, p.Line)
		text = append(text, p.Error())
	}
	require.Equal(t, []int{3, 4, 5, 6}, lines, "%s", strings.Join(text, "\n"))
	require.Equal(t, 4, problems.Total)
	require.Contains(t, text[0], `device_id "c1" is a duplicate of line 2`)
	require.Contains(t, text[3], `"nosuch"`)
	require.NotContains(t, text[3], `"c2"`)
	require.Zero(t, e.count(t, `SELECT count(*) FROM manifests`), "nothing stored")
	require.Zero(t, e.count(t, `SELECT count(*) FROM pg_tables WHERE tablename LIKE 'staged\_%'`), "no staged table left")
}

func TestProblemsAreSortedByLineAndCappedWithTheTotal(t *testing.T) {
	e := newStagedEnv(t)
	var b strings.Builder
	b.WriteString("device_id,action,allow_devices\n")
	// Lines 2..1601 are bad rows; the duplicate of line 1603 on line 1604 comes after
	// them, and a listen device on line 1602 names nobody: row problems first fill
	// the cap, and the cross-row ones are still counted.
	for i := range 1600 {
		fmt.Fprintf(&b, "bad-%d,fly,\n", i)
	}
	b.WriteString("l1,listen,nosuch\n")
	b.WriteString("c1,connect,\nc1,connect,\n")
	_, err := e.upload(t, fleet.ModeMerge, b.String())
	problems := problemsOf(t, err)
	require.Equal(t, 1602, problems.Total)
	require.Len(t, problems.List, fleet.DefaultMaxProblems)
	for i, p := range problems.List {
		require.Equal(t, i+2, p.Line)
	}

	// With the cross-row problem on the first lines, it is listed first.
	b.Reset()
	b.WriteString("device_id,action,allow_devices\nc1,connect,\nc1,connect,\n")
	for i := range 1200 {
		fmt.Fprintf(&b, "bad-%d,fly,\n", i)
	}
	_, err = e.upload(t, fleet.ModeMerge, b.String())
	problems = problemsOf(t, err)
	require.Equal(t, 1201, problems.Total)
	require.Len(t, problems.List, fleet.DefaultMaxProblems)
	require.Equal(t, 3, problems.List[0].Line)
	require.Contains(t, problems.List[0].Reason, "duplicate")
	require.Equal(t, 4, problems.List[1].Line)
}

func TestCrossRowProblemsInSQLAreListedWithRowProblems(t *testing.T) {
	// Past the index's bounds the cross-row rules run in SQL alone: same answer.
	defer func(d, p int) { indexMaxDevices, indexMaxPending = d, p }(indexMaxDevices, indexMaxPending)
	indexMaxDevices, indexMaxPending = 2, 2
	e := newStagedEnv(t)
	body := "device_id,action,allow_devices\n" +
		"c1,connect,\nc1,connect,\nc2,fly,\nl1,listen,c2;nosuch\nc3,connect,\nc4,connect,\n"
	_, err := e.upload(t, fleet.ModeMerge, body)
	problems := problemsOf(t, err)
	var lines []int
	for _, p := range problems.List {
		lines = append(lines, p.Line)
	}
	require.Equal(t, []int{3, 4, 5}, lines, "%v", problems)
}

func TestManifestIDsGoOnlyToStoredManifests(t *testing.T) {
	e := newStagedEnv(t)
	ctx := context.Background()
	first, err := e.upload(t, fleet.ModeMerge, "device_id,action\nc1,connect\n")
	require.NoError(t, err)

	_, err = e.upload(t, fleet.ModeMerge, "device_id,action\nc1,fly\n")
	problemsOf(t, err)
	dry, err := e.st.Ingest(ctx, IngestRequest{Fleet: "f", DryRun: true, Body: strings.NewReader("device_id,action\nc2,connect\n")})
	require.NoError(t, err)
	require.Nil(t, dry.Manifest)
	same, err := e.upload(t, fleet.ModeMerge, "device_id,action\nc1,connect\n")
	require.NoError(t, err)
	require.True(t, same.Unchanged)
	_, err = e.st.Ingest(ctx, IngestRequest{Fleet: "f", Mode: fleet.ModeReplace, MaxDeletions: 0,
		Body: strings.NewReader("device_id,action\nc3,connect\n")})
	var guard *DeletionGuardError
	require.ErrorAs(t, err, &guard)

	second, err := e.upload(t, fleet.ModeMerge, "device_id,action\nc2,connect\n")
	require.NoError(t, err)
	require.Equal(t, first.Manifest.ID+1, second.Manifest.ID)
	require.Equal(t, 2, e.count(t, `SELECT count(*) FROM devices`))
}

// stallingBody sends head, then nothing until released, then the rest.
type stallingBody struct {
	head, rest string
	sent       bool
	release    chan struct{}
	stalled    chan struct{}
}

func (b *stallingBody) Read(p []byte) (int, error) {
	if !b.sent {
		b.sent = true
		return copy(p, b.head), nil
	}
	if b.release != nil {
		close(b.stalled)
		<-b.release
		b.release = nil
		return copy(p, b.rest), nil
	}
	return 0, io.EOF
}

func TestSlowUploadDoesNotHoldItsFleet(t *testing.T) {
	e := newStagedEnv(t)
	ctx := context.Background()
	slow := &stallingBody{head: "device_id,action\nslow-1,connect\n", rest: "slow-2,connect\n",
		release: make(chan struct{}), stalled: make(chan struct{})}
	slowDone := make(chan error, 1)
	go func() {
		_, err := e.st.Ingest(ctx, IngestRequest{Fleet: "f", Uploader: "slow", Body: slow})
		slowDone <- err
	}()
	<-slow.stalled

	// The fleet is free while the slow upload's body is pending: another upload to it,
	// a replace one even, is stored at once.
	fastCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	fast, err := e.st.Ingest(fastCtx, IngestRequest{Fleet: "f", Mode: fleet.ModeReplace, MaxDeletions: 10,
		Body: strings.NewReader("device_id,action\nfast-1,connect\n")})
	require.NoError(t, err, "the second upload must not wait for the first one's body")
	require.Equal(t, 1, fast.Plan.Creates)

	close(slow.release)
	require.NoError(t, <-slowDone)
	require.Equal(t, 3, e.count(t, `SELECT count(*) FROM devices WHERE fleet_id = (SELECT id FROM fleets WHERE name = 'f')`))
}

func TestUploadWaitsForItsFleetWithinTheLockTimeout(t *testing.T) {
	e := newStagedEnv(t)
	ctx := context.Background()
	_, err := e.upload(t, fleet.ModeMerge, "device_id,action\nc1,connect\n")
	require.NoError(t, err)
	tx, err := e.pool.Begin(ctx)
	require.NoError(t, err)
	defer func() { _ = tx.Rollback(ctx) }()
	_, err = tx.Exec(ctx, `SELECT id FROM fleets WHERE name = 'f' FOR UPDATE`)
	require.NoError(t, err)
	// The wait of an upload for its fleet is bounded (a minute by default).
	defer func(d time.Duration) { ingestLockTimeout = d }(ingestLockTimeout)
	ingestLockTimeout = 200 * time.Millisecond
	_, err = e.upload(t, fleet.ModeMerge, "device_id,action\nc2,connect\n")
	require.True(t, errors.Is(err, ErrFleetBusy), "%v", err)
}
