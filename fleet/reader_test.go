package fleet

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/vncfleet/vncfleet/vnccloud"
)

// readAll reads a whole manifest. A header problem comes back as problems with no
// devices; err is only for failures that are not manifest problems.
func readAll(t testing.TB, input string) ([]Device, *Problems, error) {
	t.Helper()
	r, err := NewReader(strings.NewReader(input), ReaderOptions{})
	if err != nil {
		var p *Problems
		if errors.As(err, &p) {
			return nil, p, nil
		}
		return nil, nil, err
	}
	var out []Device
	for {
		d, err := r.Next()
		if err == io.EOF {
			return out, r.Problems(), nil
		}
		if err != nil {
			return out, r.Problems(), err
		}
		out = append(out, d)
	}
}

// where is a problem's location, for comparing lists.
type where struct {
	Line, Column int
	ColumnName   string
}

func locations(p *Problems) []where {
	var out []where
	for _, pr := range p.List {
		out = append(out, where{pr.Line, pr.Column, pr.ColumnName})
	}
	return out
}

const header = "device_id,action,groups,allow_groups,allow_devices,state,zenlayer_instance_id\n"

func TestValidRowsCRLFAndBOM(t *testing.T) {
	t.Parallel()
	in := "\uFEFF" + strings.ReplaceAll(header+
		"v1,connect,line-a;ops,,,,\n"+
		"s1, LISTEN ,,line-a,v1,present,zli-01_A\n"+
		"s2,listen,,,,ABSENT,\n"+
		`"v,2",connect,"a,b;c ""d""",,,,`+"\n", "\n", "\r\n")
	require.Contains(t, in, "\r\n")
	devices, problems, err := readAll(t, in)
	require.NoError(t, err)
	require.Zero(t, problems.Len(), problems)
	require.Len(t, devices, 4)

	cols := devices[0].Columns
	require.Equal(t, map[string]int{ColDeviceID: 1, ColAction: 2, ColGroups: 3, ColAllowGroups: 4, ColAllowDevices: 5, ColState: 6, ColZenlayer: 7}, cols)
	require.Equal(t, Device{Line: 2, DeviceID: "v1", Action: vnccloud.ActionConnect, Groups: []string{"line-a", "ops"},
		State: StatePresent, Columns: cols}, devices[0], "the BOM is not part of the first column's name")
	require.Equal(t, Device{Line: 3, DeviceID: "s1", Action: vnccloud.ActionListen, AllowGroups: []string{"line-a"},
		AllowDevices: []string{"v1"}, State: StatePresent, ZenlayerInstanceID: "zli-01_A", Columns: cols}, devices[1],
		"action is case-insensitive and trimmed")
	require.Equal(t, StateAbsent, devices[2].State, "state is case-insensitive")
	require.Nil(t, devices[2].AllowGroups)
	require.Nil(t, devices[2].AllowDevices)
	require.Equal(t, "v,2", devices[3].DeviceID, "RFC 4180 quoting")
	require.Equal(t, []string{"a,b", `c "d"`}, devices[3].Groups)
	require.Equal(t, 5, devices[3].Line, "CRLF counts one line")
}

func TestColumnsAnyOrderAndMetadata(t *testing.T) {
	t.Parallel()
	devices, problems, err := readAll(t, " Serial ,ACTION, Device_ID ,location\nSN1,connect,v1,plant\nSN2,connect,v2,\n")
	require.NoError(t, err)
	require.Zero(t, problems.Len(), problems)
	require.Len(t, devices, 2)
	require.Equal(t, "v1", devices[0].DeviceID)
	require.Equal(t, []Field{{" Serial ", "SN1"}, {"location", "plant"}}, devices[0].Metadata, "names as written, in header order")
	require.Equal(t, []Field{{" Serial ", "SN2"}, {"location", ""}}, devices[1].Metadata)
	require.Equal(t, map[string]int{ColDeviceID: 3, ColAction: 2}, devices[0].Columns)
	require.Equal(t, 3, devices[0].Column(ColDeviceID))
	require.Equal(t, StatePresent, devices[0].State, "no state column: present")

	devices, problems, err = readAll(t, "device_id,action\nv1,connect\n")
	require.NoError(t, err)
	require.Zero(t, problems.Len())
	require.Nil(t, devices[0].Metadata, "no unknown columns, no metadata")
}

