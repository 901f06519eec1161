package e2e

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// device is one manifest row as the tests generate it.
type device struct {
	id           string
	action       string
	groups       []string
	allowGroups  []string
	allowDevices []string
}

// factoryManifest generates lines×(viewers connect + servers listen) devices: each
// line's viewers are in the line's group, each server allows the line's group and
// one or two of its viewers by device_id.
func factoryManifest(lines, viewers, servers int) []device {
	var out []device
	for l := 0; l < lines; l++ {
		group := fmt.Sprintf("line-%03d", l)
		for v := 0; v < viewers; v++ {
			out = append(out, device{id: fmt.Sprintf("viewer-%03d-%02d", l, v), action: "connect", groups: []string{group, "ops"}})
		}
		for s := 0; s < servers; s++ {
			allow := []string{fmt.Sprintf("viewer-%03d-%02d", l, s%viewers)}
			if s%2 == 1 && viewers > 1 {
				allow = append(allow, fmt.Sprintf("viewer-%03d-%02d", l, (s+1)%viewers))
			}
			out = append(out, device{id: fmt.Sprintf("server-%03d-%02d", l, s), action: "listen", allowGroups: []string{group}, allowDevices: allow})
		}
	}
	return out
}

func manifestCSV(devices []device) string {
	var b strings.Builder
	b.WriteString("device_id,action,groups,allow_groups,allow_devices,serial\n")
	for i, d := range devices {
		fmt.Fprintf(&b, "%s,%s,%s,%s,%s,SN-%06d\n", d.id, d.action, strings.Join(d.groups, ";"),
			strings.Join(d.allowGroups, ";"), strings.Join(d.allowDevices, ";"), i)
	}
	return b.String()
}

// verifyFleet checks the simulator's truth against the manifest: every device ready
// with exactly one address, the stored password equal to the cloud's, groups and
// ACLs (allow_devices resolved to the named devices' addresses) as the manifest says,
// and no address in the account that no device holds.
func verifyFleet(t *testing.T, c *cluster, devices []device) {
	t.Helper()
	rows := c.export("--secrets")
	addrs := c.addresses()
	want := map[string]bool{}
	for _, d := range devices {
		want[d.id] = true
	}
	for id, row := range rows {
		if !want[id] {
			require.Equal(t, "deleted", row["status"], "device %s is not in the fleet any more", id)
			require.Empty(t, row["cloud_address"], id)
			delete(rows, id)
		}
	}
	require.Len(t, rows, len(devices), "one export row per device")
	require.Len(t, addrs, len(devices), "exactly one cloud address per device, no orphan")
	held := map[string]string{}
	for _, d := range devices {
		row, ok := rows[d.id]
		require.True(t, ok, "device %s exported", d.id)
		require.Equal(t, "ready", row["status"], "device %s: %s", d.id, row["last_error"])
		a, ok := addrs[row["cloud_address"]]
		require.True(t, ok, "device %s: address %q exists in the cloud", d.id, row["cloud_address"])
		require.True(t, a.Ready, "device %s ready in the cloud", d.id)
		require.NotEmpty(t, row["cloud_password"])
		require.Equal(t, a.Password, row["cloud_password"], "device %s: stored password is the cloud's", d.id)
		prev, dup := held[row["cloud_address"]]
		require.False(t, dup, "address of %s also held by %s", d.id, prev)
		held[row["cloud_address"]] = d.id
	}
	for _, d := range devices {
		a := addrs[rows[d.id]["cloud_address"]]
		require.Equal(t, []string{d.action}, a.AllowedActions, d.id)
		if d.action == "connect" {
			requireSameSet(t, d.groups, a.Groups, "groups of "+d.id)
			require.Nil(t, a.AccessControl, d.id)
			continue
		}
		require.Empty(t, a.Groups, d.id)
		if len(d.allowGroups) == 0 && len(d.allowDevices) == 0 {
			require.Nil(t, a.AccessControl, d.id)
			continue
		}
		require.NotNil(t, a.AccessControl, d.id)
		requireSameSet(t, d.allowGroups, a.AccessControl.Groups, "allow_groups of "+d.id)
		var want []string
		for _, dep := range d.allowDevices {
			want = append(want, rows[dep]["cloud_address"])
		}
		requireSameSet(t, want, a.AccessControl.CloudAddresses, "allow_devices of "+d.id)
	}
}

func requireSameSet(t *testing.T, want, got []string, msg string) {
	t.Helper()
	w, g := slices.Clone(want), slices.Clone(got)
	slices.Sort(w)
	slices.Sort(g)
	if len(w) == 0 && len(g) == 0 {
		return
	}
	require.Equal(t, w, g, msg)
}
