package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/vncfleet/vncfleet/fleet"
	"github.com/vncfleet/vncfleet/internal/dbtest"
)

// These tests change indexMaxDevices, so none of them runs in parallel.

// stagedEnv is a store on a database of its own whose uploads enqueue the apply of a
// large manifest into applyIDs instead of a River job.
type stagedEnv struct {
	st       *Store
	pool     *pgxpool.Pool
	applyIDs []int64
}

func newStagedEnv(t *testing.T) *stagedEnv {
	pool, _ := dbtest.New(t)
	return &stagedEnv{st: New(pool, nil), pool: pool}
}

func (e *stagedEnv) upload(t *testing.T, mode fleet.Mode, body string) (*IngestResult, error) {
	t.Helper()
	return e.st.Ingest(context.Background(), IngestRequest{
		Fleet: "f", Mode: mode, Uploader: "test", MaxDeletions: 100, Body: strings.NewReader(body),
		EnqueueApply: func(_ context.Context, _ pgx.Tx, id int64) error {
			e.applyIDs = append(e.applyIDs, id)
			return nil
		},
	})
}

func (e *stagedEnv) count(t *testing.T, sql string, args ...any) int {
	t.Helper()
	var n int
	require.NoError(t, e.pool.QueryRow(context.Background(), sql, args...).Scan(&n))
	return n
}

// factory writes n rows: in every ten, four connect devices of the line's group and
// six listen devices allowing the line and one of its connect devices.
func factory(n int, header string, row func(i int) string) string {
	var b strings.Builder
	b.WriteString(header)
	for i := range n {
		b.WriteString(row(i))
	}
	return b.String()
}

const factoryHeader = "device_id,action,groups,allow_groups,allow_devices,state,location\n"

func factoryRow(i int) string {
	line, k := i/10, i%10
	if k < 4 {
		return fmt.Sprintf("dev-%06d,connect,line-%d;ops,,,,plant-%d\n", i, line, line%3)
	}
	return fmt.Sprintf("dev-%06d,listen,,line-%d,dev-%06d,,plant-%d\n", i, line, line*10+k%4, line%3)
}

