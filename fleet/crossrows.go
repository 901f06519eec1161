package fleet

import (
	"fmt"
	"slices"

	"github.com/vncfleet/vncfleet/vnccloud"
)

// CheckCrossRows applies, in memory, the rules that span rows: a device_id listed
// twice (the later row is reported, naming the line of the first), and an
// allow_devices entry that is not a present connect device. An entry the manifest
// lists must be a connect row whose state is present; an entry the manifest does not
// list must satisfy fleetConnect, which reports whether the fleet already holds a
// present connect device of that id (pass nil, or a func returning false, for a
// replace upload: it deletes what the manifest does not list).
//
// It keeps every device_id in a map, so it is meant for tests and small files; the
// server applies the same rules in SQL to keep ingest memory flat. Problems are
// returned in line order, located at the device_id and allow_devices columns.
func CheckCrossRows(devices []Device, fleetConnect func(deviceID string) bool) []Problem {
	first := make(map[string]int, len(devices)) // device_id -> index of its first row
	for i, d := range devices {
		if _, dup := first[d.DeviceID]; !dup {
			first[d.DeviceID] = i
		}
	}
	var out []Problem
	for i, d := range devices {
		if j := first[d.DeviceID]; j != i {
			out = append(out, Problem{Line: d.Line, Column: d.Column(ColDeviceID), ColumnName: ColDeviceID,
				Reason: fmt.Sprintf("device_id %q is a duplicate of line %d", clip(d.DeviceID), devices[j].Line)})
		}
		for _, dep := range d.AllowDevices {
			reason := ""
			if j, listed := first[dep]; listed {
				switch other := devices[j]; {
				case other.Action != vnccloud.ActionConnect:
					reason = fmt.Sprintf("allow_devices names %q, a %s device (line %d); only connect devices can connect", clip(dep), other.Action, other.Line)
				case other.State == StateAbsent:
					reason = fmt.Sprintf("allow_devices names %q, which line %d marks absent", clip(dep), other.Line)
				}
			} else if fleetConnect == nil || !fleetConnect(dep) {
				reason = fmt.Sprintf("allow_devices names %q, which is not a present connect device of this manifest or fleet", clip(dep))
			}
			if reason != "" {
				out = append(out, Problem{Line: d.Line, Column: d.Column(ColAllowDevices), ColumnName: ColAllowDevices, Reason: reason})
			}
		}
	}
	slices.SortStableFunc(out, func(a, b Problem) int { return a.Line - b.Line })
	return out
}