// TestRowRules has a row per rule, valid and invalid: the problem's line, column and
// a part of its reason.
func TestRowRules(t *testing.T) {
	t.Parallel()
	g256 := strings.Repeat("é", 256) // 512 bytes, 256 characters: valid
	g257 := strings.Repeat("é", 257)
	h256 := strings.Repeat("日", 256) // 768 bytes
	many := func(n int, prefix string) string {
		var s []string
		for i := 0; i < n; i++ {
			s = append(s, fmt.Sprintf("%s%d", prefix, i))
		}
		return strings.Join(s, ";")
	}
	for _, tc := range []struct {
		name, row string
		column    int    // 0 for a valid row
		reason    string // a part of the reason
	}{
		{"valid connect", "v,connect,a;b,,,,", 0, ""},
		{"valid listen with both lists", "s,listen,,a;b,v1;v2,present,zli", 0, ""},
		{"listen without ACL", "s,listen,,,,,", 0, ""},
		{"absent", "v,connect,,,,absent,", 0, ""},
		{"256-char group, 512 bytes", "v,connect," + g256 + ",,,,", 0, ""},
		{"256-char allow group, 768 bytes", "s,listen,,x;" + h256 + ",,,", 0, ""},
		{"16 groups", "v,connect," + many(16, "g") + ",,,,", 0, ""},
		{"24 allow groups", "s,listen,," + many(24, "g") + ",,,", 0, ""},
		{"8 allow devices", "s,listen,,," + many(8, "d") + ",,", 0, ""},
		{"128-char device_id", strings.Repeat("x", 128) + ",connect,,,,,", 0, ""},
		{"128 multi-byte characters", strings.Repeat("ü", 128) + ",connect,,,,,", 0, ""},
		{"device_id with inner space", "line 1 cam,connect,,,,,", 0, ""},
		{"padded device_id", " v ,connect,,,,,", 0, ""},
		{"trailing tab", "\"v\t\",connect,,,,,", 0, ""},
		{"padded allow device", "s,listen,,,v1; v2 ,,", 0, ""},
		{"padded groups", "v,connect, line-01 ;maint ,,,,", 0, ""},
		{"padded zenlayer id", "v,connect,,,,, zli ", 0, ""},
		{"device_id with a hyphen inside", "line-1,connect,,,,,", 0, ""},
		{"64-char zenlayer id", "v,connect,,,,," + strings.Repeat("z", 64), 0, ""},
		{"spaced keywords", "v, Connect ,,,, Present ,", 0, ""},

		{"empty device_id", ",connect,,,,,", 1, "device_id is empty"},
		{"blank device_id", "   ,connect,,,,,", 1, "device_id is empty"},
		{"129-char device_id", strings.Repeat("x", 129) + ",connect,,,,,", 1, "129 characters, at most 128"},
		{"129 multi-byte characters", strings.Repeat("ü", 129) + ",connect,,,,,", 1, "129 characters"},
		{"tab inside device_id", "a\tb,connect,,,,,", 1, "control character"},
		{"C1 control inside device_id", "a\u0080b,connect,,,,,", 1, "control character"},
		{"formula =", "=1+2,connect,,,,,", 1, `begins with "=", which a spreadsheet reads as a formula`},
		{"formula +", "+1,connect,,,,,", 1, `begins with "+"`},
		{"formula -", "-1,connect,,,,,", 1, `begins with "-"`},
		{"formula @", "@SUM(A1),connect,,,,,", 1, `begins with "@"`},
		{"formula after spaces", "  =cmd,connect,,,,,", 1, `begins with "="`},
		{"bidi override", "v\u202e1,connect,,,,,", 1, "invisible formatting character"},
		{"zero-width space", "v\u200b1,connect,,,,,", 1, "invisible formatting character"},
		{"zero-width joiner", "v\u200d1,connect,,,,,", 1, "invisible formatting character"},
		{"formula in allow_devices", "s,listen,,,v1;=x,,", 5, `device 2 of 2: device_id "=x" begins with "="`},
		{"separator in device_id", "a;b,connect,,,,,", 1, "list separator"},
		{"invalid UTF-8 in device_id", "v\x81,connect,,,,,", 1, "not valid UTF-8"},
		{"Windows-1252 in device_id", "v\xe9,connect,,,,,", 1, "reads as Windows-1252"},
		{"missing action", "v,,,,,,", 2, "action is required"},
		{"bad action", "v,serve,,,,,", 2, `not "serve"`},
		{"17 groups", "v,connect," + many(17, "g") + ",,,,", 3, "17 groups, at most 16"},
		{"257-char group", "v,connect,a;" + g257 + ",,,,", 3, "group 2 of 2: group name has 257 characters, at most 256"},
		{"empty group", "v,connect,a;;b,,,,", 3, "group 2 of 3: group name is empty"},
		{"trailing separator", "v,connect,a;,,,,", 3, "group 2 of 2: group name is empty"},
		{"lone separator", "v,connect,;,,,,", 3, "group 1 of 2: group name is empty"},
		{"duplicate group", "v,connect,a;b;a,,,,", 3, `group "a" is listed twice`},
		{"groups on listen", "s,listen,a,,,,", 3, "groups is for connect devices"},
		{"invalid UTF-8 group", "v,connect,a\x8d,,,,", 3, "not valid UTF-8"},
		{"NUL in a group", "v,connect,a\x00b,,,,", 3, "contains a NUL character"},
		{"25 allow groups", "s,listen,," + many(25, "g") + ",,,", 4, "25 groups, at most 24"},
		{"257-char allow group", "s,listen,," + g257 + ",,,", 4, "257 characters"},
		{"empty allow group", "s,listen,,a;,,,", 4, "group name is empty"},
		{"allow_groups on connect", "v,connect,,a,,,", 4, "allow_groups is for listen devices"},
		{"9 allow devices", "s,listen,,," + many(9, "d") + ",,", 5, "9 devices, at most 8"},
		{"allow self", "s,listen,,,v1;s,,", 5, "cannot allow itself"},
		{"duplicate allow device", "s,listen,,,v1;v1,,", 5, `device "v1" is listed twice`},
		{"empty allow device", "s,listen,,,v1;,,", 5, "device 2 of 2: device_id is empty"},
		{"long allow device", "s,listen,,," + strings.Repeat("d", 129) + ",,", 5, "129 characters"},
		{"allow_devices on connect", "v,connect,,,x,,", 5, "allow_devices is for listen devices"},
		{"bad state", "v,connect,,,,gone,", 6, "present or absent"},
		{"zenlayer id with a space", "v,connect,,,,,a b", 7, "zenlayer_instance_id"},
		{"65-char zenlayer id", "v,connect,,,,," + strings.Repeat("z", 65), 7, "1..64 characters"},
		{"non-ASCII zenlayer id", "v,connect,,,,,zlï", 7, "ASCII"},
		{"too few fields", "v,connect", 3, "2 fields, the header has 7"},
		{"too many fields", "v,connect,,,,,,extra", 8, "8 fields, the header has 7"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			devices, problems, err := readAll(t, header+"ok-1,connect,,,,,\n"+tc.row+"\n")
			require.NoError(t, err)
			if tc.column == 0 {
				require.Zero(t, problems.Len(), problems)
				require.Len(t, devices, 2)
				// Whatever the reader accepts, the API accepts.
				_, err := devices[1].Spec(func(string) (string, bool) { return dummyAddress, true })
				require.NoError(t, err)
				return
			}
			require.Equal(t, 1, problems.Len(), problems)
			p := problems.List[0]
			require.Equal(t, 3, p.Line)
			require.Equal(t, tc.column, p.Column)
			if tc.column <= 7 {
				require.Equal(t, strings.Split(strings.TrimSpace(header), ",")[tc.column-1], p.ColumnName)
			}
			require.Contains(t, p.Reason, tc.reason)
			require.Contains(t, p.Error(), fmt.Sprintf("line 3, column %d", tc.column))
			require.Len(t, devices, 1, "the bad row is skipped, the good one kept")
		})
	}
}

