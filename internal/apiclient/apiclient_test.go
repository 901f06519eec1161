package apiclient_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/vncfleet/vncfleet/internal/apiclient"
)

const token = "s3cret-token-value"

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// fakeAPI answers like docs/http-api.md: the answer of an upload is chosen by the
// manifest's first line, so that one handler covers every documented case.
func fakeAPI(t *testing.T) *httptest.Server {
	t.Helper()
	manifest := map[string]any{"id": 7, "fleet": "f", "mode": "merge", "rows": 2, "sha256": "ab", "uploader": "admin", "uploadedAt": "2025-01-02T03:04:05Z"}
	plan := map[string]any{"creates": 2, "updates": 1, "deletes": 1, "unchanged": 0, "createIds": []string{"a", "b"},
		"updateList": []any{map[string]any{"deviceId": "c", "fields": []string{"groups"}}}, "deleteIds": []string{"d"}}
	mux := http.NewServeMux()
	auth := func(role string, h http.HandlerFunc) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			switch r.Header.Get("Authorization") {
			case "Bearer " + token:
				h(w, r)
			case "Bearer reader":
				if role != "read" {
					writeJSON(w, 403, map[string]any{"error": "token reader lacks the " + role + " role"})
					return
				}
				h(w, r)
			default:
				writeJSON(w, 401, map[string]any{"error": "unknown token"})
			}
		}
	}
	mux.HandleFunc("POST /v1/manifests", auth("upload", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		if m := q.Get("mode"); m != "" && m != "merge" && m != "replace" {
			writeJSON(w, 400, map[string]any{"error": "mode must be merge or replace"})
			return
		}
		if r.ContentLength > 1000 {
			writeJSON(w, 413, map[string]any{"error": "manifest larger than 1000 bytes"})
			return
		}
		first, _ := bufio.NewReader(r.Body).ReadString('\n')
		switch {
		case q.Get("dry_run") == "true":
			writeJSON(w, 200, map[string]any{"dryRun": true, "plan": plan})
		case strings.HasPrefix(first, "invalid"):
			writeJSON(w, 422, map[string]any{"error": "manifest rejected: 1500 problems", "total": 1500,
				"problems": []string{"line 2, column 2 (action): must be connect or listen", "line 3, column 1 (device_id): empty"}})
		case strings.HasPrefix(first, "guard"):
			writeJSON(w, 409, map[string]any{"error": "replace would delete 3 devices", "plan": plan, "maxDeletions": 1})
		case strings.HasPrefix(first, "same"):
			writeJSON(w, 200, map[string]any{"manifest": manifest, "plan": map[string]any{"unchanged": 2}, "unchanged": true})
		case strings.HasPrefix(first, "broken"):
			writeJSON(w, 503, map[string]any{"error": "database unavailable"})
		case strings.HasPrefix(first, "crash"):
			writeJSON(w, 500, map[string]any{"error": "internal error"})
		default:
			if q.Get("fleet") != "f" || q.Get("max_deletions") != "" {
				writeJSON(w, 400, map[string]any{"error": "unexpected query " + r.URL.RawQuery})
				return
			}
			writeJSON(w, 201, map[string]any{"manifest": manifest, "plan": plan})
		}
	}))
	mux.HandleFunc("GET /v1/manifests/{id}", auth("read", func(w http.ResponseWriter, r *http.Request) {
		if r.PathValue("id") != "7" {
			writeJSON(w, 404, map[string]any{"error": "no manifest " + r.PathValue("id")})
			return
		}
		writeJSON(w, 200, map[string]any{"manifest": manifest, "total": 3, "settled": 2, "done": false, "failed": 1,
			"byStatus": map[string]int{"ready": 1, "failed": 1, "creating": 1}, "byGroup": map[string]any{"g": map[string]int{"ready": 1}}})
	}))
	mux.HandleFunc("GET /v1/manifests/{id}/report", auth("read", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/csv")
		fmt.Fprint(w, "device_id,status,cloud_address,error\na,ready,addr-a,\nb,failed,,\"quota, exceeded\"\n")
	}))
	mux.HandleFunc("GET /v1/status", auth("read", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, map[string]any{"total": 5, "byStatus": map[string]int{"ready": 5}, "byGroup": map[string]any{},
			"byManifest": []any{map[string]any{"manifest": 7, "fleet": r.URL.Query().Get("fleet"), "byStatus": map[string]int{"ready": 5}}}})
	}))
	mux.HandleFunc("GET /v1/export", auth("read", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("secrets") == "true" {
			writeJSON(w, 403, map[string]any{"error": "token reader lacks the secrets role"})
			return
		}
		fmt.Fprintf(w, "device_id,action\nx-%s,connect\n", r.URL.Query().Get("fleet"))
	}))
	mux.HandleFunc("POST /v1/retry", auth("upload", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, map[string]any{"retried": 4, "note": r.URL.Query().Get("manifest")})
	}))
	mux.HandleFunc("POST /v1/rotate", auth("upload", func(w http.ResponseWriter, r *http.Request) {
		n := 2
		if r.URL.Query().Get("all") == "true" {
			n = 9
		}
		writeJSON(w, 200, map[string]any{"scheduled": n, "key": "rotate-1"})
	}))
	mux.HandleFunc("GET /v1/work/{key}", auth("read", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, map[string]any{"total": 9, "settled": 9, "done": true, "byStatus": map[string]int{"ready": 9}, "key": r.PathValue("key")})
	}))
	mux.HandleFunc("POST /v1/reconcile", auth("upload", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, map[string]any{"dryRun": r.URL.Query().Get("dry_run") == "true", "vanished": []string{"v1"}})
	}))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

