package fleet

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestCheckCrossRows(t *testing.T) {
	t.Parallel()
	// The fleet already holds c-old as a present connect device.
	inFleet := func(id string) bool { return id == "c-old" }
	for _, tc := range []struct {
		name     string
		manifest string // header: allow_devices,action,device_id,state (columns 1..4)
		fleet    func(string) bool
		want     []where
		reasons  []string
	}{
		{
			name:     "all fine",
			manifest: ",connect,c1,\nc1;c-old,listen,s1,\n,connect,c2,absent\n,listen,s2,\n",
			fleet:    inFleet,
		},
		{
			name:     "listen before the connect device it names",
			manifest: "c1,listen,s1,\n,connect,c1,\n",
			fleet:    inFleet,
		},
		{
			name:     "duplicate device_id",
			manifest: ",connect,c1,\n,connect,c2,\n,listen,c1,\n,connect,c1,absent\n",
			fleet:    inFleet,
			want:     []where{{4, 3, ColDeviceID}, {5, 3, ColDeviceID}},
			reasons:  []string{`"c1" is a duplicate of line 2`, `"c1" is a duplicate of line 2`},
		},
		{
			name:     "unknown, listen and absent devices",
			manifest: ",connect,c1,\nnope;c1,listen,s1,\ns1,listen,s2,\n,connect,gone,absent\ngone,listen,s3,\n",
			fleet:    inFleet,
			want:     []where{{3, 1, ColAllowDevices}, {4, 1, ColAllowDevices}, {6, 1, ColAllowDevices}},
			reasons: []string{`"nope", which is not a present connect device of this manifest or fleet`,
				`"s1", a listen device (line 3)`, `"gone", which line 5 marks absent`},
		},
		{
			name:     "the manifest wins over the fleet",
			manifest: "c-old,listen,s1,\n,listen,c-old,\n",
			fleet:    inFleet,
			want:     []where{{2, 1, ColAllowDevices}},
			reasons:  []string{`"c-old", a listen device (line 3)`},
		},
		{
			name:     "no fleet (replace mode)",
			manifest: "c-old,listen,s1,\n",
			want:     []where{{2, 1, ColAllowDevices}},
			reasons:  []string{"not a present connect device"},
		},
		{
			name:     "a duplicate that others name",
			manifest: ",connect,c1,\n,listen,c1,\nc1,listen,s1,\n",
			fleet:    inFleet,
			want:     []where{{3, 3, ColDeviceID}},
			reasons:  []string{"duplicate of line 2"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			devices, problems, err := readAll(t, "allow_devices,action,device_id,state\n"+tc.manifest)
			require.NoError(t, err)
			require.Zero(t, problems.Len(), problems)
			got := CheckCrossRows(devices, tc.fleet)
			require.Len(t, got, len(tc.want), got)
			for i, p := range got {
				require.Equal(t, tc.want[i], where{p.Line, p.Column, p.ColumnName}, p)
				require.Contains(t, p.Reason, tc.reasons[i])
			}
		})
	}
}

func TestCheckCrossRowsHandBuilt(t *testing.T) {
	t.Parallel()
	// Devices without Columns count as laid out in docs/contract.md's order.
	got := CheckCrossRows([]Device{
		{Line: 2, DeviceID: "a", Action: "connect", State: StatePresent},
		{Line: 3, DeviceID: "a", Action: "listen", State: StatePresent, AllowDevices: []string{"x"}},
	}, nil)
	require.Len(t, got, 2)
	require.Equal(t, where{3, 1, ColDeviceID}, where{got[0].Line, got[0].Column, got[0].ColumnName})
	require.Equal(t, where{3, 5, ColAllowDevices}, where{got[1].Line, got[1].Column, got[1].ColumnName})
	require.True(t, strings.HasPrefix(got[1].Error(), "line 3, column 5 (allow_devices): "), got[1].Error())
}
