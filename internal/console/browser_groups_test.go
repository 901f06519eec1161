package console_test

import (
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/require"
)

// A manifest of more groups than a page holds shows the first page of group bars,
// says how many more there are, pages on to the rest and shows one group alone;
// each page's bars stay live (its stream sends that page).
func TestConsoleManifestShowsAPageOfGroups(t *testing.T) {
	st := newStack(t, nil)
	b := newBrowser(t, st.url)
	b.signIn(st.url, adminToken)
	var csv strings.Builder
	csv.WriteString("device_id,action,groups,location\n")
	for i := range 130 { // a line each: line-000..line-129
		fmt.Fprintf(&csv, "cam-%03d,connect,line-%03d,hall-%d\n", i, i, i%4)
	}
	id := strconv.FormatInt(uploadViaAPI(t, st.url, "lines", csv.String()), 10)

	b.open(st.url + "/manifests/" + id)
	b.waitText("#stream-state", "live")
	heads := b.texts("#groups .group h3")
	require.Len(t, heads, 100, "a page of groups, not all of them")
	require.Equal(t, "line-000", heads[0])
	require.Equal(t, "line-099", heads[99])
	require.Equal(t, "100 of 130 groups shown. 30 more groups.", squashSpace(b.text("#groups-note")))
	require.Equal(t, "130", b.text("#total"), "the totals are the whole manifest's")
	b.screenshot("manifest-groups-page")

	b.click("#groups-next")
	b.waitText("#groups-note", "after line-099")
	heads = b.texts("#groups .group h3")
	require.Len(t, heads, 30)
	require.Equal(t, "line-100", heads[0])
	require.Equal(t, "line-129", heads[29])
	require.True(t, eval[bool](b, `document.querySelector("#groups-next").hidden`), "the last page has no next")
	b.waitText("#state", "done")
	b.waitText("#groups .group:last-child p", "1 of 1 settled") // the page's bars follow the stream
	require.Equal(t, []string{"line-100", "line-129"}, []string{b.texts("#groups .group h3")[0], b.texts("#groups .group h3")[29]},
		"the stream sends this page, not the first")

	b.step(chromedp.SetValue(chromedp.CSS("#group-name"), "line-042"))
	b.click(`form.find button[type=submit]`)
	b.waitText("#groups-note", "Group line-042 alone")
	require.Equal(t, []string{"line-042"}, b.texts("#groups .group h3"))
	require.Equal(t, "1 of 1 settled", b.text("#groups .group p"))
	b.click(`nav.pager a[href="/manifests/` + id + `"]`)
	b.waitText("#groups-note", "100 of 130 groups shown")
}
