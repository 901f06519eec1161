package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/vncfleet/vncfleet/internal/secretbox"
	"github.com/vncfleet/vncfleet/internal/server"
	"github.com/vncfleet/vncfleet/internal/sim"
	"github.com/vncfleet/vncfleet/internal/store"
	"github.com/vncfleet/vncfleet/vnccloud"
)

// The million-device views (issue 12): one fleet of devices provisioned and ready,
// laid out as the factory manifest of bench ingest (lines of 10 devices, a group
// per line: 100,001 groups at 1M), each with a cloud address and a sealed password.
// Each view is timed against a baseline of the same run:
//
//   - status: GET /v1/status of the fleet, against the 100 ms of the issue;
//   - export: GET /v1/export with and without secrets, against psql \copy (SELECT ...)
//     TO STDOUT of the same columns (the sealed password as stored);
//   - reconcile: a dry run of `vncfleet serve` (a process of its own) listing every
//     address from a simulator process holding them all, against the 200 MB of the
//     issue: serve's peak RSS.

const (
	simKey    = "bench-key"
	simSecret = "bench-secret"
)

func benchViews(baseURL string, devices int, reconcile, keep bool) error {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "vncfleet-bench-views-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	const name = "vncfleet_bench_views"
	dbURL, pool, err := freshDatabase(ctx, baseURL, name)
	if err != nil {
		return err
	}
	if keep {
		defer fmt.Printf("database kept: %s\n", dbURL)
	} else {
		defer dropDatabase(ctx, baseURL, name)
	}
	defer pool.Close()

	key := make([]byte, secretbox.KeySize)
	_, _ = rand.Read(key)
	keys, err := secretbox.NewKeyring(key)
	if err != nil {
		return err
	}

	// The addresses: from a simulator process when reconciliation is measured (it
	// must hold them), made up otherwise.
	var addrs []string
	var simURL string
	if reconcile {
		simProc, url, list, err := startSimHelper(ctx, dir, devices)
		if err != nil {
			return err
		}
		defer func() { _ = simProc.Process.Kill(); _ = simProc.Wait() }()
		simURL, addrs = url, list
	} else {
		addrs = make([]string, devices)
		for i := range addrs {
			addrs[i] = fmt.Sprintf("bench%014d.%s", i, strings.Repeat("x", 60))
		}
	}
	start := time.Now()
	if err := writeFleet(ctx, pool, keys, addrs); err != nil {
		return err
	}
	fmt.Printf("%d ready devices in one fleet, %d groups, written in %s\n", devices, (devices+9)/10+1, time.Since(start).Round(time.Millisecond))

	st := store.New(pool, keys)
	api := httptest.NewServer(server.New(server.Config{
		Store:  st,
		Tokens: []server.Token{{Name: "bench", Value: "bench", Roles: []string{server.RoleAdmin, server.RoleSecrets}}},
	}))
	defer api.Close()

	// status: the first read (which counts the groups), then the median of five
	for _, q := range []string{"fleet=bench", "fleet=bench&groups=20", "fleet=bench&groups=20&groups_after=line-50000", "fleet=bench&group=line-04242"} {
		first, took, err := firstThenMedian(func() error { return getJSON(ctx, api.URL+"/v1/status?"+q) })
		if err != nil {
			return err
		}
		fmt.Printf("status (GET /v1/status?%s): first %.1f ms, then %.1f ms (%.2f× the 100 ms target)\n", q,
			float64(first.Microseconds())/1000, float64(took.Microseconds())/1000, took.Seconds()/0.1)
	}

	// export, against psql \copy of the same columns: alternating, twice, as the
	// machine's load moves between them.
	for round := 1; round <= 2; round++ {
		copyTime, copyBytes, err := timePsqlCopy(dbURL)
		if err != nil {
			return err
		}
		fmt.Printf("round %d: psql \\copy (SELECT the export's columns) TO STDOUT: %.2fs, %.1f MiB\n", round, copyTime.Seconds(), float64(copyBytes)/(1<<20))
		for _, q := range []string{"fleet=bench", "fleet=bench&secrets=true"} {
			took, size, err := timeGet(ctx, api.URL+"/v1/export?"+q)
			if err != nil {
				return err
			}
			fmt.Printf("round %d: export (GET /v1/export?%s): %.2fs, %.1f MiB: %.0f%% of the speed of \\copy (target ≥ 50%%)\n",
				round, q, took.Seconds(), float64(size)/(1<<20), 100*copyTime.Seconds()/took.Seconds())
		}
	}

	if reconcile {
		if err := benchReconcileRSS(ctx, dir, dbURL, simURL, key); err != nil {
			return err
		}
	}
	return nil
}