func TestHeaderProblems(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in           string
		line, column int
		reason       string
	}{
		{"", 1, 1, "the manifest is empty"},
		{"\uFEFF", 1, 1, "the manifest is empty"},
		{"device_id,groups\n", 1, 1, `required column "action" is missing`},
		{"action\nconnect\n", 1, 1, `required column "device_id" is missing`},
		{"\n\ndevice_id,groups\n", 3, 1, `"action" is missing`},
		{"device_id,action, Action \n", 1, 3, `"action" appears twice (also column 2)`},
		{"device_id,action,location,LOCATION\n", 1, 4, `"location" appears twice (also column 3)`},
		{"device_id,action,,x\n", 1, 3, "column name is empty"},
		{"device_id,action,\x81\n", 1, 3, "column name is not valid UTF-8"},
		{"device_id,action,Ger\xe4t\n", 1, 3, "this file is not UTF-8 but reads as Windows-1252"},
		{"device_id,Allow Groups,allow_groupz\n", 1, 3, "unknown column; did you mean allow_groups?"},
		{"device_id,action,cloud_password\n", 1, 3, "looks like it holds secrets (password)"},
		{"device_id,action,no\x00te\n", 1, 3, "column name contains a NUL character"},
		{"device_id,\"action\nx\",\n", 1, 1, `"action" is missing`},
		{"device_id,\"act\"ion\n", 1, 15, "CSV syntax"},
	} {
		t.Run(fmt.Sprintf("%q", tc.in), func(t *testing.T) {
			t.Parallel()
			r, err := NewReader(strings.NewReader(tc.in), ReaderOptions{})
			require.Nil(t, r)
			var problems *Problems
			require.ErrorAs(t, err, &problems)
			require.GreaterOrEqual(t, problems.Len(), 1)
			var hit bool
			for _, p := range problems.List {
				if strings.Contains(p.Reason, tc.reason) {
					hit = true
					require.Equal(t, where{tc.line, tc.column, p.ColumnName}, where{p.Line, p.Column, p.ColumnName}, p)
				}
			}
			require.True(t, hit, "no problem says %q: %v", tc.reason, problems)
		})
	}
}

