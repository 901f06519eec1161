package server_test

import (
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/vncfleet/vncfleet/internal/dbtest"
	"github.com/vncfleet/vncfleet/internal/server"
	"github.com/vncfleet/vncfleet/internal/store"
)

// A manifest's progress pages its groups as a fleet's status does: the first 100 by
// default, with the number of groups and the cursor of the next page, which walks
// every group once; the totals are always the whole manifest's. Its stream sends the
// same first page, and no_groups leaves the groups out altogether.
func TestManifestProgressPagesItsGroups(t *testing.T) {
	t.Parallel()
	pool, _ := dbtest.New(t)
	api, _ := newAPI(t, pool, server.Config{}) // no workers: every device stays pending
	var csv strings.Builder
	csv.WriteString("device_id,action,groups,location\n")
	for i := range 500 { // groups line-000..line-249, two devices each, and ops
		fmt.Fprintf(&csv, "cam-%03d,connect,line-%03d;ops,hall-%d\n", i, i/2, i%3)
	}
	csv.WriteString("loner,connect,,hall-0\n") // in no group: the group ""
	const groups = 252                         // the 250 lines, ops and ""

	get := func(path string, v any) int {
		t.Helper()
		req, err := http.NewRequest("GET", api.URL+path, nil)
		require.NoError(t, err)
		req.Header.Set("Authorization", "Bearer "+adminToken)
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		if v != nil && resp.StatusCode == http.StatusOK {
			require.NoError(t, json.NewDecoder(resp.Body).Decode(v))
		}
		return resp.StatusCode
	}
	req, err := http.NewRequest("POST", api.URL+"/v1/manifests?fleet=f", strings.NewReader(csv.String()))
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+adminToken)
	req.Header.Set("Content-Type", "text/csv")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	var created struct{ Manifest store.Manifest }
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&created))
	_ = resp.Body.Close()
	require.Equal(t, http.StatusCreated, resp.StatusCode)
	m := "/v1/manifests/" + strconv.FormatInt(created.Manifest.ID, 10)

	var first store.Progress
	require.Equal(t, http.StatusOK, get(m, &first))
	require.Equal(t, 501, first.Total)
	require.Equal(t, store.Counts{"pending": 501}, first.ByStatus)
	require.NotNil(t, first.GroupPage)
	require.Equal(t, groups, first.Groups)
	require.Len(t, first.ByGroup, store.DefaultStatusGroups)
	require.Equal(t, store.Counts{"pending": 1}, first.ByGroup[""], "(no group) comes first")
	require.Equal(t, store.Counts{"pending": 2}, first.ByGroup["line-000"])
	require.NotNil(t, first.NextGroupsAfter)
	require.Equal(t, "line-098", *first.NextGroupsAfter)

	// Pages of 40 walk every group once, with the whole manifest's totals on each.
	seen := map[string]store.Counts{}
	pages := 0
	for q := (url.Values{"groups": {"40"}}); ; pages++ {
		var page store.Progress
		require.Equal(t, http.StatusOK, get(m+"?"+q.Encode(), &page))
		require.Equal(t, 501, page.Total, "totals are the whole manifest's on every page")
		require.Equal(t, groups, page.Groups)
		require.LessOrEqual(t, len(page.ByGroup), 40)
		for g, c := range page.ByGroup {
			require.NotContains(t, seen, g, "group %q on two pages", g)
			seen[g] = c
		}
		if page.NextGroupsAfter == nil {
			break
		}
		q.Set("groups_after", *page.NextGroupsAfter)
	}
	require.Equal(t, 6, pages, "252 groups in pages of 40: the seventh is the last")
	require.Len(t, seen, groups)
	require.Equal(t, store.Counts{"pending": 500}, seen["ops"], "a device counts in each of its groups")
	for i := range 250 {
		require.Equal(t, store.Counts{"pending": 2}, seen[fmt.Sprintf("line-%03d", i)])
	}

	var one store.Progress
	require.Equal(t, http.StatusOK, get(m+"?group=line-123", &one))
	require.Equal(t, map[string]store.Counts{"line-123": {"pending": 2}}, one.ByGroup)
	require.Nil(t, one.NextGroupsAfter)

	// no_groups: neither a page nor the count (what upload --wait polls).
	var bare map[string]any
	require.Equal(t, http.StatusOK, get(m+"?no_groups=true", &bare))
	require.NotContains(t, bare, "byGroup")
	require.NotContains(t, bare, "groups")
	require.Equal(t, float64(501), bare["total"])
	require.Equal(t, http.StatusBadRequest, get(m+"?no_groups=true&groups=5", nil))
	require.Equal(t, http.StatusBadRequest, get(m+"?group=ops&groups_after=line-1", nil))
	require.Equal(t, http.StatusBadRequest, get(m+"?groups=10001", nil))

	// The stream's first event: the same first page, and the page a query asks for.
	event := func(query string) store.Progress {
		t.Helper()
		var p store.Progress
		require.Equal(t, http.StatusOK, firstEvent(t, api.URL+m+"/events"+query, adminToken, &p))
		return p
	}
	streamed := event("")
	require.Equal(t, first.Total, streamed.Total)
	require.Equal(t, first.ByGroup, streamed.ByGroup)
	require.Equal(t, groups, streamed.Groups)
	require.Equal(t, "line-098", *streamed.NextGroupsAfter)
	later := event("?groups_after=line-248")
	require.Equal(t, []string{"line-249", "ops"}, slices.Sorted(maps.Keys(later.ByGroup)))
	require.Nil(t, later.NextGroupsAfter)

	// An unknown manifest is still 404, whatever page it is asked for.
	require.Equal(t, http.StatusNotFound, get("/v1/manifests/99999?groups=5", nil))
}
