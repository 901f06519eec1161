package fleet

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/vncfleet/vncfleet/vnccloud"
)

const dummyAddress = "AAAAAAAAAAAAAAAAAAA.AAAAAAAAAAAAAAAAAAA.AAAAAAAAAAAAAAAAAAA.AAAAAAAAAAAAAAAAAAA"

func resolveAll(string) (string, bool) { return dummyAddress, true }

// FuzzReader: any input is either rejected with located problems or yields rows that
// the VNC Cloud API would accept, and never panics.
func FuzzReader(f *testing.F) {
	f.Add(header + "v1,connect,a;b,,,,\ns1,listen,,a,v1,,zli\n")
	f.Add("\uFEFFdevice_id,action\r\nx,listen\r\n")
	f.Add(header + "\"v\n1\",connect,,,,,\n")
	f.Add("device_id,action,groups\nv,connect,;;\n")
	f.Add("Action,Device_ID,location,allow_devices\nlisten,s,x,a;b\nconnect,a,,\n")
	f.Add("device_id,action,state\nv,connect,ABSENT\nv,connect,gone\n\"x\"y,connect,\n")
	f.Fuzz(func(t *testing.T, input string) {
		r, err := NewReader(strings.NewReader(input), ReaderOptions{MaxProblems: 50})
		if err != nil {
			var p *Problems
			if !errors.As(err, &p) || p.Len() == 0 {
				t.Fatalf("header error is not a non-empty *Problems: %v", err)
			}
			checkProblems(t, p.List)
			return
		}
		var devices []Device
		for {
			d, err := r.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("Next: %v", err)
			}
			if d.Line < 2 {
				t.Fatalf("row on line %d", d.Line)
			}
			if reason := deviceIDProblem(d.DeviceID); reason != "" || !utf8.ValidString(d.DeviceID) {
				t.Fatalf("bad device_id %q accepted: %s", d.DeviceID, reason)
			}
			if d.State != StatePresent && d.State != StateAbsent {
				t.Fatalf("state %q accepted", d.State)
			}
			for _, list := range [][]string{d.Groups, d.AllowGroups, d.AllowDevices} {
				if list != nil && len(list) == 0 {
					t.Fatal("an empty non-nil list would be sent as [] and refused")
				}
			}
			spec, err := d.Spec(resolveAll)
			if err != nil {
				t.Fatalf("accepted row %+v makes a spec the API refuses: %v", d, err)
			}
			if err := spec.Validate(); err != nil {
				t.Fatalf("Spec returned an invalid spec for %+v: %v", d, err)
			}
			if len(devices) < 1000 {
				devices = append(devices, d)
			}
		}
		p := r.Problems()
		if len(p.List) > 50 || p.Total < len(p.List) {
			t.Fatalf("problems: %d listed, %d in all, cap 50", len(p.List), p.Total)
		}
		checkProblems(t, p.List)
		checkProblems(t, CheckCrossRows(devices, func(string) bool { return true }))
	})
}

func checkProblems(t *testing.T, list []Problem) {
	t.Helper()
	for _, pr := range list {
		if pr.Line < 1 || pr.Column < 1 || pr.Reason == "" || !utf8.ValidString(pr.Error()) {
			t.Fatalf("problem without a location or reason: %+v", pr)
		}
	}
}

// FuzzValidateSpec: the manifest rules for lists and the API's rules (vnccloud)
// agree, both ways. A row the reader accepts gives a spec that ValidateRaw accepts;
// a list the reader refuses is one the API refuses too, except for the manifest's
// own stricter rules (a name listed twice, a list on the wrong action).
func FuzzValidateSpec(f *testing.F) {
	f.Add("connect", "a;b", "", "", "")
	f.Add("listen", "", "a;b", "v1;v2", "present")
	f.Add("LISTEN", "", strings.Repeat("é", 257), "", "")
	f.Add("connect", ";", "", "", "absent")
	f.Add("connect", "a;a", "", "", "")
	f.Fuzz(func(t *testing.T, action, groups, allowGroups, allowDevices, state string) {
		if strings.ContainsRune(action+groups+allowGroups+allowDevices+state, '\r') {
			return // encoding/csv reads a quoted "\r\n" back as "\n": the cells would differ
		}
		var in bytes.Buffer
		w := csv.NewWriter(&in)
		_ = w.Write([]string{"device_id", "action", "groups", "allow_groups", "allow_devices", "state"})
		_ = w.Write([]string{"dev", action, groups, allowGroups, allowDevices, state})
		w.Flush()
		devices, problems, err := readAll(t, in.String())
		if err != nil {
			t.Fatal(err)
		}
		if problems.Len() == 0 {
			if len(devices) != 1 {
				t.Fatalf("%d devices from one row", len(devices))
			}
			d := devices[0]
			if JoinList(d.Groups) != groups || JoinList(d.AllowGroups) != allowGroups || JoinList(d.AllowDevices) != allowDevices {
				t.Fatalf("lists changed on the way: %+v", d)
			}
			raw := vnccloud.RawSpec{AllowedActions: []string{string(d.Action)}, Groups: d.Groups}
			if d.Action == vnccloud.ActionListen && (d.AllowGroups != nil || d.AllowDevices != nil) {
				raw.AccessControl = &vnccloud.AccessControl{Groups: d.AllowGroups}
				for range d.AllowDevices {
					raw.AccessControl.CloudAddresses = append(raw.AccessControl.CloudAddresses, dummyAddress)
				}
			}
			if err := vnccloud.ValidateRaw(raw); err != nil {
				t.Fatalf("reader accepted %+v, the API refuses it: %v", d, err)
			}
			return
		}
		for _, p := range problems.List {
			if p.Line != 2 || p.Column < 1 || p.Column > 6 {
				t.Fatalf("problem out of place: %v", p)
			}
			if strings.Contains(p.Reason, "twice") || strings.Contains(p.Reason, " is for ") {
				continue // the manifest's own rules
			}
			var raw vnccloud.RawSpec
			switch p.ColumnName {
			case ColGroups:
				raw = vnccloud.RawSpec{AllowedActions: []string{"connect"}, Groups: SplitList(groups)}
			case ColAllowGroups:
				raw = vnccloud.RawSpec{AllowedActions: []string{"listen"}, AccessControl: &vnccloud.AccessControl{Groups: SplitList(allowGroups)}}
			default:
				continue
			}
			if vnccloud.ValidateRaw(raw) == nil {
				t.Fatalf("reader refused %s (%v), the API accepts it", p.ColumnName, p)
			}
		}
	})
}