func TestLargeManifestIsStagedThenAppliedInBatches(t *testing.T) {
	ctx := context.Background()
	e := newStagedEnv(t)
	n := DefaultInlineApplyRows + 2500
	res, err := e.upload(t, fleet.ModeMerge, factory(n, factoryHeader, factoryRow))
	require.NoError(t, err)
	require.Equal(t, n, res.Plan.Creates)
	require.Equal(t, []int64{res.Manifest.ID}, e.applyIDs, "a large manifest is applied by a job")
	require.Zero(t, e.count(t, `SELECT count(*) FROM devices`), "no device before the apply")

	p, err := e.st.ManifestProgress(ctx, res.Manifest.ID, nil)
	require.NoError(t, err)
	require.Nil(t, p.GroupPage, "not asked for")
	require.Equal(t, n, p.Staged)
	require.Equal(t, n, p.Total)
	require.False(t, p.Done)
	remaining, _, err := e.st.PendingWork(ctx, res.WorkKey)
	require.NoError(t, err)
	require.Equal(t, n, remaining, "work chains wait for staged rows rather than end")
	stalled, err := e.st.StalledManifests(ctx, time.Hour)
	require.NoError(t, err)
	require.Empty(t, stalled, "uploaded just now")
	stalled, err = e.st.StalledManifests(ctx, -time.Second)
	require.NoError(t, err)
	require.Equal(t, []int64{res.Manifest.ID}, stalled, "not advanced since its upload")

	done, err := e.st.ApplyStaged(ctx, res.Manifest.ID, nil)
	require.NoError(t, err)
	require.False(t, done, "one batch is not the whole manifest")
	first := e.count(t, `SELECT count(*) FROM devices`)
	require.Greater(t, first, 0)
	require.Less(t, first, n)
	p, err = e.st.ManifestProgress(ctx, res.Manifest.ID, nil)
	require.NoError(t, err)
	require.Equal(t, n-first, p.Staged)
	require.Equal(t, n, p.Total)
	require.Equal(t, first, p.ByStatus["pending"])

	batches := 1
	for !done {
		done, err = e.st.ApplyStaged(ctx, res.Manifest.ID, nil)
		require.NoError(t, err)
		batches++
	}
	require.GreaterOrEqual(t, batches, 2)
	require.Equal(t, n, e.count(t, `SELECT count(*) FROM devices WHERE op = 'create' AND status = 'pending' AND work_key = $1`, res.WorkKey))
	require.Zero(t, e.count(t, `SELECT count(*) FROM devices WHERE line IS NULL OR manifest_id <> $1`, res.Manifest.ID))
	require.Zero(t, e.count(t, `SELECT count(*) FROM (SELECT to_regclass($1) AS t) x WHERE t IS NOT NULL`, "staged_manifest_"+fmt.Sprint(res.Manifest.ID)),
		"the staged table is dropped")
	require.Equal(t, 1, e.count(t, `SELECT count(*) FROM manifests WHERE id = $1 AND applied_at IS NOT NULL AND applied_rows = row_count`, res.Manifest.ID))

	var groups, allowGroups, allowDevices []string
	var sortConnect, sortListen, location string
	require.NoError(t, e.pool.QueryRow(ctx, `SELECT groups, sort_key, metadata->>'location' FROM devices WHERE device_id = 'dev-000011'`).
		Scan(&groups, &sortConnect, &location))
	require.Equal(t, []string{"line-1", "ops"}, groups)
	require.Equal(t, "0line-1", sortConnect)
	require.Equal(t, "plant-1", location)
	require.NoError(t, e.pool.QueryRow(ctx, `SELECT allow_groups, allow_devices, sort_key FROM devices WHERE device_id = 'dev-000015'`).
		Scan(&allowGroups, &allowDevices, &sortListen))
	require.Equal(t, []string{"line-1"}, allowGroups)
	require.Equal(t, []string{"dev-000011"}, allowDevices)
	require.Equal(t, "1line-1", sortListen)

	stalled, err = e.st.StalledManifests(ctx, -time.Second)
	require.NoError(t, err)
	require.Empty(t, stalled, "an applied manifest is never stalled")
	p, err = e.st.ManifestProgress(ctx, res.Manifest.ID, &GroupQuery{Groups: MaxStatusGroups})
	require.NoError(t, err)
	require.Zero(t, p.Staged)
	require.Equal(t, n, p.ByStatus["pending"])
	require.Len(t, p.ByGroup, n/10+1, "a group per factory line, and ops")
	require.Equal(t, Counts{"pending": 10}, p.ByGroup["line-7"], "its 4 connect and 6 listen devices")
	require.Equal(t, Counts{"pending": n / 10 * 4}, p.ByGroup["ops"], "every connect device counts in its second group too")

	done, err = e.st.ApplyStaged(ctx, res.Manifest.ID, nil)
	require.NoError(t, err)
	require.True(t, done, "applying an applied manifest does nothing")
}

func TestUploadAppliesTheFleetsStagedManifestFirst(t *testing.T) {
	ctx := context.Background()
	e := newStagedEnv(t)
	n := DefaultInlineApplyRows + 100
	first, err := e.upload(t, fleet.ModeMerge, factory(n, factoryHeader, factoryRow))
	require.NoError(t, err)
	require.Zero(t, e.count(t, `SELECT count(*) FROM devices`))

	// A small upload changing one device: its plan sees the staged manifest applied.
	second, err := e.upload(t, fleet.ModeMerge, factoryHeader+"dev-000001,connect,line-0;night,,,,plant-0\nnew-1,connect,,,,,\n")
	require.NoError(t, err)
	require.Equal(t, 1, second.Plan.Updates)
	require.Equal(t, 1, second.Plan.Creates)
	require.Equal(t, []PlanUpdate{{DeviceID: "dev-000001", Fields: []string{"groups"}}}, second.Plan.UpdateList)
	require.Equal(t, n+1, e.count(t, `SELECT count(*) FROM devices`))
	require.Equal(t, 1, e.count(t, `SELECT count(*) FROM manifests WHERE id = $1 AND applied_at IS NOT NULL`, first.Manifest.ID))
	// The first manifest's job, when it runs, finds nothing left to do.
	done, err := e.st.ApplyStaged(ctx, first.Manifest.ID, nil)
	require.NoError(t, err)
	require.True(t, done)
	var groups []string
	require.NoError(t, e.pool.QueryRow(ctx, `SELECT groups FROM devices WHERE device_id = 'dev-000001'`).Scan(&groups))
	require.Equal(t, []string{"line-0", "night"}, groups)
}

