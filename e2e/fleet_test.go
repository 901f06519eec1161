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

// verifyFleet checks the simulator's truth against the manifest (auditFleet) and
// fails on the first problem found.
func verifyFleet(t *testing.T, c *cluster, devices []device) {
	t.Helper()
	a := auditFleet(t, c, devices)
	require.Empty(t, a.problems, "%d problems; the first ones:\n%s", len(a.problems), strings.Join(a.first(10), "\n"))
}

// audit is what auditFleet found: every problem, and counts of the kinds that the
// fault campaign reports.
type audit struct {
	problems       []string
	notReady       int // present devices not ready, or without an address in the cloud
	wrongPasswords int // stored password differs from the cloud's
	wrongSpecs     int // groups, ACL or action differ from the manifest
	surplus        int // addresses in the account beyond one per present device
}

func (a *audit) add(format string, args ...any) {
	a.problems = append(a.problems, fmt.Sprintf(format, args...))
}

func (a *audit) first(n int) []string { return a.problems[:min(n, len(a.problems))] }

// auditFleet compares the simulator's truth with the manifest: every device ready with
// exactly one address, the stored password equal to the cloud's, groups and ACLs
// (allow_devices resolved to the named devices' addresses) as the manifest says, and
// no address in the account that no device holds. Devices of the export that are not
// in devices must be deleted.
func auditFleet(t *testing.T, c *cluster, devices []device) audit {
	t.Helper()
	var a audit
	rows := c.export("--secrets")
	addrs := c.addresses()
	want := map[string]bool{}
	for _, d := range devices {
		want[d.id] = true
	}
	for id, row := range rows {
		if !want[id] {
			if row["status"] != "deleted" || row["cloud_address"] != "" {
				a.add("device %s is not in the fleet any more but is %s with address %q", id, row["status"], row["cloud_address"])
			}
			delete(rows, id)
		}
	}
	if len(rows) != len(devices) {
		a.add("%d export rows for %d devices", len(rows), len(devices))
	}
	if len(addrs) > len(devices) {
		a.surplus = len(addrs) - len(devices)
		a.add("%d addresses in the account for %d devices", len(addrs), len(devices))
	}
	held := map[string]string{}
	for _, d := range devices {
		row, ok := rows[d.id]
		addr, inCloud := addrs[row["cloud_address"]]
		switch {
		case !ok:
			a.notReady++
			a.add("device %s not exported", d.id)
			continue
		case row["status"] != "ready":
			a.notReady++
			a.add("device %s is %s: %s", d.id, row["status"], row["last_error"])
		case !inCloud:
			a.notReady++
			a.add("device %s: address %q does not exist in the cloud", d.id, row["cloud_address"])
		case !addr.Ready:
			a.notReady++
			a.add("device %s: not ready in the cloud", d.id)
		}
		if !inCloud {
			continue
		}
		if row["cloud_password"] == "" || row["cloud_password"] != addr.Password {
			a.wrongPasswords++
			a.add("device %s: the stored password is not the cloud's", d.id)
		}
		if prev, dup := held[row["cloud_address"]]; dup {
			a.add("address of %s also held by %s", d.id, prev)
		}
		held[row["cloud_address"]] = d.id
	}
	for _, d := range devices {
		addr, ok := addrs[rows[d.id]["cloud_address"]]
		if !ok {
			continue
		}
		if problem := specProblem(d, addr, rows); problem != "" {
			a.wrongSpecs++
			a.add("device %s: %s", d.id, problem)
		}
	}
	return a
}

// specProblem says how an address's spec differs from its device's row, "" when not.
func specProblem(d device, a simAddress, rows map[string]exportRow) string {
	if !slices.Equal([]string{d.action}, a.AllowedActions) {
		return fmt.Sprintf("allowedActions %v, want [%s]", a.AllowedActions, d.action)
	}
	if d.action == "connect" {
		if !sameSet(d.groups, a.Groups) {
			return fmt.Sprintf("groups %v, want %v", a.Groups, d.groups)
		}
		if a.AccessControl != nil {
			return "an access control list on a connect address"
		}
		return ""
	}
	if len(a.Groups) > 0 {
		return fmt.Sprintf("groups %v on a listen address", a.Groups)
	}
	if len(d.allowGroups) == 0 && len(d.allowDevices) == 0 {
		if a.AccessControl != nil {
			return "an access control list where the row names none"
		}
		return ""
	}
	if a.AccessControl == nil {
		return "no access control list"
	}
	if !sameSet(d.allowGroups, a.AccessControl.Groups) {
		return fmt.Sprintf("allow_groups %v, want %v", a.AccessControl.Groups, d.allowGroups)
	}
	var want []string
	for _, dep := range d.allowDevices {
		want = append(want, rows[dep]["cloud_address"])
	}
	if !sameSet(want, a.AccessControl.CloudAddresses) {
		return fmt.Sprintf("allow_devices resolve to %v, the ACL holds %v", want, a.AccessControl.CloudAddresses)
	}
	return ""
}

// sameSet: the same strings, in any order (nil and empty alike).
func sameSet(want, got []string) bool {
	w, g := slices.Clone(want), slices.Clone(got)
	slices.Sort(w)
	slices.Sort(g)
	return slices.Equal(w, g)
}
