package main

// In-process tests of the commands that talk to `vncfleet serve`, against an
// httptest server answering like docs/http-api.md. They set the environment with
// t.Setenv and so cannot run in parallel.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"github.com/stretchr/testify/require"

	"github.com/vncfleet/vncfleet/internal/apiclient"
)

const apiFakeToken = "cli-test-token"

// apiFake is a scriptable vncfleet server.
type apiFake struct {
	mu sync.Mutex
	// answers, by "METHOD /path": status and body; a list is served in order, its
	// last entry repeating (progress polls).
	answers map[string][]fakeAnswer
	// requests seen, in order.
	requests []fakeRequest
}

type fakeAnswer struct {
	status int
	body   any // marshalled as JSON, or written as is when a string
}

type fakeRequest struct {
	method, path string
	query        url.Values
	auth         string
	body         []byte
}

func newAPIFake(t *testing.T) (*apiFake, *httptest.Server) {
	t.Helper()
	f := &apiFake{answers: map[string][]fakeAnswer{}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		f.mu.Lock()
		f.requests = append(f.requests, fakeRequest{r.Method, r.URL.Path, r.URL.Query(), r.Header.Get("Authorization"), body})
		key := r.Method + " " + r.URL.Path
		list := f.answers[key]
		var a fakeAnswer
		switch {
		case r.Header.Get("Authorization") != "Bearer "+apiFakeToken:
			a = fakeAnswer{401, map[string]any{"error": "unknown token"}}
		case len(list) == 0:
			a = fakeAnswer{404, map[string]any{"error": "no route " + key}}
		default:
			a = list[0]
			if len(list) > 1 {
				f.answers[key] = list[1:]
			}
		}
		f.mu.Unlock()
		if s, ok := a.body.(string); ok {
			w.Header().Set("Content-Type", "text/csv")
			w.WriteHeader(a.status)
			_, _ = io.WriteString(w, s)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(a.status)
		_ = json.NewEncoder(w).Encode(a.body)
	}))
	t.Cleanup(srv.Close)
	return f, srv
}

func (f *apiFake) on(key string, answers ...fakeAnswer) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.answers[key] = answers
}

func (f *apiFake) seen(key string) []fakeRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []fakeRequest
	for _, r := range f.requests {
		if r.method+" "+r.path == key {
			out = append(out, r)
		}
	}
	return out
}

// runCLI runs the vncfleet root command in-process against the server at apiURL and
// returns stdout, stderr (with the error main would print) and the exit code main
// would use.
func runCLI(t *testing.T, apiURL string, stdin io.Reader, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	t.Setenv("VNCFLEET_URL", apiURL)
	t.Setenv("VNCFLEET_TOKEN", apiFakeToken)
	t.Setenv("VNCFLEET_TOKEN_FILE", "")
	first, maxDelay := pollPolicy.First, pollPolicy.Max
	pollPolicy.First, pollPolicy.Max = time.Millisecond, 5*time.Millisecond
	t.Cleanup(func() { pollPolicy.First, pollPolicy.Max = first, maxDelay })

	root := newRootCmd()
	root.SetArgs(args)
	var out, errOut bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errOut)
	if stdin != nil {
		root.SetIn(stdin)
	}
	err := root.ExecuteContext(context.Background())
	if err != nil {
		fmt.Fprintln(&errOut, "vncfleet:", err)
	}
	return out.String(), errOut.String(), exitCodeOf(err)
}

// exitCodeOf is main's mapping of an error to the exit code.
func exitCodeOf(err error) int {
	if err == nil {
		return exitOK
	}
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	return exitBadInput
}

func manifestJSON(id int) map[string]any {
	return map[string]any{"id": id, "fleet": "f", "mode": "merge", "rows": 3, "sha256": "00", "uploader": "admin", "uploadedAt": "2025-01-02T03:04:05Z"}
}

var testPlan = map[string]any{
	"creates": 1502, "updates": 1, "deletes": 3, "unchanged": 4,
	"createIds":  []string{"new-1", "new-2"},
	"updateList": []any{map[string]any{"deviceId": "chg-1", "fields": []string{"groups", "allow_devices"}}},
	"deleteIds":  []string{"old-1", "old-2", "old-3"},
}

func writeManifest(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "m.csv")
	require.NoError(t, os.WriteFile(path, []byte(content), 0o600))
	return path
}

const sampleCSV = "device_id,action,groups\ncam-1,connect,line-1\ncam-2,connect,line-1\n"