func TestStagedReplaceMarksOmittedDevicesAbsentAtTheEnd(t *testing.T) {
	ctx := context.Background()
	e := newStagedEnv(t)
	_, err := e.upload(t, fleet.ModeMerge, factoryHeader+"keep,connect,,,,,\ngone,connect,,,,,\n")
	require.NoError(t, err)
	n := DefaultInlineApplyRows + 100
	res, err := e.upload(t, fleet.ModeReplace, factory(n, factoryHeader, factoryRow)+"keep,connect,,,,,\n")
	require.NoError(t, err)
	require.Equal(t, n, res.Plan.Creates)
	require.Equal(t, 1, res.Plan.Unchanged)
	require.Equal(t, []string{"gone"}, res.Plan.DeleteIDs)
	require.Len(t, e.applyIDs, 1)

	for done := false; !done; {
		done, err = e.st.ApplyStaged(ctx, res.Manifest.ID, nil)
		require.NoError(t, err)
		if !done {
			require.Equal(t, 1, e.count(t, `SELECT count(*) FROM devices WHERE device_id = 'gone' AND desired_state = 'present'`),
				"nothing is deleted before every row is applied")
		}
	}
	var state, status string
	require.NoError(t, e.pool.QueryRow(ctx, `SELECT desired_state, status FROM devices WHERE device_id = 'gone'`).Scan(&state, &status))
	require.Equal(t, "absent", state)
	require.Equal(t, "deleted", status, "it never had an address")
	require.Equal(t, 1, e.count(t, `SELECT count(*) FROM devices WHERE device_id = 'keep' AND desired_state = 'present' AND manifest_id = $1`, res.Manifest.ID))
}

// The cross-row rules give the same problems whether the index settles them or, for
// a manifest too large for it, SQL alone.
func TestCrossRowProblemsWithAndWithoutTheIndex(t *testing.T) {
	e := newStagedEnv(t)
	_, err := e.upload(t, fleet.ModeMerge, factoryHeader+"old-c,connect,,,,,\nold-s,listen,,,old-c,,\n")
	require.NoError(t, err)
	manifest := factoryHeader +
		"c1,connect,,,,,\n" + // line 2
		"s1,listen,,,c1;old-c,,\n" + // fine: c1 here, old-c in the fleet
		"s2,listen,,,c9,,\n" + // line 4: c9 is nowhere
		"c1,connect,,,,absent,\n" + // line 5: duplicate of line 2
		"s3,listen,,,old-s,,\n" + // line 6: old-s is a listen device of the fleet
		"s4,listen,,,s1,,\n" + // line 7: s1 is a listen device of the manifest
		"c9,listen,,,,,\n" + // line 8: so c9 is listed, but not as a connect device
		"old-c,connect,,,,absent,\n" // line 9: old-s still names it (and line 3 too)

	_, withIndex := e.upload(t, fleet.ModeMerge, manifest)
	saved := indexMaxDevices
	indexMaxDevices = 1
	t.Cleanup(func() { indexMaxDevices = saved })
	_, withSQL := e.upload(t, fleet.ModeMerge, manifest)

	for name, err := range map[string]error{"index": withIndex, "sql": withSQL} {
		var problems *fleet.Problems
		require.True(t, errors.As(err, &problems), "%s: %v", name, err)
		var got []string
		for _, p := range problems.List {
			got = append(got, fmt.Sprintf("%d:%s", p.Line, p.ColumnName))
		}
		require.ElementsMatch(t, []string{"3:allow_devices", "4:allow_devices", "5:device_id", "6:allow_devices",
			"7:allow_devices", "9:state"}, got, name)
		for _, p := range problems.List {
			switch p.ColumnName {
			case fleet.ColDeviceID:
				require.Contains(t, p.Reason, `"c1" is a duplicate of line 2`, name)
			case fleet.ColState:
				require.Contains(t, p.Reason, `listen device "old-s" still names it`, name)
			}
		}
	}
	require.Equal(t, 2, e.count(t, `SELECT count(*) FROM devices`), "a rejected manifest stores nothing")
	require.Equal(t, 1, e.count(t, `SELECT count(*) FROM manifests`))
	require.Zero(t, e.count(t, `SELECT count(*) FROM pg_tables WHERE tablename LIKE 'staged_manifest_%'`))
}

