package store

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/vncfleet/vncfleet/fleet"
	"github.com/vncfleet/vncfleet/internal/dbtest"
	"github.com/vncfleet/vncfleet/internal/secretbox"
)

// A status shows the fleet's totals and a page of its groups, in name order, with
// the number of groups and the cursor of the next page; the pages together are
// every group with the counts a single page of all of them has.
func TestStatusPagesGroupsInNameOrder(t *testing.T) {
	e := newStagedEnv(t)
	ctx := context.Background()
	var b strings.Builder
	b.WriteString("device_id,action,groups\n")
	for i := range 250 { // groups g-000..g-124, two devices each
		fmt.Fprintf(&b, "dev-%03d,connect,g-%03d\n", i, i/2)
	}
	b.WriteString("loner,connect,\n") // in no group: the group ""
	_, err := e.upload(t, fleet.ModeMerge, b.String())
	require.NoError(t, err)
	// A second manifest of the fleet moves two devices to a group of their own and
	// adds one to g-000: groups are summed over the fleet's manifests.
	_, err = e.upload(t, fleet.ModeMerge, "device_id,action,groups\ndev-000,connect,moved\ndev-001,connect,moved\nnew,connect,g-000\n")
	require.NoError(t, err)

	all, err := e.st.StatusOf(ctx, StatusQuery{Fleet: "f", GroupQuery: GroupQuery{Groups: MaxStatusGroups}})
	require.NoError(t, err)
	require.Equal(t, 252, all.Total)
	require.Equal(t, 127, all.Groups, "g-000..g-124, moved and (no group)")
	require.Len(t, all.ByGroup, 127)
	require.Nil(t, all.NextGroupsAfter)
	require.Nil(t, all.GroupsCountedAt, "a small fleet is counted on every read")
	require.Equal(t, Counts{"pending": 1}, all.ByGroup["g-000"], "its two devices moved, one came")
	require.Equal(t, Counts{"pending": 2}, all.ByGroup["moved"])
	require.Equal(t, Counts{"pending": 1}, all.ByGroup[""])

	first, err := e.st.Status(ctx, "f")
	require.NoError(t, err)
	require.Equal(t, all.Total, first.Total)
	require.Equal(t, all.ByStatus, first.ByStatus)
	require.Equal(t, all.ByManifest, first.ByManifest)
	require.Equal(t, 127, first.Groups)
	require.Len(t, first.ByGroup, DefaultStatusGroups)
	require.Contains(t, first.ByGroup, "", "(no group) sorts first")
	require.NotNil(t, first.NextGroupsAfter)
	require.Equal(t, "g-098", *first.NextGroupsAfter)

	// Walk the pages of 30: every group once, with the counts of the whole.
	seen := map[string]Counts{}
	var pages int
	for after := (*string)(nil); ; pages++ {
		page, err := e.st.StatusOf(ctx, StatusQuery{Fleet: "f", GroupQuery: GroupQuery{Groups: 30, GroupsAfter: after}})
		require.NoError(t, err)
		require.LessOrEqual(t, len(page.ByGroup), 30)
		for g, c := range page.ByGroup {
			require.NotContains(t, seen, g, "a group on two pages")
			seen[g] = c
		}
		if page.NextGroupsAfter == nil {
			break
		}
		after = page.NextGroupsAfter
	}
	require.Equal(t, all.ByGroup, seen)
	require.Equal(t, 4, pages, "127 groups in pages of 30: the last one is the fifth")

	// A last page that is full says that it is the last.
	full, err := e.st.StatusOf(ctx, StatusQuery{Fleet: "f", GroupQuery: GroupQuery{Groups: 127}})
	require.NoError(t, err)
	require.Len(t, full.ByGroup, 127)
	require.Nil(t, full.NextGroupsAfter)

	one, err := e.st.StatusOf(ctx, StatusQuery{Fleet: "f", GroupQuery: GroupQuery{Group: "g-042", OnlyGroup: true}})
	require.NoError(t, err)
	require.Equal(t, map[string]Counts{"g-042": {"pending": 2}}, one.ByGroup)
	require.Nil(t, one.NextGroupsAfter)
	none, err := e.st.StatusOf(ctx, StatusQuery{Fleet: "f", GroupQuery: GroupQuery{Group: "", OnlyGroup: true}})
	require.NoError(t, err)
	require.Equal(t, map[string]Counts{"": {"pending": 1}}, none.ByGroup)
	missing, err := e.st.StatusOf(ctx, StatusQuery{Fleet: "f", GroupQuery: GroupQuery{Group: "no-such", OnlyGroup: true}})
	require.NoError(t, err)
	require.Empty(t, missing.ByGroup)

	counted, err := e.st.StatusOf(ctx, StatusQuery{Fleet: "f", GroupQuery: GroupQuery{Groups: -1}})
	require.NoError(t, err)
	require.Empty(t, counted.ByGroup)
	require.Equal(t, 127, counted.Groups)
	require.Equal(t, 252, counted.Total)

	// Every fleet: the same groups, as this is the only fleet.
	everyFleet, err := e.st.StatusOf(ctx, StatusQuery{GroupQuery: GroupQuery{Groups: MaxStatusGroups}})
	require.NoError(t, err)
	require.Equal(t, all.ByGroup, everyFleet.ByGroup)
}