func TestUploadAnswersAndExitCodes(t *testing.T) {
	tests := []struct {
		name       string
		answer     fakeAnswer
		args       []string
		code       int
		inStdout   []string
		inStderr   []string
		notInOut   []string
		checkQuery func(t *testing.T, q url.Values)
	}{
		{
			name:     "stored",
			answer:   fakeAnswer{201, map[string]any{"manifest": manifestJSON(7), "plan": testPlan}},
			args:     []string{"--fleet", "f"},
			inStdout: []string{"manifest #7 stored (fleet f, merge, 3 rows): 1502 to create, 1 to update, 3 to delete, 4 unchanged"},
			checkQuery: func(t *testing.T, q url.Values) {
				require.Equal(t, url.Values{"fleet": {"f"}, "mode": {"merge"}}, q, "no dry_run, no max_deletions unless asked")
			},
		},
		{
			name:     "dry run prints the whole plan",
			answer:   fakeAnswer{200, map[string]any{"dryRun": true, "plan": testPlan}},
			args:     []string{"--dry-run", "--mode", "replace"},
			inStdout: []string{"dry run (fleet default, replace): nothing was changed", "create new-1\n", "create new-2\n", "... and 1500 more to create", "update chg-1: groups, allow_devices", "delete old-1\n", "delete old-3\n"},
			checkQuery: func(t *testing.T, q url.Values) {
				require.Equal(t, "true", q.Get("dry_run"))
				require.Equal(t, "replace", q.Get("mode"))
				require.Equal(t, "default", q.Get("fleet"))
			},
		},
		{
			name: "422 prints every problem and the total",
			answer: fakeAnswer{422, map[string]any{"error": "manifest rejected: 1500 problems", "total": 1500, "problems": []string{
				"line 2, column 2 (action): must be connect or listen", "line 9, column 1 (device_id): duplicate of line 3"}}},
			code: exitBadInput,
			inStderr: []string{"line 2, column 2 (action): must be connect or listen\nline 9, column 1 (device_id): duplicate of line 3\n",
				"1500 problems, the first 2 listed; nothing was stored"},
		},
		{
			name:     "409 shows every deletion and the flag to allow them",
			answer:   fakeAnswer{409, map[string]any{"error": "replace would delete 3 devices", "plan": testPlan, "maxDeletions": 1}},
			args:     []string{"--mode", "replace"},
			code:     exitBadInput,
			inStderr: []string{"delete old-1\n", "delete old-2\n", "delete old-3\n", "more than the 1 allowed", "--max-deletions 3"},
			notInOut: []string{"old-1"},
		},
		{
			name:       "max deletions zero is sent",
			answer:     fakeAnswer{409, map[string]any{"error": "replace would delete 3 devices", "plan": testPlan, "maxDeletions": 0}},
			args:       []string{"--mode", "replace", "--max-deletions", "0"},
			code:       exitBadInput,
			checkQuery: func(t *testing.T, q url.Values) { require.Equal(t, "0", q.Get("max_deletions")) },
		},
		{name: "413", answer: fakeAnswer{413, map[string]any{"error": "manifest larger than 10 bytes"}}, code: exitBadInput, inStderr: []string{"too large", "larger than 10 bytes"}},
		{name: "400", answer: fakeAnswer{400, map[string]any{"error": "bad fleet name"}}, code: exitBadInput, inStderr: []string{"bad fleet name"}},
		{name: "403", answer: fakeAnswer{403, map[string]any{"error": "token ci lacks the upload role"}}, code: exitBadInput, inStderr: []string{"lacks the upload role"}},
		{name: "503 readyz-style", answer: fakeAnswer{503, map[string]any{"error": "database unavailable"}}, code: exitUnreachable, inStderr: []string{"database unavailable"}},
		{name: "500", answer: fakeAnswer{500, map[string]any{"error": "internal error"}}, code: exitUnreachable},
		{
			name:     "unchanged",
			answer:   fakeAnswer{200, map[string]any{"manifest": manifestJSON(5), "plan": map[string]any{"unchanged": 3}, "unchanged": true}},
			inStdout: []string{"manifest unchanged (same as #5)"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fake, srv := newAPIFake(t)
			fake.on("POST /v1/manifests", tt.answer)
			path := writeManifest(t, sampleCSV)
			out, errOut, code := runCLI(t, srv.URL, nil, append(append([]string{"upload"}, tt.args...), path)...)
			require.Equal(t, tt.code, code, "stdout:\n%s\nstderr:\n%s", out, errOut)
			for _, s := range tt.inStdout {
				require.Contains(t, out, s)
			}
			for _, s := range tt.inStderr {
				require.Contains(t, errOut, s)
			}
			for _, s := range tt.notInOut {
				require.NotContains(t, out, s, "diagnostics go to stderr")
			}
			reqs := fake.seen("POST /v1/manifests")
			require.Len(t, reqs, 1)
			require.Equal(t, sampleCSV, string(reqs[0].body), "the file is sent unchanged")
			require.Equal(t, "Bearer "+apiFakeToken, reqs[0].auth)
			if tt.checkQuery != nil {
				tt.checkQuery(t, reqs[0].query)
			}
		})
	}
}

func TestUploadInputErrors(t *testing.T) {
	fake, srv := newAPIFake(t)
	path := writeManifest(t, sampleCSV)
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"bad mode", []string{"upload", "--mode", "sideways", path}, "--mode must be merge or replace"},
		{"negative max deletions", []string{"upload", "--max-deletions", "-1", path}, "--max-deletions"},
		{"missing file", []string{"upload", filepath.Join(t.TempDir(), "nope.csv")}, "no such file"},
		{"directory", []string{"upload", t.TempDir()}, "is a directory"},
		{"no file", []string{"upload"}, "accepts 1 arg"},
		{"unknown flag", []string{"upload", "--token", "x", path}, "unknown flag: --token"},
		{"bad manifest id", []string{"status", "twelve"}, "MANIFEST_ID must be a positive number"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, errOut, code := runCLI(t, srv.URL, nil, tt.args...)
			require.Equal(t, exitBadInput, code, errOut)
			require.Contains(t, errOut, tt.want)
		})
	}
	require.Empty(t, fake.seen("POST /v1/manifests"), "bad input never reaches the server")
}

func TestUploadFromStdinAndTokenFile(t *testing.T) {
	fake, srv := newAPIFake(t)
	fake.on("POST /v1/manifests", fakeAnswer{201, map[string]any{"manifest": manifestJSON(8), "plan": testPlan}})
	tokenFile := filepath.Join(t.TempDir(), "token")
	require.NoError(t, os.WriteFile(tokenFile, []byte(apiFakeToken+"\n"), 0o600))

	t.Setenv("VNCFLEET_URL", srv.URL)
	t.Setenv("VNCFLEET_TOKEN", "")
	t.Setenv("VNCFLEET_TOKEN_FILE", tokenFile)
	root := newRootCmd()
	root.SetArgs([]string{"upload", "--fleet", "f", "-"})
	var out, errOut bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetIn(strings.NewReader(sampleCSV))
	require.NoError(t, root.Execute(), errOut.String())
	require.Contains(t, out.String(), "manifest #8 stored")
	reqs := fake.seen("POST /v1/manifests")
	require.Len(t, reqs, 1)
	require.Equal(t, sampleCSV, string(reqs[0].body))
	require.Equal(t, "Bearer "+apiFakeToken, reqs[0].auth, "the token comes from VNCFLEET_TOKEN_FILE")
}