// writeFleet stores one fleet "bench" of len(addrs) ready devices with one COPY, as
// the factory manifest of writeManifest lays them out, each password sealed as the
// store seals it (bound to the device's id).
func writeFleet(ctx context.Context, pool *pgxpool.Pool, keys *secretbox.Keyring, addrs []string) error {
	if _, err := pool.Exec(ctx, `INSERT INTO fleets (id, name) VALUES (1, 'bench')`); err != nil {
		return err
	}
	if _, err := pool.Exec(ctx, `INSERT INTO manifests (id, fleet_id, sha256, uploader, mode, row_count, creates)
		VALUES (1, 1, '\x00', 'bench', 'merge', $1, $1)`, len(addrs)); err != nil {
		return err
	}
	now := time.Now()
	i := 0
	src := pgx.CopyFromFunc(func() ([]any, error) {
		if i == len(addrs) {
			return nil, nil
		}
		id := int64(i + 1)
		line, k := i/10, i%10
		var action string
		var groups, allowGroups, allowDevices []string
		if k < 4 {
			action, groups = "connect", []string{fmt.Sprintf("line-%05d", line), "ops"}
		} else {
			action, allowGroups, allowDevices = "listen", []string{fmt.Sprintf("line-%05d", line)}, []string{fmt.Sprintf("dev-%07d", line*10+k%4)}
		}
		ct, keyID, err := keys.Seal([]byte("pw-"+strconv.Itoa(i)), []byte("vncfleet/device/"+strconv.FormatInt(id, 10)))
		if err != nil {
			return nil, err
		}
		deviceID := fmt.Sprintf("dev-%07d", i)
		sum := sha256.Sum256([]byte(deviceID))
		row := []any{id, int64(1), deviceID, action, groups, allowGroups, allowDevices, sum[:], int64(1), int32(i + 2),
			"ready", addrs[i], ct, keyID, now, now, int32(1), int32(1)}
		i++
		return row, nil
	})
	if _, err := pool.CopyFrom(ctx, pgx.Identifier{"devices"}, []string{"id", "fleet_id", "device_id", "action", "groups",
		"allow_groups", "allow_devices", "spec_hash", "manifest_id", "line", "status", "cloud_address", "password_ct",
		"password_key_id", "password_set_at", "ready_at", "spec_version", "applied_version"}, src); err != nil {
		return fmt.Errorf("copy devices: %w", err)
	}
	if _, err := pool.Exec(ctx, `SELECT setval('devices_id_seq', $1)`, len(addrs)); err != nil {
		return err
	}
	_, err := pool.Exec(ctx, `VACUUM ANALYZE`)
	return err
}

// exportColumnsSQL is the baseline's query: the export's columns as stored.
const exportColumnsSQL = `SELECT d.device_id, d.action, d.status, d.cloud_address, d.password_ct, d.groups, d.allow_groups,
	d.allow_devices, d.vnc_url_ct, d.last_error FROM devices d WHERE d.fleet_id = 1 ORDER BY d.device_id`

// timePsqlCopy times psql \copy of the export's columns to stdout, read to its end.
func timePsqlCopy(dbURL string) (time.Duration, int64, error) {
	cmd := exec.Command("psql", dbURL, "-v", "ON_ERROR_STOP=1", "-c", `\copy (`+exportColumnsSQL+`) TO STDOUT CSV HEADER`)
	out, err := cmd.StdoutPipe()
	if err != nil {
		return 0, 0, err
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return 0, 0, err
	}
	n, err := io.Copy(io.Discard, out)
	if werr := cmd.Wait(); werr != nil {
		return 0, 0, fmt.Errorf("psql \\copy: %w", werr)
	}
	return time.Since(start), n, err
}

// timeGet times a GET of the API read to its end.
func timeGet(ctx context.Context, url string) (time.Duration, int64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, 0, err
	}
	req.Header.Set("Authorization", "Bearer bench")
	start := time.Now()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	n, err := io.Copy(io.Discard, resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return time.Since(start), n, err
}