// TestEveryBadRowIsListed: one read lists every problem of every row, in order,
// several per row when several cells are wrong.
func TestEveryBadRowIsListed(t *testing.T) {
	t.Parallel()
	in := header +
		"v1,connect,,,,,\n" + // 2: fine
		"v2,conect,,,,,\n" + // 3: action
		"v3,connect,a;;b,x,,,\n" + // 4: groups, allow_groups on connect
		"\"v4\nstill v4\",connect,,,,,\n" + // 5-6: control character (newline), record starts on 5
		"v5,listen,g,,,maybe,\n" + // 7: groups on listen, state
		"v6,connect,,,,,\n" + // 8: fine
		"v\xfe7,connect,\xff,,,,\n" + // 9: two cells in Windows-1252: said once
		"v8,listen\n" + // 10: field count
		",,,,,,!\n" // 11: device_id, action, zenlayer
	devices, problems, err := readAll(t, in)
	require.NoError(t, err)
	require.Equal(t, []string{"v1", "v6"}, []string{devices[0].DeviceID, devices[1].DeviceID})
	require.Len(t, devices, 2)
	require.Equal(t, []where{
		{3, 2, ColAction},
		{4, 3, ColGroups}, {4, 4, ColAllowGroups},
		{5, 1, ColDeviceID},
		{7, 3, ColGroups}, {7, 6, ColState},
		{9, 1, ColDeviceID},
		{10, 3, ColGroups},
		{11, 1, ColDeviceID}, {11, 2, ColAction}, {11, 7, ColZenlayer},
	}, locations(problems))
	require.Equal(t, 11, problems.Total)
	msg := problems.Error()
	require.True(t, strings.HasPrefix(msg, "manifest rejected: 11 problems\n"), msg)
	require.Contains(t, msg, "\nline 9, column 1 (device_id): this file is not UTF-8 but reads as Windows-1252")
	require.Contains(t, msg, "\nline 3, column 2 (action): action must be connect or listen, not \"conect\"")
	require.Contains(t, msg, "\nline 10, column 3 (groups): row has 2 fields, the header has 7")
	require.NotContains(t, msg, "more")
}

