package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"

	"github.com/vncfleet/vncfleet/internal/console"
	"github.com/vncfleet/vncfleet/internal/server"
	"github.com/vncfleet/vncfleet/internal/store"
	"github.com/vncfleet/vncfleet/jobs"
)

// benchIngest uploads a generated manifest of rows devices through the HTTP API into
// a fresh database, and loads the same file with psql \copy into a plain table.
func benchIngest(baseURL string, rows int, keep bool) error {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "vncfleet-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "manifest.csv")
	size, err := writeManifest(path, rows)
	if err != nil {
		return err
	}
	fmt.Printf("manifest: %d rows, %.1f MiB\n", rows, float64(size)/(1<<20))

	const name = "vncfleet_bench_ingest"
	url, pool, err := freshDatabase(ctx, baseURL, name)
	if err != nil {
		return err
	}
	if keep {
		defer fmt.Printf("database kept: %s\n", url)
	} else {
		defer dropDatabase(ctx, baseURL, name)
	}
	defer pool.Close()

	// psql \copy of the same file into a plain table of text columns.
	if _, err := pool.Exec(ctx, `CREATE TABLE plain_copy (device_id text, action text, groups text, allow_groups text,
		allow_devices text, state text, location text, serial text)`); err != nil {
		return err
	}
	start := time.Now()
	cmd := exec.Command("psql", url, "-v", "ON_ERROR_STOP=1", "-c", fmt.Sprintf(`\copy plain_copy FROM '%s' CSV HEADER`, path))
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("psql \\copy: %v: %s", err, out)
	}
	copyTime := time.Since(start)

	st := store.New(pool, nil)
	// An insert-only River client: the upload enqueues the apply job as serve's does;
	// the bench then runs that job's batches itself, timed on their own.
	rc, err := river.NewClient(riverpgxv5.New(pool), &river.Config{})
	if err != nil {
		return err
	}
	var applyID int64
	handler := server.New(server.Config{
		Store:          st,
		Tokens:         []server.Token{{Name: "bench", Value: "bench", Roles: []string{server.RoleAdmin}}},
		MaxUploadBytes: 1 << 40,
		EnqueueApply: func(ctx context.Context, tx pgx.Tx, manifestID int64) error {
			applyID = manifestID
			return jobs.EnqueueApply(ctx, rc, tx, manifestID)
		},
	})
	api := httptest.NewServer(handler)
	defer api.Close()
	ingestTime, err := uploadFile(ctx, api.URL, path, http.StatusCreated)
	if err != nil {
		return err
	}
	fmt.Printf("psql \\copy into a plain table: %8.2fs\n", copyTime.Seconds())
	fmt.Printf("vncfleet ingest (HTTP, validated, stored, jobs enqueued): %8.2fs  (%.2f× \\copy, %.0f rows/s)\n",
		ingestTime.Seconds(), ingestTime.Seconds()/copyTime.Seconds(), float64(rows)/ingestTime.Seconds())
	fmt.Printf("peak RSS of the process (server + client + generator): %s\n", peakRSS())

	// What the apply_manifest job then does, batch by batch.
	if applyID != 0 {
		start = time.Now()
		batches := 0
		for done := false; !done; batches++ {
			if done, err = st.ApplyStaged(ctx, applyID, nil); err != nil {
				return err
			}
		}
		applyTime := time.Since(start)
		fmt.Printf("then applied to devices by the apply_manifest job: %8.2fs in %d batches (%.0f rows/s)\n",
			applyTime.Seconds(), batches, float64(rows)/applyTime.Seconds())
	}
	var stored int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM devices`).Scan(&stored); err != nil {
		return err
	}
	fmt.Printf("devices stored: %d\n", stored)
	// The same file again: validated and compared with the million devices it made,
	// then nothing is stored.
	again, err := uploadFile(ctx, api.URL, path, http.StatusOK)
	if err != nil {
		return err
	}
	fmt.Printf("the same manifest uploaded again (compared with the fleet, unchanged): %8.2fs\n", again.Seconds())
	// What the views of a million devices cost: each read once (the first of a run
	// counts the groups and warms the cache), then five times, the median printed.
	if applyID != 0 {
		progress := fmt.Sprintf("/v1/manifests/%d", applyID)
		ui, err := console.New(console.Config{API: handler, Sessions: st})
		if err != nil {
			return err
		}
		uiSrv := httptest.NewServer(ui)
		defer uiSrv.Close()
		client, cookie, err := consoleSignIn(uiSrv.URL, "bench")
		if err != nil {
			return err
		}
		groups := (rows+9)/10 + 1
		for _, read := range []struct {
			what string
			read func() error
		}{
			{"progress read as upload --wait polls it (GET " + progress + "?no_groups=true)", func() error {
				return getJSON(ctx, api.URL+progress+"?no_groups=true")
			}},
			{"  the store's part of it (ManifestProgress without groups)", func() error {
				_, err := st.ManifestProgress(ctx, applyID, nil)
				return err
			}},
			{fmt.Sprintf("progress read with the first 100 of its %d groups (GET %s)", groups, progress), func() error {
				return getJSON(ctx, api.URL+progress)
			}},
			{fmt.Sprintf("  a later page of them (GET %s?groups_after=line-%05d)", progress, groups/2), func() error {
				return getJSON(ctx, api.URL+progress+fmt.Sprintf("?groups_after=line-%05d", groups/2))
			}},
			{"the console's manifest page, signed in (GET /manifests/ID: the progress with its first 100 groups, the failures when some failed, rendered)", func() error {
				return consoleRead(client, cookie, uiSrv.URL+fmt.Sprintf("/manifests/%d", applyID), "text/html")
			}},
			{"the console's progress stream, to its first event (GET /ui/api" + progress + "/events)", func() error {
				return consoleRead(client, cookie, uiSrv.URL+"/ui/api"+progress+"/events", "text/event-stream")
			}},
			{"vncfleet status of the fleet: totals, manifests, group count and the first 100 groups (GET /v1/status?fleet=bench)", func() error {
				return getJSON(ctx, api.URL+"/v1/status?fleet=bench")
			}},
			{"  the store's part of it (Status)", func() error {
				_, err := st.Status(ctx, "bench")
				return err
			}},
			{"devices by fleet and status, as a metrics scrape reads them (FleetStatusCounts)", func() error {
				_, err := st.FleetStatusCounts(ctx)
				return err
			}},
		} {
			first, took, err := firstThenMedian(read.read)
			if err != nil {
				return fmt.Errorf("%s: %w", read.what, err)
			}
			fmt.Printf("%s: first %.1f ms, then %.1f ms\n", read.what, float64(first.Microseconds())/1000, float64(took.Microseconds())/1000)
		}
	}
	return nil
}

// writeManifest generates a factory manifest: lines of 10 devices, 4 connect viewers
// in the line's group and 6 listen servers allowing the line and one viewer.
func writeManifest(path string, rows int) (int64, error) {
	f, err := os.Create(path)
	if err != nil {
		return 0, err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	fmt.Fprintln(w, "device_id,action,groups,allow_groups,allow_devices,state,location,serial")
	for i := 0; i < rows; i++ {
		line, k := i/10, i%10
		if k < 4 {
			fmt.Fprintf(w, "dev-%07d,connect,line-%05d;ops,,,present,plant-%d,SN%09d\n", i, line, line%7, i)
		} else {
			fmt.Fprintf(w, "dev-%07d,listen,,line-%05d,dev-%07d,,plant-%d,SN%09d\n", i, line, line*10+(k%4), line%7, i)
		}
	}
	if err := w.Flush(); err != nil {
		return 0, err
	}
	info, err := f.Stat()
	if err != nil {
		return 0, err
	}
	return info.Size(), f.Close()
}

// uploadFile posts the manifest at path to the API at base and checks the answer's
// status; it returns how long the upload took.
func uploadFile(ctx context.Context, base, path string, want int) (time.Duration, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/v1/manifests?fleet=bench", bufio.NewReaderSize(f, 1<<16))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer bench")
	req.Header.Set("Content-Type", "text/csv")
	start := time.Now()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	_ = resp.Body.Close()
	took := time.Since(start)
	if resp.StatusCode != want {
		return 0, fmt.Errorf("upload answered %s, not %d", resp.Status, want)
	}
	return took, nil
}

// firstThenMedian runs f once, then five times: how long the first run took (it
// fills caches) and the median of the others.
func firstThenMedian(f func() error) (first, median time.Duration, err error) {
	if first, err = medianOf(1, f); err != nil {
		return 0, 0, err
	}
	median, err = medianOf(5, f)
	return first, median, err
}

// consoleRead asks the console for a page or a stream with the session cookie and
// reads it: a page to its end, a stream to the end of its first event.
func consoleRead(client *http.Client, cookie *http.Cookie, url, contentType string) error {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	req.AddCookie(cookie)
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), contentType) {
		return fmt.Errorf("GET %s: HTTP %d, %s", url, resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	if contentType != "text/event-stream" {
		_, err = io.Copy(io.Discard, resp.Body)
		return err
	}
	lines := bufio.NewScanner(resp.Body)
	lines.Buffer(make([]byte, 1<<20), 1<<24)
	for lines.Scan() {
		if strings.HasPrefix(lines.Text(), "data: ") {
			return nil
		}
	}
	return fmt.Errorf("GET %s: the stream ended before its first event: %v", url, lines.Err())
}

// medianOf runs f n times and returns the median time it took.
func medianOf(n int, f func() error) (time.Duration, error) {
	times := make([]time.Duration, n)
	for i := range times {
		start := time.Now()
		if err := f(); err != nil {
			return 0, err
		}
		times[i] = time.Since(start)
	}
	slices.Sort(times)
	return times[n/2], nil
}

// getJSON reads an answer of the API at url to its end.
func getJSON(ctx context.Context, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer bench")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var v any
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return nil
}