func TestUnreachableServerExits3(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	dead := "http://" + ln.Addr().String()
	require.NoError(t, ln.Close())
	path := writeManifest(t, sampleCSV)
	for _, args := range [][]string{{"upload", path}, {"status"}, {"status", "3"}, {"export"}, {"rotate"}, {"reconcile"}, {"retry"}} {
		t.Run(args[0], func(t *testing.T) {
			_, errOut, code := runCLI(t, dead, nil, args...)
			require.Equal(t, exitUnreachable, code, errOut)
			require.Contains(t, errOut, "cannot reach the vncfleet server")
			require.NotContains(t, errOut, apiFakeToken)
		})
	}
}

func TestUnauthorizedExits2WithHint(t *testing.T) {
	_, srv := newAPIFake(t)
	t.Setenv("VNCFLEET_URL", srv.URL)
	t.Setenv("VNCFLEET_TOKEN", "wrong")
	root := newRootCmd()
	root.SetArgs([]string{"status"})
	root.SetOut(io.Discard)
	root.SetErr(io.Discard)
	err := root.Execute()
	require.Equal(t, exitBadInput, exitCodeOf(err))
	require.Contains(t, err.Error(), "VNCFLEET_TOKEN")
	require.NotContains(t, err.Error(), "wrong", "the token is never echoed")
}

func progressAnswer(id, settled, total int, done bool, byStatus map[string]int) fakeAnswer {
	failed := byStatus["failed"]
	return fakeAnswer{200, map[string]any{"manifest": manifestJSON(id), "total": total, "settled": settled, "done": done,
		"failed": failed, "byStatus": byStatus, "byGroup": map[string]any{"line-1": byStatus}}}
}

func TestUploadWait(t *testing.T) {
	var report strings.Builder
	report.WriteString("device_id,status,cloud_address,error\n")
	for i := range 60 {
		fmt.Fprintf(&report, "bad-%02d,failed,,\"quota exceeded,\nretry later\"\n", i)
	}
	report.WriteString("good-1,ready,addr-1,\n")

	tests := []struct {
		name     string
		upload   fakeAnswer
		polls    []fakeAnswer
		code     int
		inStdout []string
		notIn    []string
		inStderr []string
		manifest string
	}{
		{
			name:   "all ready",
			upload: fakeAnswer{201, map[string]any{"manifest": manifestJSON(7), "plan": testPlan}},
			polls: []fakeAnswer{
				progressAnswer(7, 0, 3, false, map[string]int{"pending": 3}),
				progressAnswer(7, 1, 3, false, map[string]int{"creating": 2, "ready": 1}),
				progressAnswer(7, 3, 3, true, map[string]int{"ready": 3}),
			},
			code:     exitOK,
			inStdout: []string{"manifest #7: 3 devices settled", "STATUS  DEVICES\nready   3\n"},
			notIn:    []string{"FAILED"},
			manifest: "/v1/manifests/7",
		},
		{
			name:   "some failed",
			upload: fakeAnswer{201, map[string]any{"manifest": manifestJSON(7), "plan": testPlan}},
			polls: []fakeAnswer{
				progressAnswer(7, 10, 61, false, map[string]int{"creating": 51, "ready": 10}),
				progressAnswer(7, 61, 61, true, map[string]int{"ready": 1, "failed": 60}),
			},
			code: exitSomeFailed,
			inStdout: []string{"ready   1\nfailed  60\n", "FAILED DEVICE  ERROR\n", "bad-00         quota exceeded, retry later\n",
				"bad-49", "... 10 more\n"},
			notIn:    []string{"bad-50", "good-1"},
			manifest: "/v1/manifests/7",
		},
		{
			name:     "one device, failed: counted in the singular",
			upload:   fakeAnswer{201, map[string]any{"manifest": manifestJSON(7), "plan": testPlan}},
			polls:    []fakeAnswer{progressAnswer(7, 1, 1, true, map[string]int{"failed": 1})},
			code:     exitSomeFailed,
			inStdout: []string{"manifest #7: 1 device settled\n"},
			inStderr: []string{"vncfleet: 1 of 1 device failed (vncfleet retry --manifest 7 schedules it again)\n"},
			manifest: "/v1/manifests/7",
		},
		{
			name:     "unchanged still waits on that manifest",
			upload:   fakeAnswer{200, map[string]any{"manifest": manifestJSON(5), "plan": map[string]any{"unchanged": 3}, "unchanged": true}},
			polls:    []fakeAnswer{progressAnswer(5, 3, 3, true, map[string]int{"ready": 3})},
			code:     exitOK,
			inStdout: []string{"manifest unchanged (same as #5)", "manifest #5: 3 devices settled"},
			manifest: "/v1/manifests/5",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fake, srv := newAPIFake(t)
			fake.on("POST /v1/manifests", tt.upload)
			fake.on("GET "+tt.manifest, tt.polls...)
			fake.on("GET "+tt.manifest+"/report", fakeAnswer{200, report.String()})
			out, errOut, code := runCLI(t, srv.URL, nil, "upload", "--wait", writeManifest(t, sampleCSV))
			require.Equal(t, tt.code, code, "stdout:\n%s\nstderr:\n%s", out, errOut)
			for _, s := range tt.inStdout {
				require.Contains(t, out, s)
			}
			for _, s := range tt.notIn {
				require.NotContains(t, out, s)
			}
			for _, s := range tt.inStderr {
				require.Contains(t, errOut, s)
			}
			polls := fake.seen("GET " + tt.manifest)
			require.Len(t, polls, len(tt.polls), "polled until done, then stopped")
			for _, p := range polls {
				require.Equal(t, "true", p.query.Get("no_groups"), "a progress bar needs no counts by group")
			}
			// stderr is no terminal here: plain lines, no cursor control.
			require.NotContains(t, errOut, "\r")
			require.Contains(t, errOut, "settled (")
		})
	}
}

