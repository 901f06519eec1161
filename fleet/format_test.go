package fleet

import (
	"errors"
	"io"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// readWith is readAll with options.
func readWith(t testing.TB, input string, opts ReaderOptions) ([]Device, *Problems) {
	t.Helper()
	r, err := NewReader(strings.NewReader(input), opts)
	if err != nil {
		var p *Problems
		require.ErrorAs(t, err, &p)
		return nil, p
	}
	var out []Device
	for {
		d, err := r.Next()
		if errors.Is(err, io.EOF) {
			return out, r.Problems()
		}
		require.NoError(t, err)
		out = append(out, d)
	}
}

func TestHeaderNormalisation(t *testing.T) {
	t.Parallel()
	devices, problems := readWith(t, "Device ID, ACTION ,Allow Groups,allow-devices,Zenlayer-Instance-ID,Serial No,location\n"+
		"s1,listen,ops,v1,zli,SN1,hall 2\nv1,connect,,,,SN2,\n", ReaderOptions{})
	require.Zero(t, problems.Len(), problems)
	require.Len(t, devices, 2)
	require.Equal(t, map[string]int{ColDeviceID: 1, ColAction: 2, ColAllowGroups: 3, ColAllowDevices: 4, ColZenlayer: 5}, devices[0].Columns)
	require.Equal(t, []string{"ops"}, devices[0].AllowGroups, "a near-miss spelling of a known column is that column")
	require.Equal(t, []string{"v1"}, devices[0].AllowDevices)
	require.Equal(t, []Field{{"Serial No", "SN1"}, {"location", "hall 2"}}, devices[0].Metadata,
		"metadata columns keep their names as written; location is no typo of action (3 edits)")

	for _, tc := range []struct{ header, column, known string }{
		{"device_id,action,alow_groups", "alow_groups", ColAllowGroups},
		{"device_id,action,allow_group", "allow_group", ColAllowGroups},
		{"device_id,action,Allow Device", "Allow Device", ColAllowDevices},
		{"device_id,action,group", "group", ColGroups},
		{"device_id,action,stat", "stat", ColState},
		{"device_id,action,site", "site", ColState},
		{"device_id,action,Status", "Status", ColState},
		{"device_id,action,grups", "grups", ColGroups},
		{"device_id,acton,groups", "acton", ColAction},
		{"deviceid,action", "deviceid", ColDeviceID},
		{"device_id,actoin", "actoin", ColAction},
		{"device_id,action,zenlayer_instanceid", "zenlayer_instanceid", ColZenlayer},
	} {
		_, problems := readWith(t, tc.header+"\n", ReaderOptions{})
		require.NotNil(t, problems, tc.header)
		var hit *Problem
		for i, p := range problems.List {
			if p.ColumnName == tc.column {
				hit = &problems.List[i]
			}
		}
		require.NotNil(t, hit, "%s: %v", tc.header, problems)
		require.Equal(t, "unknown column; did you mean "+tc.known+"?", hit.Reason, tc.header)
		require.Equal(t, slices.Index(strings.Split(tc.header, ","), tc.column)+1, hit.Column, tc.header)
	}
}

func TestSecretColumnsAreRefused(t *testing.T) {
	t.Parallel()
	for _, name := range []string{"cloud_password", "Password", "secret", "api_token", "Token", "Cloud Secret", "api-key", "credentials"} {
		_, problems := readWith(t, "device_id,action,"+name+"\nv1,connect,hunter2\n", ReaderOptions{})
		require.NotNil(t, problems, name)
		require.Equal(t, 1, problems.Len(), "%s: %v", name, problems)
		p := problems.List[0]
		require.Equal(t, where{1, 3, name}, where{p.Line, p.Column, p.ColumnName})
		require.Contains(t, p.Reason, "looks like it holds secrets", name)
		require.NotContains(t, problems.Error(), "hunter2", "the value is never quoted")
	}
	// An export --secrets file uploaded back: refused for its password column.
	export := strings.Join(ExportHeader, ",") + "\nv1,connect,ready,ADDR,hunter2,,,,,\n"
	_, problems := readWith(t, export, ReaderOptions{})
	require.NotNil(t, problems)
	require.Contains(t, problems.Error(), "line 1, column 5 (cloud_password): this column looks like it holds secrets")
}

func TestWhitespaceRule(t *testing.T) {
	t.Parallel()
	devices, problems := readWith(t, "device_id,action,groups,allow_groups,allow_devices,notes\n"+
		" v5 ,connect, line-01 ;maint ,,, kept as written \n"+
		"s1,listen,,  ops ; line-01,  v5 ;v6,\n"+
		"v6 ,connect,a b ;c,,,\n", ReaderOptions{})
	require.Zero(t, problems.Len(), problems)
	require.Equal(t, "v5", devices[0].DeviceID)
	require.Equal(t, []string{"line-01", "maint"}, devices[0].Groups, "the values as they will be sent")
	require.Equal(t, []Field{{"notes", " kept as written "}}, devices[0].Metadata)
	require.Equal(t, []string{"ops", "line-01"}, devices[1].AllowGroups)
	require.Equal(t, []string{"v5", "v6"}, devices[1].AllowDevices, "the same rule for ids in allow_devices")
	require.Equal(t, []string{"a b", "c"}, devices[2].Groups, "inner spaces are kept")
	require.Equal(t, "v6", devices[2].DeviceID)
	require.Empty(t, CheckCrossRows(devices, nil), "trimmed ids resolve to each other")

	_, problems = readWith(t, "device_id,action\n v1,connect\nv1 ,connect\n", ReaderOptions{})
	require.Empty(t, problems.List)
	devices, _ = readWith(t, "device_id,action\n v1,connect\nv1 ,connect\n", ReaderOptions{})
	dups := CheckCrossRows(devices, nil)
	require.Len(t, dups, 1, "\" v1\" and \"v1 \" are one device, listed twice")
	require.Contains(t, dups[0].Reason, `"v1" is a duplicate of line 2`)
	_, problems = readWith(t, "device_id,action,groups\nv1,connect,a; ;b\n", ReaderOptions{})
	require.Contains(t, problems.Error(), "group 2 of 3: group name is empty")
}

func TestSeparatorDetection(t *testing.T) {
	t.Parallel()
	semicolon := "device_id;action;groups\nv1;connect;a,b\nv2;connect;\n"
	_, problems := readWith(t, semicolon, ReaderOptions{})
	require.Equal(t, 1, problems.Len(), "one problem naming the separator, not one per missing column: %v", problems)
	require.Equal(t, "line 1, column 1: this file is separated by `;`, not `,`: export it as CSV UTF-8, or upload it with --separator ';'",
		problems.List[0].Error())

	devices, problems := readWith(t, semicolon, ReaderOptions{Separator: ';'})
	require.Zero(t, problems.Len(), problems)
	require.Equal(t, []string{"a,b"}, devices[0].Groups)
	require.Len(t, devices, 2)

	tabs := "device_id\taction\nv1\tconnect\n"
	_, problems = readWith(t, tabs, ReaderOptions{})
	require.Contains(t, problems.Error(), "this file is separated by tabs, not `,`: export it as CSV UTF-8, or upload it with --separator tab")
	devices, _ = readWith(t, tabs, ReaderOptions{Separator: '\t'})
	require.Equal(t, "v1", devices[0].DeviceID)

	_, problems = readWith(t, "device_id,action\nv1,connect\n", ReaderOptions{Separator: ';'})
	require.Contains(t, problems.Error(), "this file is separated by `,`, not `;`")

	for in, want := range map[string]rune{"": ',', ",": ',', ";": ';', "tab": '\t', "\t": '\t', "TAB": '\t'} {
		got, err := ParseSeparator(in)
		require.NoError(t, err)
		require.Equal(t, want, got, in)
	}
	_, err := ParseSeparator("|")
	require.EqualError(t, err, `separator must be ',', ';' or tab, not "|"`)
	_, err = NewReader(strings.NewReader(semicolon), ReaderOptions{Separator: '"'})
	require.Error(t, err)
}

func TestWindows1252(t *testing.T) {
	t.Parallel()
	// "Gerät", "Straße", "Ölpumpe" in Windows-1252 as Excel saves a plain "CSV".
	in := "device_id,action,groups,Ger\xe4t\n" +
		"v1,connect,Stra\xdfe,\xd6lpumpe\n" +
		"v2,connect,line,Motor \x80 5\n"
	_, problems := readWith(t, in, ReaderOptions{})
	require.Equal(t, 1, problems.Len(), "one problem naming the encoding, not one per cell: %v", problems)
	require.Equal(t, "line 1, column 4: this file is not UTF-8 but reads as Windows-1252 (a spreadsheet's plain \"CSV\"): "+
		"export it as CSV UTF-8, or upload it with --encoding windows-1252", problems.List[0].Error())

	devices, problems := readWith(t, in, ReaderOptions{Encoding: EncodingWindows1252})
	require.Zero(t, problems.Len(), problems)
	require.Equal(t, []string{"Straße"}, devices[0].Groups)
	require.Equal(t, []Field{{"Gerät", "Ölpumpe"}}, devices[0].Metadata)
	require.Equal(t, []Field{{"Gerät", "Motor € 5"}}, devices[1].Metadata)

	_, problems = readWith(t, "device_id,action\nv\x81,connect\nw\x81,connect\n", ReaderOptions{})
	require.Equal(t, 2, problems.Len(), "bytes Windows-1252 does not define: not that encoding, each cell reported")
	require.Equal(t, "not valid UTF-8", problems.List[0].Reason)

	for in, want := range map[string]Encoding{"": EncodingUTF8, "UTF-8": EncodingUTF8, "windows-1252": EncodingWindows1252, "cp1252": EncodingWindows1252} {
		got, err := ParseEncoding(in)
		require.NoError(t, err)
		require.Equal(t, want, got)
	}
	_, err := ParseEncoding("latin9")
	require.EqualError(t, err, `encoding must be utf-8 or windows-1252, not "latin9"`)
}

func TestSpreadsheetSafe(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"":             "",
		"line-01":      "line-01",
		"=HYPERLINK()": "'=HYPERLINK()",
		"+1":           "'+1",
		"-1":           "'-1",
		"@SUM(A1)":     "'@SUM(A1)",
		"\t=1":         "'\t=1",
		"\r=1":         "'\r=1",
		"a=b":          "a=b",
	} {
		require.Equal(t, want, SpreadsheetSafe(in), "%q", in)
	}
	require.Equal(t, "'=a;b", SpreadsheetSafeList([]string{"=a", "b"}))
	// Every leading character a device_id may not have is one SpreadsheetSafe defuses.
	for _, c := range FormulaStart {
		require.NotEmpty(t, deviceIDProblem(string(c)+"x"))
		require.Equal(t, "'"+string(c)+"x", SpreadsheetSafe(string(c)+"x"))
	}
}