// An export with secrets is the export without them, row for row in the same order,
// plus each device's password, across pages read ahead of their writer.
func TestExportWithSecretsIsTheExportPlusPasswords(t *testing.T) {
	pool, _ := dbtest.New(t)
	key := make([]byte, secretbox.KeySize)
	key[0] = 7
	ring, err := secretbox.NewKeyring(key)
	require.NoError(t, err)
	e := &stagedEnv{st: New(pool, ring), pool: pool}
	ctx := context.Background()
	n := 2*pageRows + 17
	_, err = e.upload(t, fleet.ModeMerge, factory(n, "device_id,action,groups,allow_groups,allow_devices,location\n", func(i int) string {
		if i%10 < 4 {
			return fmt.Sprintf("dev-%05d,connect,line-%04d;ops,,,plant-%d\n", i, i/10, i%3)
		}
		return fmt.Sprintf("dev-%05d,listen,,line-%04d,dev-%05d,\n", i, i/10, i/10*10)
	}))
	require.NoError(t, err)
	for _, id := range e.applyIDs {
		for done := false; !done; {
			done, err = e.st.ApplyStaged(ctx, id, nil)
			require.NoError(t, err)
		}
	}
	// Every device but the last ready with an address and a password of its own.
	ids, err := column[int64](ctx, pool, "ids", `SELECT id FROM devices ORDER BY device_id`)
	require.NoError(t, err)
	require.Len(t, ids, n)
	for _, id := range ids[:n-1] {
		ct, keyID, err := e.st.seal(id, fmt.Sprintf("pw-%d", id))
		require.NoError(t, err)
		_, err = pool.Exec(ctx, `UPDATE devices SET status = 'ready', op = NULL, cloud_address = 'addr-' || id,
			password_ct = $2, password_key_id = $3 WHERE id = $1`, id, ct, keyID)
		require.NoError(t, err)
	}

	collect := func(q ExportQuery) []ExportRow {
		var rows []ExportRow
		for row, err := range e.st.Export(ctx, q) {
			require.NoError(t, err)
			rows = append(rows, row)
		}
		return rows
	}
	plain := collect(ExportQuery{Fleet: "f"})
	secret := collect(ExportQuery{Fleet: "f", Secrets: true})
	require.Len(t, plain, n)
	require.Len(t, secret, n)
	require.True(t, slices.IsSortedFunc(plain, func(a, b ExportRow) int { return strings.Compare(a.DeviceID, b.DeviceID) }))
	for i := range plain {
		p, s := plain[i], secret[i]
		require.Empty(t, p.CloudPassword)
		if i < n-1 {
			require.Equal(t, fmt.Sprintf("pw-%d", ids[i]), s.CloudPassword, p.DeviceID)
		} else {
			require.Empty(t, s.CloudPassword, "a device without an address has no password")
		}
		s.CloudPassword = ""
		require.Equal(t, p, s, "apart from the password, the rows are the same")
	}
	require.Equal(t, "line-0000;ops", plain[0].Groups)
	require.Equal(t, "", plain[0].AllowGroups)
	require.Equal(t, "line-0000", plain[4].AllowGroups)
	require.Equal(t, "dev-00000", plain[4].AllowDevices)
	require.Equal(t, "connect", plain[0].Action)
	require.Equal(t, "listen", plain[4].Action)
	require.Equal(t, "ready", plain[0].Status)
	require.Equal(t, "pending", plain[n-1].Status)
	require.Equal(t, "addr-"+strconv.FormatInt(ids[0], 10), plain[0].CloudAddress)

	require.Nil(t, plain[0].Metadata, "metadata only when asked for")
	withMeta := collect(ExportQuery{Fleet: "f", Metadata: true})
	require.Equal(t, map[string]string{"location": "plant-0"}, withMeta[0].Metadata)
	require.Equal(t, map[string]string{"location": "plant-1"}, withMeta[1].Metadata)
	require.Empty(t, withMeta[4].Metadata["location"], "a listen device without a location")

	// A consumer that stops early leaves no page reader behind holding a connection.
	for _, err := range e.st.Export(ctx, ExportQuery{Fleet: "f", Secrets: true}) {
		require.NoError(t, err)
		break
	}
	require.Zero(t, pool.Stat().AcquiredConns())
}

// A fleet of manyGroups groups or more has its group count kept for a while (a
// hundred thousand groups take longer to count than the rest of a status), says so
// with the time it was counted, and counts again once the count is too old.
func TestStatusKeepsTheGroupCountOfAFleetOfManyGroups(t *testing.T) {
	e := newStagedEnv(t)
	ctx := context.Background()
	_, err := e.upload(t, fleet.ModeMerge, factory(manyGroups, "device_id,action,groups\n", func(i int) string {
		return fmt.Sprintf("dev-%05d,connect,g-%05d\n", i, i)
	}))
	require.NoError(t, err)
	for _, id := range e.applyIDs {
		for done := false; !done; {
			done, err = e.st.ApplyStaged(ctx, id, nil)
			require.NoError(t, err)
		}
	}
	st, err := e.st.Status(ctx, "f")
	require.NoError(t, err)
	require.Equal(t, manyGroups, st.Groups)
	require.NotNil(t, st.GroupsCountedAt)
	counted := *st.GroupsCountedAt

	_, err = e.upload(t, fleet.ModeMerge, "device_id,action,groups\nextra,connect,g-extra\n")
	require.NoError(t, err)
	st, err = e.st.Status(ctx, "f")
	require.NoError(t, err)
	require.Equal(t, manyGroups, st.Groups, "the kept count")
	require.Equal(t, counted, *st.GroupsCountedAt)
	require.Equal(t, manyGroups+1, st.Total, "the totals are always read afresh")

	// Twice as old as it may be served: counted again at once.
	e.st.groups.mu.Lock()
	e.st.groups.byScope[groupScope{fleet: "f"}].at = time.Now().Add(-3 * groupCountMaxAge)
	e.st.groups.mu.Unlock()
	st, err = e.st.Status(ctx, "f")
	require.NoError(t, err)
	require.Equal(t, manyGroups+1, st.Groups)
	require.True(t, st.GroupsCountedAt.After(counted))
}