// Every byte the reader accepts reaches devices unchanged through the binary COPY.
func TestAwkwardValuesSurviveStaging(t *testing.T) {
	ctx := context.Background()
	e := newStagedEnv(t)
	note := "tab\there, newline\nthere, \"quotes\", back\\slash, \x01, ü, 😀"
	group := `g"r\o,u{p} NULL`
	id := `dev "1" \ ü,{}`
	csv := "device_id,action,groups,note\n" +
		`"dev ""1"" \ ü,{}",connect,"` + strings.ReplaceAll(group, `"`, `""`) + `;plain","` + strings.ReplaceAll(note, `"`, `""`) + "\"\n" +
		"s,listen,,\n"
	_, err := e.st.Ingest(ctx, IngestRequest{Fleet: "f", Body: strings.NewReader(csv)})
	require.NoError(t, err)
	var gotID, gotNote string
	var gotGroups []string
	require.NoError(t, e.pool.QueryRow(ctx, `SELECT device_id, groups, metadata->>'note' FROM devices WHERE line = 2`).
		Scan(&gotID, &gotGroups, &gotNote))
	require.Equal(t, id, gotID)
	require.Equal(t, []string{group, "plain"}, gotGroups)
	require.Equal(t, note, gotNote)
	var meta *string
	require.NoError(t, e.pool.QueryRow(ctx, `SELECT metadata::text FROM devices WHERE device_id = 's'`).Scan(&meta))
	require.Equal(t, `{"note": ""}`, *meta, "an empty metadata cell is kept as an empty string")
}

// A listen device named before the connect device it allows, in a manifest applied in
// batches, waits for the whole manifest instead of failing on a name whose row is
// not there yet.
func TestListenDeviceWaitsForTheWholeManifest(t *testing.T) {
	ctx := context.Background()
	e := newStagedEnv(t)
	n := DefaultInlineApplyRows + 500
	body := factory(n, factoryHeader, func(i int) string {
		return fmt.Sprintf("l-%06d,listen,,,c-last,,plant\n", i)
	}) + "c-last,connect,,,,,plant\n"
	res, err := e.upload(t, fleet.ModeMerge, body)
	require.NoError(t, err)
	done, err := e.st.ApplyStaged(ctx, res.Manifest.ID, nil)
	require.NoError(t, err)
	require.False(t, done)
	require.Zero(t, e.count(t, `SELECT count(*) FROM devices WHERE device_id = 'c-last'`), "the connect device is in a later batch")

	items, err := e.st.ClaimWork(ctx, res.WorkKey, 50, time.Minute, 0)
	require.NoError(t, err)
	require.Empty(t, items, "no listen device is claimed while the manifest is being applied")

	for !done {
		done, err = e.st.ApplyStaged(ctx, res.Manifest.ID, nil)
		require.NoError(t, err)
	}
	items, err = e.st.ClaimWork(ctx, res.WorkKey, 50, time.Minute, 0)
	require.NoError(t, err)
	require.Len(t, items, 1)
	require.Equal(t, "c-last", items[0].DeviceID, "the connect device first")
	items, err = e.st.ClaimWork(ctx, res.WorkKey, 50, time.Minute, 0)
	require.NoError(t, err)
	require.Empty(t, items, "the listen devices wait for its address")
}

// An apply batch does not wait for a fleet another transaction holds (an upload,
// which applies the manifest itself, or another batch): it reports the fleet busy.
func TestApplyReportsABusyFleet(t *testing.T) {
	ctx := context.Background()
	e := newStagedEnv(t)
	res, err := e.upload(t, fleet.ModeMerge, factory(DefaultInlineApplyRows+1, factoryHeader, factoryRow))
	require.NoError(t, err)

	holder, err := e.pool.Begin(ctx)
	require.NoError(t, err)
	_, err = holder.Exec(ctx, `SELECT 1 FROM fleets WHERE name = 'f' FOR UPDATE`)
	require.NoError(t, err)
	_, err = e.st.ApplyStaged(ctx, res.Manifest.ID, nil)
	require.ErrorIs(t, err, ErrFleetBusy)
	require.NoError(t, holder.Rollback(ctx))

	for done := false; !done; {
		done, err = e.st.ApplyStaged(ctx, res.Manifest.ID, nil)
		require.NoError(t, err)
	}
	require.Equal(t, DefaultInlineApplyRows+1, e.count(t, `SELECT count(*) FROM devices`))
}
