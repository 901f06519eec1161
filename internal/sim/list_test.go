package sim

import (
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/vncfleet/vncfleet/vnccloud"
)

var linkShape = regexp.MustCompile(`^<([^>]+)>; rel="next"$`)

// page is one list answer: its addresses and the next page's URL ("" when none).
type page struct {
	status int
	addrs  []string
	next   string
}

func (f *fixture) page(t *testing.T, url string, opts ...opt) page {
	t.Helper()
	r := f.do(t, "GET", url, "", opts...)
	p := page{status: r.status}
	switch r.status {
	case http.StatusNoContent:
		require.Empty(t, r.body, "204 has no body")
		require.Empty(t, r.header.Get("Content-Type"))
		require.Empty(t, r.header.Get("Link"), "nothing follows an empty page")
		return p
	case http.StatusOK:
	default:
		t.Fatalf("list %s: %d %s", url, r.status, r.body)
	}
	require.Equal(t, "application/json", r.header.Get("Content-Type"))
	var b struct {
		CloudAddresses []string `json:"cloudAddresses"`
	}
	require.NoError(t, json.Unmarshal(r.body, &b))
	require.NotEmpty(t, b.CloudAddresses, "a 200 page has addresses")
	p.addrs = b.CloudAddresses
	if l := r.header.Get("Link"); l != "" {
		m := linkShape.FindStringSubmatch(l)
		require.NotNil(t, m, "Link %q", l)
		p.next = m[1]
	}
	return p
}

// all follows the Links from url and returns every page.
func (f *fixture) all(t *testing.T, url string) []page {
	t.Helper()
	var pages []page
	for url != "" {
		p := f.page(t, url)
		pages = append(pages, p)
		url = p.next
		require.Less(t, len(pages), 1000, "the Links end")
	}
	return pages
}

func createN(t *testing.T, s *Server, key string, n int) []string {
	t.Helper()
	out := make([]string, n)
	for i := range out {
		a, _, err := s.CreateAddress(key, vnccloud.Spec{Action: "connect"})
		require.NoError(t, err)
		out[i] = a
	}
	return out
}

// TestListPages: page sizes and Links for 0, 1, limit, limit+1 and the default 20.
func TestListPages(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		n     int
		query string
		sizes []int // addresses per page; nil: one 204
	}{
		{"empty account", 0, "", nil},
		{"empty account with limit", 0, "?limit=5", nil},
		{"one", 1, "", []int{1}},
		{"exactly the limit", 5, "?limit=5", []int{5}},
		{"limit plus one", 6, "?limit=5", []int{5, 1}},
		{"limit 1", 3, "?limit=1", []int{1, 1, 1}},
		{"default 20, exactly", 20, "", []int{20}},
		{"default 20", 45, "", []int{20, 20, 5}},
		{"limit 99", 100, "?limit=99", []int{99, 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, Config{})
			want := createN(t, f.sim, keyA, tc.n)
			createN(t, f.sim, keyB, 3) // another account's addresses never show
			pages := f.all(t, "/static-address"+tc.query)
			if tc.sizes == nil {
				require.Len(t, pages, 1)
				require.Equal(t, http.StatusNoContent, pages[0].status)
				return
			}
			var got []string
			var sizes []int
			for i, p := range pages {
				require.Equal(t, http.StatusOK, p.status)
				sizes = append(sizes, len(p.addrs))
				got = append(got, p.addrs...)
				require.Equal(t, i < len(pages)-1, p.next != "", "a Link exactly while addresses remain")
				if p.next != "" {
					require.Contains(t, p.next, f.ts.URL+APIPrefix+"/static-address?", "an absolute URL of the list")
					limit := DefaultLimit
					if tc.query != "" {
						_, _ = fmt.Sscanf(tc.query, "?limit=%d", &limit)
					}
					require.Contains(t, p.next, fmt.Sprintf("limit=%d", limit), "the Link keeps the limit")
				}
			}
			require.Equal(t, tc.sizes, sizes)
			require.Equal(t, want, got, "creation order, each once")
		})
	}
}

// TestListCursorStability: changes to pages not yet viewed show, pages already viewed
// do not shift (no address is skipped or shown twice because of an earlier deletion).
func TestListCursorStability(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{})
	a := createN(t, f.sim, keyA, 10)

	p1 := f.page(t, "/static-address?limit=3")
	require.Equal(t, a[0:3], p1.addrs)

	// A deletion on the viewed page, one on the next page, and a new address.
	require.NoError(t, f.sim.ForceDelete(keyA, a[1]))
	r := f.do(t, "DELETE", "/static-address/"+a[4], "")
	require.Equal(t, http.StatusNoContent, r.status)
	added := createN(t, f.sim, keyA, 1)[0]

	p2 := f.page(t, p1.next)
	require.Equal(t, []string{a[3], a[5], a[6]}, p2.addrs, "the unviewed page reflects the deletion, the viewed one shifts nothing")
	p3 := f.page(t, p2.next)
	require.Equal(t, []string{a[7], a[8], a[9]}, p3.addrs)
	p4 := f.page(t, p3.next)
	require.Equal(t, []string{added}, p4.addrs, "an address added meanwhile is on a later page")
	require.Empty(t, p4.next)

	// A cursor whose remaining addresses have all gone: 204.
	fresh := f.page(t, "/static-address?limit=3")
	for _, x := range append(a[5:], added) {
		require.NoError(t, f.sim.ForceDelete(keyA, x))
	}
	require.NotEmpty(t, fresh.next)
	require.Equal(t, http.StatusNoContent, f.page(t, fresh.next).status, "a cursor past the end")
	// The Link carries the account's own position only: another account following
	// it sees its own addresses after that position, never A's.
	b := f.page(t, fresh.next, as(keyB, secretB))
	require.Equal(t, http.StatusNoContent, b.status)
}

// TestListManyDeletions: the list stays correct across the compaction of deleted
// entries, and pages hold live addresses only.
func TestListManyDeletions(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{})
	a := createN(t, f.sim, keyA, 300)
	var live []string
	for i, x := range a {
		if i%5 == 0 {
			live = append(live, x)
			continue
		}
		require.NoError(t, f.sim.ForceDelete(keyA, x))
	}
	var got []string
	for _, p := range f.all(t, "/static-address?limit=7") {
		got = append(got, p.addrs...)
	}
	require.Equal(t, live, got)
	st := f.sim.State().Accounts[keyA]
	require.Len(t, st.Addresses, 60)
	require.Equal(t, live[0], st.Addresses[0].CloudAddress)
}