func TestUploadWaitTimeout(t *testing.T) {
	fake, srv := newAPIFake(t)
	fake.on("POST /v1/manifests", fakeAnswer{201, map[string]any{"manifest": manifestJSON(7), "plan": testPlan}})
	fake.on("GET /v1/manifests/7", progressAnswer(7, 1, 3, false, map[string]int{"ready": 1, "creating": 2}))
	start := time.Now()
	_, errOut, code := runCLI(t, srv.URL, nil, "upload", "--wait", "--timeout", "200ms", writeManifest(t, sampleCSV))
	require.Equal(t, exitTimeout, code, errOut)
	require.Contains(t, errOut, "stopped waiting for manifest #7: --timeout passed")
	require.Contains(t, errOut, "the work goes on on the server")
	require.Less(t, time.Since(start), 5*time.Second)
}

func TestStatus(t *testing.T) {
	fake, srv := newAPIFake(t)
	fake.on("GET /v1/manifests/7", fakeAnswer{200, map[string]any{"manifest": manifestJSON(7), "total": 5, "settled": 4, "done": false, "failed": 1,
		"byStatus": map[string]int{"ready": 3, "failed": 1, "creating": 1},
		"byGroup":  map[string]any{"line-1": map[string]int{"ready": 3, "creating": 1}, "": map[string]int{"failed": 1}}}})
	fake.on("GET /v1/status", fakeAnswer{200, map[string]any{"total": 12,
		"byStatus":   map[string]int{"ready": 10, "deleted": 2},
		"byGroup":    map[string]any{"line-2": map[string]int{"ready": 10}},
		"byManifest": []any{map[string]any{"manifest": 7, "fleet": "f", "byStatus": map[string]int{"ready": 10, "deleted": 2}}}}})
	fake.on("GET /v1/manifests/9", fakeAnswer{404, map[string]any{"error": "manifest 9 not found"}})

	out, errOut, code := runCLI(t, srv.URL, nil, "status", "7")
	require.Equal(t, exitOK, code, errOut)
	require.Contains(t, out, "manifest #7 (fleet f, merge, 3 rows")
	require.Contains(t, out, "4 of 5 devices settled, 1 failed: in progress")
	require.Contains(t, out, "STATUS    DEVICES\ncreating  1\nready     3\nfailed    1\n", "life order, aligned")
	require.Contains(t, out, "GROUP       TOTAL  CREATING  READY  FAILED\n(no group)  1      0         0      1\nline-1      4      1         3      0\n")

	out, errOut, code = runCLI(t, srv.URL, nil, "status", "--fleet", "f")
	require.Equal(t, exitOK, code, errOut)
	require.Contains(t, out, "fleet f: 12 devices")
	require.Contains(t, out, "MANIFEST  TOTAL  READY  DELETED\n#7 (f)    12     10     2\n")
	require.Equal(t, "f", fake.seen("GET /v1/status")[0].query.Get("fleet"))

	out, errOut, code = runCLI(t, srv.URL, nil, "status", "--json")
	require.Equal(t, exitOK, code, errOut)
	var st struct {
		Total    int            `json:"total"`
		ByStatus map[string]int `json:"byStatus"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &st), out)
	require.Equal(t, 12, st.Total)
	require.Equal(t, 2, st.ByStatus["deleted"])
	require.False(t, fake.seen("GET /v1/status")[1].query.Has("fleet"), "every fleet unless --fleet")

	_, errOut, code = runCLI(t, srv.URL, nil, "status", "7", "--fleet", "other")
	require.Equal(t, exitBadInput, code)
	require.Contains(t, errOut, "belongs to fleet f")

	_, errOut, code = runCLI(t, srv.URL, nil, "status", "9")
	require.Equal(t, exitBadInput, code)
	require.Contains(t, errOut, "manifest 9 not found")
}

// status of a fleet of many groups shows a page of them, says how many there are and
// how to see the next ones, and passes its paging flags to the server.
func TestStatusPagesGroups(t *testing.T) {
	fake, srv := newAPIFake(t)
	fake.on("GET /v1/status", fakeAnswer{200, map[string]any{"total": 30, "groups": 3, "nextGroupsAfter": "line-2",
		"byStatus": map[string]int{"ready": 30},
		"byGroup":  map[string]any{"line-1": map[string]int{"ready": 10}, "line-2": map[string]int{"ready": 10}}}})

	out, errOut, code := runCLI(t, srv.URL, nil, "status", "--fleet", "f", "--groups", "2", "--groups-after", "line-0")
	require.Equal(t, exitOK, code, errOut)
	require.Contains(t, out, "fleet f: 30 devices")
	require.Contains(t, out, "line-1  10     10\nline-2  10     10\n")
	require.Contains(t, out, "(2 of 3 groups shown; the next ones: --groups-after line-2)")
	q := fake.seen("GET /v1/status")[0].query
	require.Equal(t, "2", q.Get("groups"))
	require.Equal(t, "line-0", q.Get("groups_after"))
	require.False(t, q.Has("group"))

	_, errOut, code = runCLI(t, srv.URL, nil, "status", "--group", "")
	require.Equal(t, exitOK, code, errOut)
	q = fake.seen("GET /v1/status")[1].query
	require.True(t, q.Has("group"), "--group \"\" asks for the devices in no group")
	require.Equal(t, "", q.Get("group"))
	require.False(t, q.Has("groups"))

	_, errOut, code = runCLI(t, srv.URL, nil, "status", "--groups", "0")
	require.Equal(t, exitOK, code, errOut)
	require.Equal(t, "0", fake.seen("GET /v1/status")[2].query.Get("groups"), "--groups 0: none")

	_, errOut, code = runCLI(t, srv.URL, nil, "status", "--group", "line-1", "--groups", "5")
	require.Equal(t, exitBadInput, code)
	require.Contains(t, errOut, "--group shows one group")
	_, _, code = runCLI(t, srv.URL, nil, "status", "--groups", "-1")
	require.Equal(t, exitBadInput, code)
	require.Len(t, fake.seen("GET /v1/status"), 3, "bad flags ask nothing")
}

// status MANIFEST_ID pages the manifest's groups as a fleet's status does: it passes
// the paging flags and says how to see the next ones.
func TestStatusOfAManifestPagesItsGroups(t *testing.T) {
	fake, srv := newAPIFake(t)
	fake.on("GET /v1/manifests/7", fakeAnswer{200, map[string]any{"manifest": manifestJSON(7), "total": 30, "settled": 30, "done": true,
		"byStatus": map[string]int{"ready": 30}, "groups": 3, "nextGroupsAfter": "line-2",
		"byGroup": map[string]any{"line-1": map[string]int{"ready": 10}, "line-2": map[string]int{"ready": 10}}}})

	out, errOut, code := runCLI(t, srv.URL, nil, "status", "7", "--groups", "2", "--groups-after", "line-0")
	require.Equal(t, exitOK, code, errOut)
	require.Contains(t, out, "line-1  10     10\nline-2  10     10\n")
	require.Contains(t, out, "(2 of 3 groups shown; the next ones: --groups-after line-2)")
	q := fake.seen("GET /v1/manifests/7")[0].query
	require.Equal(t, "2", q.Get("groups"))
	require.Equal(t, "line-0", q.Get("groups_after"))

	_, errOut, code = runCLI(t, srv.URL, nil, "status", "7", "--group", "line-1")
	require.Equal(t, exitOK, code, errOut)
	require.Equal(t, "line-1", fake.seen("GET /v1/manifests/7")[1].query.Get("group"))
}

func TestExportStreamsUnchanged(t *testing.T) {
	fake, srv := newAPIFake(t)
	csvBody := "device_id,action,status,cloud_address,cloud_password,groups,allow_groups,allow_devices,vnc_url,last_error\n" +
		"cam-1,connect,ready,addr,\"pw,with\"\"quote\",line-1;line-2,,,,\r\n"
	fake.on("GET /v1/export", fakeAnswer{200, csvBody}, fakeAnswer{403, map[string]any{"error": "token lacks the secrets role"}})

	out, errOut, code := runCLI(t, srv.URL, nil, "export")
	require.Equal(t, exitOK, code, errOut)
	require.Equal(t, csvBody, out, "byte for byte")
	require.Empty(t, fake.seen("GET /v1/export")[0].query)

	out, errOut, code = runCLI(t, srv.URL, nil, "export", "--fleet", "f", "--secrets")
	require.Equal(t, exitBadInput, code)
	require.Empty(t, out, "an error is not CSV")
	require.Contains(t, errOut, "secrets role")
	require.Equal(t, url.Values{"fleet": {"f"}, "secrets": {"true"}}, fake.seen("GET /v1/export")[1].query)
}

func TestRotate(t *testing.T) {
	fake, srv := newAPIFake(t)
	fake.on("POST /v1/rotate", fakeAnswer{200, map[string]any{"scheduled": 4, "key": "rotate-9"}})
	fake.on("GET /v1/work/rotate-9",
		fakeAnswer{200, map[string]any{"total": 4, "settled": 1, "done": false, "byStatus": map[string]int{"rotating": 3, "ready": 1}}},
		fakeAnswer{200, map[string]any{"total": 4, "settled": 4, "done": true, "byStatus": map[string]int{"ready": 3, "failed": 1}}})

	out, errOut, code := runCLI(t, srv.URL, nil, "rotate", "--fleet", "f", "--all")
	require.Equal(t, exitOK, code, errOut)
	require.Contains(t, out, "4 rotations scheduled (work rotate-9)")
	require.Equal(t, url.Values{"fleet": {"f"}, "all": {"true"}}, fake.seen("POST /v1/rotate")[0].query)
	require.Empty(t, fake.seen("GET /v1/work/rotate-9"), "no wait without --wait")

	out, errOut, code = runCLI(t, srv.URL, nil, "rotate", "--wait")
	require.Equal(t, exitSomeFailed, code, "a failed rotation: %s\n%s", out, errOut)
	require.Contains(t, out, "work rotate-9: 4 devices settled")
	require.Contains(t, out, "failed  1")
	require.Empty(t, fake.seen("POST /v1/rotate")[1].query, "due rotations of every fleet")
	require.Len(t, fake.seen("GET /v1/work/rotate-9"), 2)
}

func TestRetry(t *testing.T) {
	fake, srv := newAPIFake(t)
	fake.on("POST /v1/retry", fakeAnswer{200, map[string]any{"retried": 6}})
	fake.on("GET /v1/manifests/7", progressAnswer(7, 6, 6, true, map[string]int{"ready": 6}))

	out, errOut, code := runCLI(t, srv.URL, nil, "retry", "--fleet", "f", "--manifest", "7")
	require.Equal(t, exitOK, code, errOut)
	require.Contains(t, out, "6 failed devices scheduled again")
	require.Equal(t, url.Values{"fleet": {"f"}, "manifest": {"7"}}, fake.seen("POST /v1/retry")[0].query)

	out, errOut, code = runCLI(t, srv.URL, nil, "retry", "--manifest", "7", "--wait")
	require.Equal(t, exitOK, code, errOut)
	require.Contains(t, out, "manifest #7: 6 devices settled", "without a work key, --wait follows the manifest")
}

func TestReconcile(t *testing.T) {
	fake, srv := newAPIFake(t)
	report := `{"dryRun":true,"listed":12,"vanished":["cam-1","cam-2"],"adopted":null,"deletedOrphans":[],` +
		`"foreign":[{"address":"x","groups":["a"]}],"byFleet":{"f":{"checked":3}},"note":"two\nlines"}`
	fake.on("POST /v1/reconcile", fakeAnswer{200, json.RawMessage(report)})

	out, errOut, code := runCLI(t, srv.URL, nil, "reconcile", "--dry-run")
	require.Equal(t, exitOK, code, errOut)
	require.Equal(t, "true", fake.seen("POST /v1/reconcile")[0].query.Get("dry_run"))
	want := "reconciliation report (dry run: nothing was changed)\n" +
		"dry run: true\n" +
		"listed: 12\n" +
		"vanished (2):\n  cam-1\n  cam-2\n" +
		"adopted: none\n" +
		"deleted orphans: none\n" +
		"foreign (1):\n  {\n    \"address\": \"x\",\n    \"groups\": [\n      \"a\"\n    ]\n  }\n" +
		"by fleet:\n  {\n    \"f\": {\n      \"checked\": 3\n    }\n  }\n" +
		"note: two lines\n"
	require.Equal(t, want, out)

	out, errOut, code = runCLI(t, srv.URL, nil, "reconcile", "--json")
	require.Equal(t, exitOK, code, errOut)
	require.Contains(t, out, `"adopted": null`, "the server's JSON, indented, field order kept")
	require.Less(t, strings.Index(out, `"listed"`), strings.Index(out, `"vanished"`))
	require.JSONEq(t, report, out)
	require.False(t, fake.seen("POST /v1/reconcile")[1].query.Has("dry_run"))
}

// TestReconcileThatDidNotSettleExits1: a report that did not converge (a drift check
// that failed after its retries, an ambiguous address) is printed and exits 1.
func TestReconcileThatDidNotSettleExits1(t *testing.T) {
	for name, report := range map[string]string{
		"errors":     `{"converged":false,"errors":["check drift of cam-1: vnccloud get: 503 Service Unavailable"]}`,
		"ambiguous":  `{"converged":false,"ambiguous":["addr-1"],"errors":null}`,
		"old server": `{"errors":["inspect addr-2: timeout"]}`,
	} {
		t.Run(name, func(t *testing.T) {
			fake, srv := newAPIFake(t)
			fake.on("POST /v1/reconcile", fakeAnswer{200, json.RawMessage(report)})
			for _, args := range [][]string{{"reconcile"}, {"reconcile", "--json"}} {
				out, errOut, code := runCLI(t, srv.URL, nil, args...)
				require.Equal(t, exitSomeFailed, code, "%v: %s\n%s", args, out, errOut)
				require.Contains(t, errOut, "could not be settled or checked")
				require.NotEmpty(t, out, "the report is printed")
			}
		})
	}
	fake, srv := newAPIFake(t)
	fake.on("POST /v1/reconcile", fakeAnswer{200, json.RawMessage(`{"converged":true,"errors":null,"ambiguous":null}`)})
	_, errOut, code := runCLI(t, srv.URL, nil, "reconcile")
	require.Equal(t, exitOK, code, errOut)
}

// TestHelpDescribesEveryFlag: `vncfleet COMMAND --help` names each flag, and no
// command takes a secret on the command line.
func TestHelpDescribesEveryFlag(t *testing.T) {
	for _, name := range []string{"upload", "status", "export", "rotate", "reconcile", "retry"} {
		t.Run(name, func(t *testing.T) {
			root := newRootCmd()
			var sub *cobra.Command
			for _, c := range root.Commands() {
				if c.Name() == name {
					sub = c
				}
			}
			require.NotNil(t, sub, "%s is registered", name)
			out, errOut, code := runCLI(t, "http://127.0.0.1:1", nil, name, "--help")
			require.Equal(t, exitOK, code, errOut)
			sub.Flags().VisitAll(func(f *pflag.Flag) {
				require.Contains(t, out, "--"+f.Name, "flag %s is described", f.Name)
				require.NotEmpty(t, f.Usage, "flag %s has a description", f.Name)
				require.NotContains(t, strings.ToLower(f.Name), "token")
				require.NotContains(t, strings.ToLower(f.Name), "secret-key")
			})
		})
	}
}

// TestWaitRidesOutAnOutage: a server that cannot serve for a moment (503) is
// waited out; one that stays away past pollPolicy.Outage ends the wait with exit 3.
func TestWaitRidesOutAnOutage(t *testing.T) {
	outage := pollPolicy.Outage
	t.Cleanup(func() { pollPolicy.Outage = outage })
	pollPolicy.Outage = 300 * time.Millisecond
	down := fakeAnswer{503, map[string]any{"error": "database unavailable"}}

	fake, srv := newAPIFake(t)
	fake.on("GET /v1/manifests/7", down, down, progressAnswer(7, 3, 3, true, map[string]int{"ready": 3}))
	out, errOut, code := runCLI(t, srv.URL, nil, "status", "7") // not a wait: no patience
	require.Equal(t, exitUnreachable, code, out)
	require.Contains(t, errOut, "database unavailable")

	fake.on("POST /v1/retry", fakeAnswer{200, map[string]any{"retried": 3}})
	out, errOut, code = runCLI(t, srv.URL, nil, "retry", "--manifest", "7", "--wait")
	require.Equal(t, exitOK, code, "%s\n%s", out, errOut)
	require.Contains(t, errOut, "still waiting")
	require.Contains(t, out, "manifest #7: 3 devices settled")

	fake.on("GET /v1/manifests/7", down)
	out, errOut, code = runCLI(t, srv.URL, nil, "retry", "--manifest", "7", "--wait")
	require.Equal(t, exitUnreachable, code, "%s\n%s", out, errOut)
}

func TestCancelAsksAgainUntilNoCallIsInFlight(t *testing.T) {
	fake, srv := newAPIFake(t)
	fake.on("POST /v1/manifests/7/cancel",
		fakeAnswer{200, map[string]any{"manifest": 7, "cancelled": 4, "inFlight": 2, "byStatus": map[string]int{"cancelled": 4, "creating": 2, "ready": 1}}},
		fakeAnswer{200, map[string]any{"manifest": 7, "cancelled": 1, "inFlight": 0, "byStatus": map[string]int{"cancelled": 5, "awaiting_ready": 1, "ready": 1}}})

	out, errOut, code := runCLI(t, srv.URL, nil, "cancel", "7")
	require.Equal(t, exitOK, code, errOut)
	require.Contains(t, errOut, "waiting for 2 calls in flight to finish")
	require.Contains(t, out, "manifest 7 cancelled: 5 devices will not be provisioned")
	require.Contains(t, out, "cancelled       5")
	require.Len(t, fake.seen("POST /v1/manifests/7/cancel"), 2)

	_, errOut, code = runCLI(t, srv.URL, nil, "cancel", "8")
	require.Equal(t, exitBadInput, code, "an unknown manifest is not found: %s", errOut)
	_, _, code = runCLI(t, srv.URL, nil, "cancel", "x")
	require.Equal(t, exitBadInput, code)
}

// TestReconcileWaitsForARunInProgress: a run already in progress elsewhere (the
// schedule's) is waited for, saying so, not reported as a failure of this command.
func TestReconcileWaitsForARunInProgress(t *testing.T) {
	fake, srv := newAPIFake(t)
	fake.on("POST /v1/reconcile",
		fakeAnswer{http.StatusConflict, map[string]string{"error": "reconciliation is already running"}},
		fakeAnswer{200, json.RawMessage(`{"converged":true,"errors":null}`)})
	out, errOut, code := runCLI(t, srv.URL, nil, "reconcile")
	require.Equal(t, exitOK, code, "%s\n%s", out, errOut)
	require.Contains(t, errOut, "another reconciliation is running")
	require.Len(t, fake.seen("POST /v1/reconcile"), 2, "asked again once the other run ended")
}

// TestLimiterMessages holds the lines that show the cluster's limiter to their exact
// wording (golden): the progress line's note, the cloud's own line, and the final
// summary.
func TestLimiterMessages(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 3, 0, 0, time.UTC)
	until := now.Add(4 * time.Second)
	retry := now.Add(20 * time.Second)
	slowed := &apiclient.LimiterState{Rate: 40, Factor: 0.3, Sending: 12, Processes: 3, Slowed: 2}
	full := &apiclient.LimiterState{Rate: 40, Factor: 1, Sending: 38.6, Processes: 3}
	for _, c := range []struct {
		name       string
		cloud      *apiclient.CloudState
		note, line string
	}{
		{name: "nothing to say", cloud: &apiclient.CloudState{Calls: 5, Limiter: full}},
		{name: "no state", cloud: nil},
		{
			name:  "slowed down",
			cloud: &apiclient.CloudState{Calls: 5, Limiter: slowed},
			note:  "sending 12/s of 40/s: VNC Cloud asked to slow down",
			line:  "VNC Cloud: the cluster slowed down at VNC Cloud's request",
		},
		{
			name:  "slowed to a fraction",
			cloud: &apiclient.CloudState{Limiter: &apiclient.LimiterState{Rate: 5, Factor: 0.1, Sending: 0.5, Processes: 1, Slowed: 1}},
			note:  "sending 0.5/s of 5/s: VNC Cloud asked to slow down",
			line:  "VNC Cloud: the cluster slowed down at VNC Cloud's request",
		},
		{
			name:  "paused",
			cloud: &apiclient.CloudState{Calls: 5, ErrorsLastMinute: map[string]int{"503": 5}, PausedUntil: &until, Limiter: full},
			note:  "paused until 12:03:04 by Retry-After",
			line:  "VNC Cloud: answered 503 to 5 of the 5 calls in the last minute (100%); every call paused by Retry-After",
		},
		{
			name:  "a pause that has ended",
			cloud: &apiclient.CloudState{Calls: 5, PausedUntil: &now, Limiter: full},
		},
		{
			name: "paused, slowed, in backoff",
			cloud: &apiclient.CloudState{Calls: 5, ErrorsLastMinute: map[string]int{"503": 4}, InBackoff: 4, NextRetryAt: &retry,
				PausedUntil: &until, Limiter: slowed},
			note: "paused until 12:03:04 by Retry-After; sending 12/s of 40/s: VNC Cloud asked to slow down",
			line: "VNC Cloud: answered 503 to 4 of the 5 calls in the last minute (80%); 4 devices in backoff, the next retry in 20s; " +
				"every call paused by Retry-After; the cluster slowed down at VNC Cloud's request (vncfleet retry --now ends the backoff)",
		},
	} {
		require.Equal(t, c.note, limiterNote(c.cloud, now), c.name)
		require.Equal(t, c.line, cloudLine(c.cloud, now), c.name)
	}

	var seen cloudSeen
	require.Empty(t, seen.summary(now), "nothing seen: no line")
	seen.observe(&apiclient.CloudState{Limiter: full}, now)
	require.Empty(t, seen.summary(now), "full speed throughout: no line")
	seen.observe(&apiclient.CloudState{Limiter: slowed}, now)
	seen.observe(&apiclient.CloudState{Limiter: &apiclient.LimiterState{Rate: 40, Factor: 0.1, Sending: 4, Slowed: 3}}, now)
	seen.observe(&apiclient.CloudState{Limiter: slowed}, now)
	require.Equal(t, []string{"VNC Cloud asked to slow down during the wait: sending 4/s of 40/s at the slowest"}, seen.summary(now))
	seen.observe(&apiclient.CloudState{PausedUntil: &until}, now)
	require.Equal(t, []string{"VNC Cloud asked to slow down during the wait: sending 4/s of 40/s at the slowest; " +
		"every call paused by Retry-After once, the last until 12:03:04"}, seen.summary(now))
	later := now.Add(time.Minute)
	seen.observe(&apiclient.CloudState{PausedUntil: &later}, now.Add(time.Second)) // the same pause, extended
	seen.observe(nil, now.Add(2*time.Minute))
	end := later.Add(2 * time.Minute)
	seen.observe(&apiclient.CloudState{PausedUntil: &end}, later.Add(time.Second))
	require.Equal(t, []string{"VNC Cloud asked to slow down during the wait: sending 4/s of 40/s at the slowest; " +
		"every call paused by Retry-After 2 times, the last until 12:06:00"}, seen.summary(now))
}

// TestWaitSummaryNamesTheCloudsErrors: the final summary of a wait names each error
// status at the worst minute the wait saw (the most such answers), and the calls left
// unanswered, in the live line's words (golden).
func TestWaitSummaryNamesTheCloudsErrors(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 3, 0, 0, time.UTC)
	var seen cloudSeen
	for _, minute := range []*apiclient.CloudState{
		{Calls: 1, ErrorsLastMinute: map[string]int{"503": 1}},
		{Calls: 1030, ErrorsLastMinute: map[string]int{"503": 412, "429": 1}, Unanswered: 3},
		{Calls: 2000, ErrorsLastMinute: map[string]int{"503": 400}},
		{Calls: 900, Unanswered: 1},
		nil,
		{Calls: 10},
	} {
		seen.observe(minute, now)
	}
	require.Equal(t, []string{
		"VNC Cloud answered 429 to 1 of 1030 calls in a minute (0%)",
		"VNC Cloud answered 503 to 412 of 1030 calls in a minute (40%)",
		"VNC Cloud gave no answer to 3 of 1030 calls in a minute (0%): a timeout or a lost connection",
	}, seen.summary(now))

	var one cloudSeen
	one.observe(&apiclient.CloudState{Calls: 1, ErrorsLastMinute: map[string]int{"503": 1}, Unanswered: 1}, now)
	require.Equal(t, []string{
		"VNC Cloud answered 503 to 1 of 1 call in a minute (100%)",
		"VNC Cloud gave no answer to 1 of 1 call in a minute (100%): a timeout or a lost connection",
	}, one.summary(now), "one call is a call")
}

// TestUploadWaitSummaryShowsTheCloud: a real `upload --wait` run ends with the
// cloud's worst minute in its summary, not only in the live lines that scrolled by.
func TestUploadWaitSummaryShowsTheCloud(t *testing.T) {
	fake, srv := newAPIFake(t)
	fake.on("POST /v1/manifests", fakeAnswer{201, map[string]any{"manifest": manifestJSON(7), "plan": testPlan}})
	poll := func(settled int, done bool, calls, errors503 int) fakeAnswer {
		a := progressAnswer(7, settled, 3, done, map[string]int{"pending": 3 - settled, "ready": settled})
		a.body.(map[string]any)["cloud"] = map[string]any{"calls": calls, "errorsLastMinute": map[string]int{"503": errors503}}
		return a
	}
	fake.on("GET /v1/manifests/7", poll(0, false, 20, 2), poll(1, false, 1030, 412), poll(2, false, 600, 0), poll(3, true, 5, 0))
	out, errOut, code := runCLI(t, srv.URL, nil, "upload", "--wait", writeManifest(t, sampleCSV))
	require.Equal(t, exitOK, code, "%s\n%s", out, errOut)
	require.Contains(t, errOut, "VNC Cloud: answered 503 to 412 of the 1030 calls in the last minute (40%)\n", "the live line")
	require.True(t, strings.HasSuffix(out, "manifest #7: 3 devices settled\nSTATUS  DEVICES\nready   3\n"+
		"VNC Cloud answered 503 to 412 of 1030 calls in a minute (40%)\n"), out)
}

// TestUploadWaitShowsTheLimiter: the limiter's state reaches the progress line, the
// cloud's line and the final summary of a real `upload --wait` run, and the line
// stops saying it once the limiter is back at full speed.
func TestUploadWaitShowsTheLimiter(t *testing.T) {
	fake, srv := newAPIFake(t)
	fake.on("POST /v1/manifests", fakeAnswer{201, map[string]any{"manifest": manifestJSON(7), "plan": testPlan}})
	until := time.Now().Add(time.Hour).UTC().Truncate(time.Second)
	cloud := func(limiter map[string]any, paused *time.Time) map[string]any {
		c := map[string]any{"calls": 3, "inBackoff": 0, "limiter": limiter}
		if paused != nil {
			c["pausedUntil"] = paused
		}
		return c
	}
	poll := func(settled int, done bool, c map[string]any) fakeAnswer {
		a := progressAnswer(7, settled, 3, done, map[string]int{"pending": 3 - settled, "ready": settled})
		a.body.(map[string]any)["cloud"] = c
		a.body.(map[string]any)["callsOwed"] = 2 * (3 - settled)
		return a
	}
	slowed := map[string]any{"rate": 40, "factor": 0.1, "sending": 4, "processes": 2, "slowed": 1}
	fake.on("GET /v1/manifests/7",
		poll(0, false, cloud(slowed, &until)),
		poll(1, false, cloud(map[string]any{"rate": 40, "factor": 0.5, "sending": 20, "processes": 2, "slowed": 1}, nil)),
		poll(2, false, cloud(map[string]any{"rate": 40, "factor": 1, "sending": 40, "processes": 2, "slowed": 0}, nil)),
		poll(3, true, nil))
	out, errOut, code := runCLI(t, srv.URL, nil, "upload", "--wait", writeManifest(t, sampleCSV))
	require.Equal(t, exitOK, code, "%s\n%s", out, errOut)
	lines := strings.Split(strings.TrimSpace(errOut), "\n")
	at := clockTime(until, time.Now())
	require.Equal(t, "VNC Cloud: every call paused by Retry-After; the cluster slowed down at VNC Cloud's request", lines[0])
	require.Regexp(t, `^manifest #7 0/3 settled \(0%\) \| pending 3 \| 0\.0/s ETA 1h0m\ds \| paused until `+at+
		` by Retry-After; sending 4/s of 40/s: VNC Cloud asked to slow down \| \ds elapsed$`, lines[1],
		"6 calls at the 4/s the slowed limiter allows, after the pause")
	require.Equal(t, "VNC Cloud: the cluster slowed down at VNC Cloud's request", lines[2], "the pause ended")
	require.NotContains(t, lines[len(lines)-1], "slow down", "back at full speed: the last line says nothing of it")
	cloudLines := 0
	for _, l := range lines {
		if strings.HasPrefix(l, "VNC Cloud: ") {
			cloudLines++
		}
	}
	require.Equal(t, 2, cloudLines, "a line per change, and none once at full speed: %s", errOut)
	require.Contains(t, out, "manifest #7: 3 devices settled\nSTATUS  DEVICES\nready   3\n"+
		"VNC Cloud asked to slow down during the wait: sending 4/s of 40/s at the slowest; every call paused by Retry-After once, the last until "+at+"\n")
}