func newClient(t *testing.T, url, tok string) *apiclient.Client {
	t.Helper()
	c, err := apiclient.New(url, tok)
	require.NoError(t, err)
	return c
}

func TestUploadAnswers(t *testing.T) {
	t.Parallel()
	srv := fakeAPI(t)
	c := newClient(t, srv.URL, token)
	tests := []struct {
		name        string
		body        string
		opts        apiclient.UploadOptions
		check       func(t *testing.T, res *apiclient.UploadResult)
		status      int
		unreachable bool
		checkErr    func(t *testing.T, e *apiclient.Error)
	}{
		{name: "201 stored", body: "device_id,action\n", opts: apiclient.UploadOptions{Fleet: "f", MaxDeletions: -1},
			check: func(t *testing.T, res *apiclient.UploadResult) {
				require.False(t, res.Unchanged)
				require.False(t, res.DryRun)
				require.Equal(t, int64(7), res.Manifest.ID)
				require.Equal(t, time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC), res.Manifest.UploadedAt.UTC())
				require.Equal(t, 2, res.Plan.Creates)
				require.Equal(t, []string{"a", "b"}, res.Plan.CreateIDs)
				require.Equal(t, []apiclient.PlanUpdate{{DeviceID: "c", Fields: []string{"groups"}}}, res.Plan.UpdateList)
				require.Equal(t, []string{"d"}, res.Plan.DeleteIDs)
			}},
		{name: "200 unchanged", body: "same\n", opts: apiclient.UploadOptions{MaxDeletions: -1},
			check: func(t *testing.T, res *apiclient.UploadResult) {
				require.True(t, res.Unchanged)
				require.Equal(t, int64(7), res.Manifest.ID)
				require.Equal(t, 2, res.Plan.Unchanged)
			}},
		{name: "200 dry run", body: "guard\n", opts: apiclient.UploadOptions{DryRun: true, Mode: "replace", MaxDeletions: -1},
			check: func(t *testing.T, res *apiclient.UploadResult) {
				require.True(t, res.DryRun)
				require.Nil(t, res.Manifest)
				require.Equal(t, 1, res.Plan.Deletes)
			}},
		{name: "422 problems", body: "invalid\n", opts: apiclient.UploadOptions{MaxDeletions: -1}, status: 422,
			checkErr: func(t *testing.T, e *apiclient.Error) {
				require.Equal(t, 1500, e.Total)
				require.Len(t, e.Problems, 2)
				require.Equal(t, "line 2, column 2 (action): must be connect or listen", e.Problems[0])
				require.Equal(t, "manifest rejected: 1500 problems", e.Message)
			}},
		{name: "409 replace guard", body: "guard\n", opts: apiclient.UploadOptions{Mode: "replace", MaxDeletions: -1}, status: 409,
			checkErr: func(t *testing.T, e *apiclient.Error) {
				require.Equal(t, 1, e.MaxDeletions)
				require.NotNil(t, e.Plan)
				require.Equal(t, []string{"d"}, e.Plan.DeleteIDs)
				require.Equal(t, 1, e.Plan.MaxDeletions, "the limit is carried onto the plan")
			}},
		{name: "413 too large", body: strings.Repeat("x", 2000), opts: apiclient.UploadOptions{MaxDeletions: -1, ContentLength: 2000}, status: 413,
			checkErr: func(t *testing.T, e *apiclient.Error) { require.Contains(t, e.Message, "larger than") }},
		{name: "413 before a large body is sent", body: strings.Repeat("y", 32<<20), opts: apiclient.UploadOptions{MaxDeletions: -1, ContentLength: 32 << 20}, status: 413},
		{name: "400 bad query", body: "x\n", opts: apiclient.UploadOptions{Mode: "sideways", MaxDeletions: -1}, status: 400},
		{name: "max_deletions 0 is sent", body: "x\n", opts: apiclient.UploadOptions{Fleet: "f", MaxDeletions: 0}, status: 400,
			checkErr: func(t *testing.T, e *apiclient.Error) { require.Contains(t, e.Message, "max_deletions=0") }},
		{name: "503 is unreachable", body: "broken\n", opts: apiclient.UploadOptions{MaxDeletions: -1}, status: 503, unreachable: true},
		{name: "500 is an answer", body: "crash\n", opts: apiclient.UploadOptions{MaxDeletions: -1}, status: 500},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			res, err := c.Upload(context.Background(), strings.NewReader(tt.body), tt.opts)
			if tt.status == 0 {
				require.NoError(t, err)
				tt.check(t, res)
				return
			}
			require.Error(t, err)
			require.Nil(t, res)
			require.Equal(t, tt.status, apiclient.StatusOf(err), "%v", err)
			require.Equal(t, tt.unreachable, apiclient.IsUnreachable(err))
			var e *apiclient.Error
			require.True(t, errors.As(err, &e))
			if tt.checkErr != nil {
				tt.checkErr(t, e)
			}
		})
	}
}

