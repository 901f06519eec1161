package reconcile

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/vncfleet/vncfleet/internal/store"
	"github.com/vncfleet/vncfleet/vnccloud"
)

// TestClassify decides unknown addresses from the open attempts and first sightings
// alone (no database, no cloud).
func TestClassify(t *testing.T) {
	t.Parallel()
	base := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	at := func(n int) time.Time { return base.Add(time.Duration(n) * time.Minute) }
	lineA := vnccloud.Spec{Action: vnccloud.ActionConnect, Groups: []string{"line-a"}}
	lineB := vnccloud.Spec{Action: vnccloud.ActionConnect, Groups: []string{"line-b"}}
	// a1 sent at minute 1, a2 at minute 3, both of line-a; b1 of line-b at minute 1.
	attempts := func() []store.OpenAttempt {
		return []store.OpenAttempt{
			{ID: 1, Spec: lineA, SentAt: at(1)},
			{ID: 2, Spec: lineA, SentAt: at(3)},
			{ID: 3, Spec: lineB, SentAt: at(1)},
		}
	}
	type want struct {
		verdict verdict
		cands   []int64 // attempt ids
	}
	for _, tc := range []struct {
		name     string
		attempts func([]store.OpenAttempt)
		unknown  map[string]int // address: minute first seen (all of line-a unless named b*)
		want     map[string]want
		kept     []int64
	}{
		{"each address has its own creates", nil, map[string]int{"x": 2, "y": 4},
			map[string]want{"x": {orphan, []int64{1}}, "y": {orphan, []int64{1, 2}}}, nil},
		{"seen before every create: foreign", nil, map[string]int{"x": 0, "y": 4},
			map[string]want{"x": {foreign, nil}, "y": {orphan, []int64{1, 2}}}, nil},
		{"more addresses than creates: ambiguous", nil, map[string]int{"x": 2, "y": 4, "z": 4},
			map[string]want{"x": {ambiguous, []int64{1}}, "y": {ambiguous, []int64{1, 2}}, "z": {ambiguous, []int64{1, 2}}}, nil},
		{"two for the first create, and one more for the second", nil, map[string]int{"x": 2, "z": 2, "y": 4},
			map[string]want{"x": {ambiguous, []int64{1}}, "z": {ambiguous, []int64{1}}, "y": {ambiguous, []int64{1, 2}}}, nil},
		{"two for the first create; a later one has a create of its own", func(a []store.OpenAttempt) {
			a[2].Spec = lineA // a third create of line-a, at minute 3
			a[2].SentAt = at(3)
		}, map[string]int{"x": 2, "z": 2, "y": 4},
			map[string]want{"x": {ambiguous, []int64{1}}, "z": {ambiguous, []int64{1}}, "y": {orphan, []int64{2, 3}}}, nil},
		{"another spec is counted apart", nil, map[string]int{"x": 2, "b1": 2},
			map[string]want{"x": {orphan, []int64{1}}, "b1": {orphan, []int64{3}}}, nil},
		{"a create in flight may have made it", func(a []store.OpenAttempt) { a[1].Young = true }, map[string]int{"y": 4},
			map[string]want{"y": {inFlight, nil}}, []int64{1, 2}},
		{"a known address is its create's, whatever the spec", func(a []store.OpenAttempt) { a[2].MadeAddress = "x" }, map[string]int{"x": 0},
			map[string]want{"x": {orphan, []int64{3}}}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			atts := attempts()
			if tc.attempts != nil {
				tc.attempts(atts)
			}
			var unknown []unknownAddress
			for _, addr := range []string{"x", "z", "b1", "y"} { // sorted by first sighting, as orphans sorts
				if m, ok := tc.unknown[addr]; ok {
					spec := lineA
					if addr[0] == 'b' {
						spec = lineB
					}
					unknown = append(unknown, unknownAddress{addr: addr, details: vnccloud.Details{Spec: spec}, firstSeen: at(m)})
				}
			}
			o := &orphanPass{attempts: atts, used: make([]bool, len(atts)), keep: make([]bool, len(atts))}
			got := map[string]want{}
			for _, c := range o.classify(unknown) {
				var ids []int64
				for _, i := range c.cands {
					ids = append(ids, atts[i].ID)
				}
				got[c.addr] = want{c.verdict, ids}
			}
			require.Equal(t, tc.want, got)
			var kept []int64
			for i, k := range o.keep {
				if k {
					kept = append(kept, atts[i].ID)
				}
			}
			require.Equal(t, tc.kept, kept)
		})
	}
}