// FuzzValidateRaw: whatever body the server's rules accept obeys the documented
// limits, and every refusal is a *vnccloud.ValidationError.
func FuzzValidateRaw(f *testing.F) {
	f.Add(`{"allowedActions":["connect"],"groups":["a"]}`)
	f.Add(`{"allowedActions":["listen"],"accessControl":{"groups":["a"],"cloudAddresses":["` + dummyAddress + `"]}}`)
	f.Add(`{"allowedActions":[],"groups":[]}`)
	f.Add(`{"allowedActions":["listen"],"accessControl":{}}`)
	f.Add(`{"allowedActions":["connect","listen"]}`)
	f.Fuzz(func(t *testing.T, body string) {
		var raw vnccloud.RawSpec
		if json.Unmarshal([]byte(body), &raw) != nil {
			return
		}
		err := vnccloud.ValidateRaw(raw)
		if err != nil {
			var ve *vnccloud.ValidationError
			if !errors.As(err, &ve) || ve.Field == "" {
				t.Fatalf("not a *ValidationError with a field: %T %v", err, err)
			}
			return
		}
		if len(raw.AllowedActions) != 1 {
			t.Fatalf("accepted %d actions", len(raw.AllowedActions))
		}
		var names []string
		switch vnccloud.Action(raw.AllowedActions[0]) {
		case vnccloud.ActionConnect:
			if raw.AccessControl != nil || len(raw.Groups) > vnccloud.MaxConnectGroups || (raw.Groups != nil && len(raw.Groups) == 0) {
				t.Fatalf("accepted connect %+v", raw)
			}
			names = raw.Groups
		case vnccloud.ActionListen:
			if raw.Groups != nil {
				t.Fatal("accepted groups on listen")
			}
			if acl := raw.AccessControl; acl != nil {
				if len(acl.Groups) > vnccloud.MaxACLGroups || len(acl.CloudAddresses) > vnccloud.MaxACLCloudAddresses ||
					(acl.Groups == nil && acl.CloudAddresses == nil) ||
					(acl.Groups != nil && len(acl.Groups) == 0) || (acl.CloudAddresses != nil && len(acl.CloudAddresses) == 0) {
					t.Fatalf("accepted ACL %+v", acl)
				}
				for _, a := range acl.CloudAddresses {
					if !vnccloud.IsWellFormedAddress(a) {
						t.Fatalf("accepted address %q", a)
					}
				}
				names = acl.Groups
			}
		default:
			t.Fatalf("accepted action %q", raw.AllowedActions[0])
		}
		for _, n := range names {
			if c := utf8.RuneCountInString(n); !utf8.ValidString(n) || c < 1 || c > vnccloud.MaxGroupNameChars {
				t.Fatalf("accepted group name %q of %d characters", n, c)
			}
		}
		// The same spec through the typed path: Spec.Validate agrees with ValidateRaw.
		spec := vnccloud.Spec{Action: vnccloud.Action(raw.AllowedActions[0]), Groups: raw.Groups, AccessControl: raw.AccessControl}
		if err := spec.Validate(); err != nil {
			t.Fatalf("ValidateRaw accepts, Spec.Validate refuses: %v", err)
		}
		if !spec.Equal(vnccloud.Spec{Action: spec.Action, Groups: slices.Clone(spec.Groups), AccessControl: spec.AccessControl}) {
			t.Fatal("a spec is not Equal to its copy")
		}
	})
}