// startSimHelper starts this program as `simhelper` (a simulator process of its own
// holding n addresses) and returns it, its URL and the addresses, in creation order.
func startSimHelper(ctx context.Context, dir string, n int) (*exec.Cmd, string, []string, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, "", nil, err
	}
	list := filepath.Join(dir, "addresses.txt")
	cmd := exec.CommandContext(ctx, self, "simhelper", "--addresses", strconv.Itoa(n), "--list", list)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, "", nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, "", nil, err
	}
	// The helper prints its URL once the addresses are made and listed to the file.
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		_ = cmd.Process.Kill()
		return nil, "", nil, fmt.Errorf("simhelper: %w", err)
	}
	data, err := os.ReadFile(list)
	if err != nil {
		_ = cmd.Process.Kill()
		return nil, "", nil, err
	}
	return cmd, strings.TrimSpace(line), strings.Fields(string(data)), nil
}

// simHelper is the simulator process of the reconcile view: n addresses, made with
// the specs of writeFleet's devices, written one a line to list; then it prints its
// URL and serves until killed.
func simHelper(n int, list string) error {
	s, err := sim.New(sim.Config{Accounts: []sim.Account{{Key: simKey, Secret: simSecret}}})
	if err != nil {
		return err
	}
	f, err := os.Create(list)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	for i := 0; i < n; i++ {
		line, k := i/10, i%10
		spec := vnccloud.Spec{Action: vnccloud.ActionConnect, Groups: []string{fmt.Sprintf("line-%05d", line), "ops"}}
		if k >= 4 {
			spec = vnccloud.Spec{Action: vnccloud.ActionListen, AccessControl: &vnccloud.AccessControl{
				Groups: []string{fmt.Sprintf("line-%05d", line)}}}
		}
		addr, _, err := s.CreateAddress(simKey, spec)
		if err != nil {
			return err
		}
		fmt.Fprintln(w, addr)
	}
	if err := w.Flush(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	fmt.Println("http://" + ln.Addr().String())
	return http.Serve(ln, s.Handler())
}

// benchReconcileRSS builds vncfleet, starts `serve` on the database and the
// simulator, runs `vncfleet reconcile --dry-run` against it, and prints serve's peak
// RSS before and after.
func benchReconcileRSS(ctx context.Context, dir, dbURL, simURL string, key []byte) error {
	bin := filepath.Join(dir, "vncfleet")
	if out, err := exec.Command("go", "build", "-o", bin, "./cmd/vncfleet").CombinedOutput(); err != nil {
		return fmt.Errorf("go build: %v: %s", err, out)
	}
	listen, err := freePort()
	if err != nil {
		return err
	}
	env := append(os.Environ(),
		"DATABASE_URL="+dbURL,
		"VNCFLEET_SECRET_KEY="+base64.StdEncoding.EncodeToString(key),
		"VNCFLEET_TOKEN=bench-admin",
		"VNCCLOUD_API_URL="+simURL+"/cloud/1.1",
		"VNCCLOUD_API_KEY="+simKey,
		"VNCCLOUD_API_SECRET="+simSecret,
		"VNCCLOUD_RATE=100000",
		"VNCFLEET_LISTEN="+listen,
		"VNCFLEET_URL=http://"+listen,
		"VNCFLEET_LOG_LEVEL=warn",
	)
	serve := exec.CommandContext(ctx, bin, "serve")
	serve.Env = env
	serve.Stderr = os.Stderr
	if err := serve.Start(); err != nil {
		return err
	}
	defer func() { _ = serve.Process.Signal(os.Interrupt); _ = serve.Wait() }()
	if err := waitHealthy(ctx, "http://"+listen+"/healthz"); err != nil {
		return err
	}
	before := procRSS(serve.Process.Pid)
	rec := exec.CommandContext(ctx, bin, "reconcile", "--dry-run", "--json")
	rec.Env = env
	start := time.Now()
	out, err := rec.Output()
	took := time.Since(start)
	if err != nil {
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
			return fmt.Errorf("reconcile: %v: %s", err, out)
		}
	}
	var listed int
	if i := strings.Index(string(out), `"listed": `); i >= 0 {
		listed, _ = strconv.Atoi(strings.TrimRight(strings.Fields(string(out)[i+len(`"listed": `):])[0], ","))
	}
	after := procRSS(serve.Process.Pid)
	fmt.Printf("reconcile --dry-run listing %d addresses: %.1fs; serve's peak RSS %s before, %s after (target < 200 MB)\n",
		listed, took.Seconds(), before, after)
	return nil
}

func freePort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

func waitHealthy(ctx context.Context, url string) error {
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("%s: not healthy after 2 minutes", url)
}

// procRSS is a process's peak resident set size, from /proc/PID/status.
func procRSS(pid int) string {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return "unknown"
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}