func TestProblemsCapAndTotal(t *testing.T) {
	t.Parallel()
	var b strings.Builder
	b.WriteString(header)
	for i := 0; i < 1500; i++ {
		fmt.Fprintf(&b, "d%d,explode,,,,,\n", i)
	}
	in := b.String()

	r, err := NewReader(strings.NewReader(in), ReaderOptions{MaxProblems: 100})
	require.NoError(t, err)
	_, err = r.Next()
	require.Equal(t, io.EOF, err)
	p := r.Problems()
	require.Equal(t, 1500, p.Total)
	require.Equal(t, 1500, p.Len())
	require.Len(t, p.List, 100)
	require.Equal(t, 2, p.List[0].Line)
	require.Equal(t, 101, p.List[99].Line, "the first problems are kept")
	require.True(t, strings.HasSuffix(p.Error(), "\n... and 1400 more"), p.Error()[len(p.Error())-40:])

	r, err = NewReader(strings.NewReader(in), ReaderOptions{})
	require.NoError(t, err)
	_, err = r.Next()
	require.Equal(t, io.EOF, err)
	require.Len(t, r.Problems().List, DefaultMaxProblems)
	require.Equal(t, 1500, r.Problems().Total)

	var zero Problems // the zero value caps at the default too
	for i := 0; i < DefaultMaxProblems+5; i++ {
		zero.Add(Problem{Line: i + 1, Column: 1, Reason: "x"})
	}
	require.Len(t, zero.List, DefaultMaxProblems)
	require.Equal(t, DefaultMaxProblems+5, zero.Len())
	one := &Problems{}
	one.Add(Problem{Line: 2, Column: 1, Reason: "bad"})
	require.Equal(t, "manifest rejected: 1 problem\nline 2, column 1: bad", one.Error())
}

func TestQuotedNewlinesKeepLineNumbers(t *testing.T) {
	t.Parallel()
	in := header + "v1,connect,\"a\nb,c\",,,,\n\"v\n2\",connect,,,,,\nv3,nonsense,,,,,\r\n\r\nv4,connect,,,,,\n"
	devices, problems, err := readAll(t, in)
	require.NoError(t, err)
	require.Equal(t, []where{{4, 1, ColDeviceID}, {6, 2, ColAction}}, locations(problems),
		"a record's problems are on the line where it starts; blank lines count")
	require.Len(t, devices, 2)
	require.Equal(t, []string{"a\nb,c"}, devices[0].Groups)
	require.Equal(t, 2, devices[0].Line)
	require.Equal(t, 8, devices[1].Line)
}