func TestAuthErrors(t *testing.T) {
	t.Parallel()
	srv := fakeAPI(t)
	tests := []struct {
		name   string
		token  string
		call   func(c *apiclient.Client) error
		status int
	}{
		{"no token", "", func(c *apiclient.Client) error { _, err := c.Status(context.Background(), ""); return err }, 401},
		{"unknown token", "nope", func(c *apiclient.Client) error {
			_, err := c.Manifest(context.Background(), 7, apiclient.GroupOptions{})
			return err
		}, 401},
		{"read token uploads", "reader", func(c *apiclient.Client) error {
			_, err := c.Upload(context.Background(), strings.NewReader("x"), apiclient.UploadOptions{MaxDeletions: -1})
			return err
		}, 403},
		{"read token rotates", "reader", func(c *apiclient.Client) error { _, err := c.Rotate(context.Background(), "", true); return err }, 403},
		{"read token reads", "reader", func(c *apiclient.Client) error {
			_, err := c.Manifest(context.Background(), 7, apiclient.GroupOptions{})
			return err
		}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := tt.call(newClient(t, srv.URL, tt.token))
			require.Equal(t, tt.status, apiclient.StatusOf(err), "%v", err)
			require.False(t, apiclient.IsUnreachable(err))
			if err != nil {
				require.NotContains(t, err.Error(), token)
			}
		})
	}
}

func TestReadCalls(t *testing.T) {
	t.Parallel()
	srv := fakeAPI(t)
	c := newClient(t, srv.URL+"/", token) // a trailing slash is harmless
	ctx := context.Background()

	p, err := c.Manifest(ctx, 7, apiclient.GroupOptions{})
	require.NoError(t, err)
	require.Equal(t, 3, p.Total)
	require.Equal(t, 2, p.Settled)
	require.Equal(t, 1, p.Failed)
	require.False(t, p.Done)
	require.Equal(t, map[string]int{"ready": 1, "failed": 1, "creating": 1}, p.ByStatus)
	require.Equal(t, map[string]int{"ready": 1}, p.ByGroup["g"])
	require.Equal(t, "f", p.Manifest.Fleet)

	_, err = c.Manifest(ctx, 8, apiclient.GroupOptions{})
	require.Equal(t, 404, apiclient.StatusOf(err))

	var report bytes.Buffer
	require.NoError(t, c.Report(ctx, 7, &report))
	require.Equal(t, "device_id,status,cloud_address,error\na,ready,addr-a,\nb,failed,,\"quota, exceeded\"\n", report.String())

	st, err := c.Status(ctx, "north")
	require.NoError(t, err)
	require.Equal(t, 5, st.Total)
	require.Equal(t, []apiclient.ManifestCounts{{Manifest: 7, Fleet: "north", ByStatus: map[string]int{"ready": 5}}}, st.ByManifest)

	var export bytes.Buffer
	require.NoError(t, c.Export(ctx, "north", false, &export))
	require.Equal(t, "device_id,action\nx-north,connect\n", export.String())
	export.Reset()
	err = c.Export(ctx, "north", true, &export)
	require.Equal(t, 403, apiclient.StatusOf(err))
	require.Zero(t, export.Len(), "an error answer is not written as CSV")

	rr, err := c.Retry(ctx, "", 7)
	require.NoError(t, err)
	require.Equal(t, 4, rr.Retried)

	rot, err := c.Rotate(ctx, "north", true)
	require.NoError(t, err)
	require.Equal(t, apiclient.RotateResult{Scheduled: 9, Key: "rotate-1"}, *rot)
	rot, err = c.Rotate(ctx, "", false)
	require.NoError(t, err)
	require.Equal(t, 2, rot.Scheduled)

	wp, err := c.WorkProgress(ctx, rot.Key)
	require.NoError(t, err)
	require.True(t, wp.Done)
	require.Equal(t, 9, wp.Settled)

	raw, err := c.Reconcile(ctx, true)
	require.NoError(t, err)
	require.JSONEq(t, `{"dryRun": true, "vanished": ["v1"]}`, string(raw))
}

