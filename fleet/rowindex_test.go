package fleet

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// indexProblems finds the cross-row problems with a RowIndex, settling what it leaves
// open the way the store does in SQL: a duplicate candidate counts only if an earlier
// row has exactly its device_id, an unlisted entry only if the fleet lacks it.
func indexProblems(devices []Device, fleetConnect func(string) bool) (got []where, x *RowIndex) {
	x = NewRowIndex(1<<20, 1<<20, 3)
	for _, d := range devices {
		x.Add(d)
	}
	for _, c := range x.DuplicateCandidates() {
		if slices.ContainsFunc(devices, func(d Device) bool { return d.DeviceID == c.DeviceID && d.Line < c.Line }) {
			got = append(got, where{c.Line, 0, ColDeviceID})
		}
	}
	listed, unlisted := x.Unresolved()
	for _, r := range listed {
		got = append(got, where{r.Line, 0, ColAllowDevices})
	}
	for _, r := range unlisted {
		if fleetConnect == nil || !fleetConnect(r.DeviceID) {
			got = append(got, where{r.Line, 0, ColAllowDevices})
		}
	}
	slices.SortFunc(got, compareWhere)
	return got, x
}

func compareWhere(a, b where) int {
	if a.Line != b.Line {
		return a.Line - b.Line
	}
	return strings.Compare(a.ColumnName, b.ColumnName)
}

// memoryProblems is CheckCrossRows's answer in the same form.
func memoryProblems(devices []Device, fleetConnect func(string) bool) []where {
	var out []where
	for _, p := range CheckCrossRows(devices, fleetConnect) {
		out = append(out, where{p.Line, 0, p.ColumnName})
	}
	slices.SortFunc(out, compareWhere)
	return out
}

func TestRowIndexAgreesWithCheckCrossRows(t *testing.T) {
	t.Parallel()
	inFleet := func(id string) bool { return id == "c-old" }
	for name, manifest := range map[string]string{
		"all fine":                     ",connect,c1,\nc1;c-old,listen,s1,\n,connect,c2,absent\n,listen,s2,\n",
		"forward reference":            "c1,listen,s1,\n,connect,c1,\n",
		"duplicates":                   ",connect,c1,\n,connect,c2,\n,listen,c1,\n,connect,c1,absent\n",
		"unknown, listen and absent":   ",connect,c1,\nnope;c1,listen,s1,\ns1,listen,s2,\n,connect,gone,absent\ngone,listen,s3,\n",
		"the manifest wins":            "c-old,listen,s1,\n,listen,c-old,\n",
		"a duplicate that others name": ",connect,c1,\n,listen,c1,\nc1,listen,s1,\n",
		"absent first, connect later":  "c1,listen,s1,\n,connect,c1,absent\n",
	} {
		devices, problems, err := readAll(t, "allow_devices,action,device_id,state\n"+manifest)
		require.NoError(t, err)
		require.Zero(t, problems.Len(), problems)
		for _, fleet := range []func(string) bool{inFleet, nil} {
			got, _ := indexProblems(devices, fleet)
			require.Equal(t, memoryProblems(devices, fleet), got, name)
		}
	}
}

func TestRowIndexCountsAndGrows(t *testing.T) {
	t.Parallel()
	x := NewRowIndex(1<<20, 1<<20, 3)
	const n = 50_000 // many times the initial table, so it grows repeatedly
	for i := range n {
		d := Device{Line: i + 2, DeviceID: fmt.Sprintf("dev-%d", i), Action: "connect", State: StatePresent}
		if i%10 == 9 {
			d = Device{Line: i + 2, DeviceID: fmt.Sprintf("dev-%d", i), Action: "listen", State: StatePresent,
				AllowDevices: []string{fmt.Sprintf("dev-%d", i-1)}}
		}
		if i%100 == 0 {
			d.State = StateAbsent
		}
		x.Add(d)
	}
	require.Empty(t, x.DuplicateCandidates(), "every id is distinct")
	listed, unlisted := x.Unresolved()
	require.Empty(t, unlisted)
	// dev-(k*100) is absent: the listen device after it... names dev-(i-1) only when
	// i%10 == 9, so no absent device is named.
	require.Empty(t, listed)
	require.Equal(t, n/100, x.Absent)
	require.Equal(t, n-n/100, x.Present)
	require.Equal(t, []string{"dev-1", "dev-2", "dev-3"}, x.FirstPresent)

	x.Add(Device{Line: n + 2, DeviceID: "dev-123", Action: "connect", State: StatePresent})
	require.Equal(t, []RowRef{{n + 2, "dev-123"}}, x.DuplicateCandidates())
	require.False(t, x.Overflowed())
}

func TestRowIndexGivesUpPastItsBounds(t *testing.T) {
	t.Parallel()
	x := NewRowIndex(3, 10, 0)
	for i := range 4 {
		x.Add(Device{Line: i + 2, DeviceID: fmt.Sprint(i), Action: "connect", State: StatePresent})
	}
	require.True(t, x.Overflowed(), "a fourth device_id is past MaxDevices")
	require.Equal(t, 4, x.Present, "counts go on")
	require.Empty(t, x.DuplicateCandidates())

	y := NewRowIndex(100, 2, 0)
	y.Add(Device{Line: 2, DeviceID: "s", Action: "listen", State: StatePresent, AllowDevices: []string{"a", "b", "c"}})
	require.True(t, y.Overflowed(), "three forward references are past MaxPending")
	listed, unlisted := y.Unresolved()
	require.Empty(t, listed)
	require.Empty(t, unlisted)
}

// FuzzRowIndex: on any manifest, the index (with its open questions settled
// exactly) finds the same problem rows as the in-memory CheckCrossRows.
func FuzzRowIndex(f *testing.F) {
	f.Add([]byte{0, 1, 2, 3, 4, 5, 6, 7})
	f.Add([]byte("a duplicate, a forward reference, an absent one"))
	f.Fuzz(func(t *testing.T, data []byte) {
		// Each byte pair makes a row from a small alphabet of ids, so that
		// duplicates and references are frequent.
		var devices []Device
		for i := 0; i+1 < len(data) && len(devices) < 200; i += 2 {
			a, b := data[i], data[i+1]
			d := Device{Line: len(devices) + 2, DeviceID: fmt.Sprintf("d%d", a%16), State: StatePresent, Action: "connect"}
			if b&1 == 1 {
				d.Action = "listen"
				if ref := fmt.Sprintf("d%d", b>>4); ref != d.DeviceID {
					d.AllowDevices = []string{ref}
				}
			}
			if b&2 == 2 {
				d.State = StateAbsent
			}
			devices = append(devices, d)
		}
		fleet := func(id string) bool { return id == "d15" || id == "d3" }
		got, _ := indexProblems(devices, fleet)
		if want := memoryProblems(devices, fleet); !slices.Equal(got, want) {
			t.Fatalf("index found %v, CheckCrossRows %v", got, want)
		}
	})
}