func TestSyntaxErrorEndsTheRead(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, rows   string
		line, column int
		reason       string
		devices      int
	}{
		{"bare quote", "v1,connect,,,,,\nv2,con\"nect,,,,,\nv3,connect,,,,,\n", 3, 7, `bare " in non-quoted-field`, 1},
		{"text after a quote", "v1,\"connect\"x,,,,,\nv2,connect,,,,,\n", 2, 12, "extraneous", 0},
		{"unterminated across lines", "v1,connect,,,,,\nv2,\"unterminated,,,,,\nmore\n", 4, 6, "record that starts on line 3", 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			devices, problems, err := readAll(t, header+tc.rows)
			require.NoError(t, err)
			require.Len(t, devices, tc.devices)
			require.Equal(t, 1, problems.Len(), problems)
			p := problems.List[0]
			require.Equal(t, where{tc.line, tc.column, ""}, where{p.Line, p.Column, p.ColumnName})
			require.Contains(t, p.Reason, "CSV syntax")
			require.Contains(t, p.Reason, tc.reason)
		})
	}
}

// errReader fails after its data, like a connection that drops.
type errReader struct {
	data string
	err  error
}

func (e *errReader) Read(p []byte) (int, error) {
	if e.data == "" {
		return 0, e.err
	}
	n := copy(p, e.data)
	e.data = e.data[n:]
	return n, nil
}

func TestReadErrorsAreWrappedNotProblems(t *testing.T) {
	t.Parallel()
	boom := errors.New("connection reset")
	_, err := NewReader(&errReader{err: boom}, ReaderOptions{})
	require.ErrorIs(t, err, boom)
	var p *Problems
	require.False(t, errors.As(err, &p))

	r, err := NewReader(&errReader{data: header + "v1,connect,,,,,\n", err: boom}, ReaderOptions{})
	require.NoError(t, err)
	d, err := r.Next()
	require.NoError(t, err)
	require.Equal(t, "v1", d.DeviceID)
	_, err = r.Next()
	require.ErrorIs(t, err, boom)
	_, err = r.Next()
	require.Equal(t, io.EOF, err, "the read has ended")
}

func TestSpecHash(t *testing.T) {
	t.Parallel()
	a := Device{Action: "connect", Groups: []string{"a", "b"}, State: StatePresent, Metadata: []Field{{"x", "1"}}, ZenlayerInstanceID: "z1"}
	b := Device{Action: "connect", Groups: []string{"b", "a"}, State: StatePresent}
	require.Len(t, a.SpecHash(), 32)
	require.Equal(t, a.SpecHash(), b.SpecHash(), "order, metadata and the Zenlayer instance do not count")
	require.Equal(t, []string{"b", "a"}, b.Groups, "hashing does not reorder the device's lists")

	for name, pair := range map[string][2]Device{
		"state":              {b, {Action: "connect", Groups: []string{"a", "b"}, State: StateAbsent}},
		"action":             {{Action: "listen", State: StatePresent}, {Action: "connect", State: StatePresent}},
		"which list":         {{Action: "listen", AllowGroups: []string{"a"}}, {Action: "listen", AllowDevices: []string{"a"}}},
		"NUL inside a name":  {{Action: "connect", Groups: []string{"a\x00b"}}, {Action: "connect", Groups: []string{"a", "b"}}},
		"bytes across names": {{Action: "connect", Groups: []string{"ab", "c"}}, {Action: "connect", Groups: []string{"a", "bc"}}},
	} {
		require.NotEqual(t, pair[0].SpecHash(), pair[1].SpecHash(), name)
	}
}