func TestUnreachable(t *testing.T) {
	t.Parallel()
	// A port that was just free: nothing listens there.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	c := newClient(t, "http://"+addr, token)

	_, err = c.Status(context.Background(), "")
	require.Error(t, err)
	require.True(t, apiclient.IsUnreachable(err), "%v", err)
	require.Zero(t, apiclient.StatusOf(err), "no answer, so no status")
	require.Contains(t, err.Error(), addr)
	require.NotContains(t, err.Error(), token)

	_, err = c.Upload(context.Background(), strings.NewReader("device_id,action\n"), apiclient.UploadOptions{MaxDeletions: -1})
	require.True(t, apiclient.IsUnreachable(err), "%v", err)

	// The caller's own cancellation is not the server's fault.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = c.Status(ctx, "")
	require.ErrorIs(t, err, context.Canceled)
	require.False(t, apiclient.IsUnreachable(err))
}

func TestNewRejectsBadURLs(t *testing.T) {
	t.Parallel()
	for _, u := range []string{"127.0.0.1:8080", "ftp://host", "http://", "://x"} {
		_, err := apiclient.New(u, token)
		require.Error(t, err, u)
		require.NotContains(t, err.Error(), token)
	}
	c, err := apiclient.New("", token)
	require.NoError(t, err)
	require.Equal(t, "vncfleet server "+apiclient.DefaultURL, c.String())
}

// TestUploadStreams sends a 64 MiB manifest through an io.Pipe. The writer stops
// after its first megabyte until the server has received bytes: a client that read
// the body into memory before sending would never get there, and the test would
// time out instead of passing.
func TestUploadStreams(t *testing.T) {
	t.Parallel()
	const total = 64 << 20
	gotFirst := make(chan struct{})
	type result struct {
		n, contentLength int64
		sum              [32]byte
	}
	received := make(chan result, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := sha256.New()
		buf := make([]byte, 32<<10)
		var n int64
		signalled := false
		for {
			k, err := r.Body.Read(buf)
			h.Write(buf[:k])
			n += int64(k)
			if n > 0 && !signalled {
				close(gotFirst)
				signalled = true
			}
			if err != nil {
				break
			}
		}
		var sum [32]byte
		copy(sum[:], h.Sum(nil))
		received <- result{n, r.ContentLength, sum}
		writeJSON(w, 201, map[string]any{"manifest": map[string]any{"id": 1}, "plan": map[string]any{"creates": 1}})
	}))
	t.Cleanup(srv.Close)

	pr, pw := io.Pipe()
	want := sha256.New()
	go func() {
		// 1024 rows of 43 bytes per write: a generator's pace, not a byte at a time.
		block := bytes.Repeat([]byte("device-000000000000,connect,line-1;line-2\n"), 1024)
		written := 0
		for written < total {
			if written >= 1<<20 && written < (1<<20)+len(block) {
				select {
				case <-gotFirst:
				case <-time.After(20 * time.Second):
					pw.CloseWithError(errors.New("the server saw nothing after 1 MiB: the body is being buffered"))
					return
				}
			}
			chunk := block
			if rest := total - written; rest < len(chunk) {
				chunk = chunk[:rest]
			}
			want.Write(chunk)
			if _, err := pw.Write(chunk); err != nil {
				return
			}
			written += len(chunk)
		}
		pw.Close()
	}()
	c := newClient(t, srv.URL, token)
	res, err := c.Upload(context.Background(), pr, apiclient.UploadOptions{MaxDeletions: -1})
	require.NoError(t, err)
	require.Equal(t, int64(1), res.Manifest.ID)
	got := <-received
	require.Equal(t, int64(total), got.n)
	require.Equal(t, int64(-1), got.contentLength, "an unknown length is sent chunked")
	var wantSum [32]byte
	copy(wantSum[:], want.Sum(nil))
	require.Equal(t, wantSum, got.sum)
}