func TestDeviceSpec(t *testing.T) {
	t.Parallel()
	resolve := func(id string) (string, bool) { return dummyAddress, id == "v1" }

	spec, err := Device{Action: "listen", AllowGroups: []string{"g"}, AllowDevices: []string{"v1"}}.Spec(resolve)
	require.NoError(t, err)
	require.Equal(t, vnccloud.Spec{Action: "listen", AccessControl: &vnccloud.AccessControl{
		Groups: []string{"g"}, CloudAddresses: []string{dummyAddress}}}, spec)

	spec, err = Device{Action: "listen", AllowDevices: []string{"v1"}}.Spec(resolve)
	require.NoError(t, err)
	require.Nil(t, spec.AccessControl.Groups, "an omitted list stays nil, never []")

	spec, err = Device{Action: "listen"}.Spec(resolve)
	require.NoError(t, err)
	require.Nil(t, spec.AccessControl, "no lists: everyone of the account may connect")

	spec, err = Device{Action: "connect", Groups: []string{"g"}}.Spec(resolve)
	require.NoError(t, err)
	require.Equal(t, vnccloud.Spec{Action: "connect", Groups: []string{"g"}}, spec)

	_, err = Device{DeviceID: "s", Action: "listen", AllowDevices: []string{"v1", "v9"}}.Spec(resolve)
	require.ErrorIs(t, err, ErrUnresolved)
	require.Contains(t, err.Error(), `"v9"`)

	_, err = Device{Action: "connect", Groups: strings.Split(strings.Repeat("g;", 17)[:33], ";")}.Spec(resolve)
	var ve *vnccloud.ValidationError
	require.ErrorAs(t, err, &ve, "a hand-built device is held to the API's rules")
	require.Equal(t, vnccloud.CodeTooMany, ve.Code)

	_, err = Device{Action: "listen", AllowDevices: []string{"v1"}}.Spec(func(string) (string, bool) { return "not-an-address", true })
	require.ErrorAs(t, err, &ve)
}

func TestListsAndParsers(t *testing.T) {
	t.Parallel()
	require.Nil(t, SplitList(""))
	require.Equal(t, []string{"a", "b c"}, SplitList("a;b c"))
	require.Equal(t, "a;b c", JoinList([]string{"a", "b c"}))
	require.Equal(t, "", JoinList(nil))
	require.Equal(t, []string{"device_id", "action", "status", "cloud_address", "cloud_password", "groups",
		"allow_groups", "allow_devices", "vnc_url", "last_error"}, ExportHeader)

	for in, want := range map[string]Mode{"": ModeMerge, "merge": ModeMerge, "Replace": ModeReplace} {
		m, err := ParseMode(in)
		require.NoError(t, err)
		require.Equal(t, want, m)
	}
	_, err := ParseMode("upsert")
	require.Error(t, err)

	settled := map[Status]bool{StatusReady: true, StatusDeleted: true, StatusFailed: true, StatusCancelled: true}
	require.Len(t, Statuses, 10)
	for _, s := range Statuses {
		got, err := ParseStatus(string(s))
		require.NoError(t, err)
		require.Equal(t, s, got)
		require.Equal(t, settled[s], s.Settled(), s)
	}
	_, err = ParseStatus("Ready")
	require.Error(t, err)
}

// TestWideHeaderIsLinear: the header check once compared each column with every one
// before it; a one-line header of 50,000 columns took most of a minute. Now the
// default max_columns refuses it first, and a reader allowed that many still finds
// the duplicate.
func TestWideHeaderIsLinear(t *testing.T) {
	t.Parallel()
	var b strings.Builder
	b.WriteString("device_id,action")
	const cols = 50_000
	for i := 0; i < cols; i++ {
		fmt.Fprintf(&b, ",Col%d", i)
	}
	b.WriteString(",col7\n")
	_, err := NewReader(strings.NewReader(b.String()), ReaderOptions{MaxColumns: cols + 3})
	var problems *Problems
	require.ErrorAs(t, err, &problems)
	require.Equal(t, []where{{1, cols + 3, "col7"}}, locations(problems))
	require.Contains(t, problems.List[0].Reason, `"col7" appears twice (also column 10)`)

	_, err = NewReader(strings.NewReader(b.String()), ReaderOptions{})
	require.ErrorAs(t, err, &problems)
	require.Equal(t, []where{{1, DefaultMaxColumns + 1, ""}}, locations(problems))
	require.Equal(t, fmt.Sprintf("the header has %d columns, at most 256 are allowed", cols+3), problems.List[0].Reason)
}
