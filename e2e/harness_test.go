// Package e2e tests vncfleet as its users run it: the real binary, real processes
// (simulator, several `serve` workers), a real PostgreSQL database per test, and the
// CLI over HTTP. Truth is read from the simulator's inspection endpoint.
package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/vncfleet/vncfleet/internal/dbtest"
	"github.com/vncfleet/vncfleet/internal/syncbuf"
)

var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "vncfleet-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "vncfleet")
	build := exec.Command("go", "build", "-o", binary, "../cmd/vncfleet")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build vncfleet:", err)
		os.Exit(1)
	}
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

const (
	apiKey    = "e2e-key"
	apiSecret = "e2e-secret-value"
	adminTok  = "e2e-admin-token"
)

// freeAddr finds a loopback port nobody listens on.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	return addr
}

// proc is a running vncfleet process whose output is kept for failure reports.
type proc struct {
	name string
	cmd  *exec.Cmd
	out  *syncbuf.Buffer
	done chan struct{}
	err  error
}

func start(t *testing.T, name string, env []string, args ...string) *proc {
	t.Helper()
	p := &proc{name: name, out: &syncbuf.Buffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(binary, args...)
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	require.NoError(t, p.cmd.Start())
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			t.Logf("--- output of %s ---\n%s", p.name, tail(p.out.String(), 4000))
		}
	})
	return p
}

func (p *proc) kill() {
	select {
	case <-p.done:
	default:
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// terminate sends SIGTERM and waits for the exit code.
func (p *proc) terminate(t *testing.T, within time.Duration) int {
	t.Helper()
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
	select {
	case <-p.done:
	case <-time.After(within):
		t.Fatalf("%s did not exit within %s of SIGTERM", p.name, within)
	}
	var exitErr *exec.ExitError
	if errors.As(p.err, &exitErr) {
		return exitErr.ExitCode()
	}
	require.NoError(t, p.err)
	return 0
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}

func waitHealthy(t *testing.T, p *proc, url string) {
	t.Helper()
	waitHealthyWith(t, p, url, http.DefaultClient)
}

// waitHealthyWith is waitHealthy through client (one that trusts a test CA, say).
func waitHealthyWith(t *testing.T, p *proc, url string, client *http.Client) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-p.done:
			t.Fatalf("%s exited during start-up: %v\n%s", p.name, p.err, p.out.String())
		default:
		}
		resp, err := client.Get(url + "/healthz")
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s not healthy at %s", p.name, url)
}

// cluster is a simulator, a database and the serve processes sharing it.
type cluster struct {
	t       *testing.T
	dbURL   string
	simURL  string
	sim     *proc
	env     []string
	serves  []*proc
	apiURLs []string
	// configPath is the YAML config the serve processes get, if any.
	configPath string
}

type clusterOpts struct {
	simArgs []string // extra `vncfleet sim` flags
	rate    int      // VNCCLOUD_RATE
	config  string   // YAML config for serve processes
	extra   []string // extra environment
	dbURL   string   // a database to use instead of a fresh one from dbtest
}

func newCluster(t *testing.T, o clusterOpts) *cluster {
	t.Helper()
	dbURL := o.dbURL
	if dbURL == "" {
		_, dbURL = dbtest.New(t)
	}
	c := &cluster{t: t, dbURL: dbURL}
	simAddr := freeAddr(t)
	c.simURL = "http://" + simAddr
	c.sim = start(t, "sim", []string{"VNCFLEET_SIM_LISTEN=" + simAddr},
		append([]string{"sim", "--account", apiKey + ":" + apiSecret}, o.simArgs...)...)
	waitHealthy(t, c.sim, c.simURL)

	key := make([]byte, 32)
	_, _ = rand.Read(key)
	rate := o.rate
	if rate == 0 {
		rate = 20
	}
	c.env = append([]string{
		"DATABASE_URL=" + dbURL,
		"VNCFLEET_SECRET_KEY=" + base64.StdEncoding.EncodeToString(key),
		"VNCFLEET_TOKEN=" + adminTok,
		"VNCCLOUD_API_URL=" + c.simURL + "/cloud/1.1",
		"VNCCLOUD_API_KEY=" + apiKey,
		"VNCCLOUD_API_SECRET=" + apiSecret,
		fmt.Sprintf("VNCCLOUD_RATE=%d", rate),
	}, o.extra...)
	if o.config != "" {
		path := filepath.Join(t.TempDir(), "vncfleet.yaml")
		require.NoError(t, os.WriteFile(path, []byte(o.config), 0o600))
		c.configPath = path
	}
	return c
}

// startServe starts one more `serve` process on the cluster's database.
func (c *cluster) startServe() *proc {
	c.t.Helper()
	addr := freeAddr(c.t)
	args := []string{"serve"}
	if c.configPath != "" {
		args = append(args, "--config", c.configPath)
	}
	p := start(c.t, fmt.Sprintf("serve-%d", len(c.serves)+1), append(c.env, "VNCFLEET_LISTEN="+addr), args...)
	waitHealthy(c.t, p, "http://"+addr)
	c.serves = append(c.serves, p)
	c.apiURLs = append(c.apiURLs, "http://"+addr)
	return p
}

// run runs a CLI command against the first serve process.
func (c *cluster) run(args ...string) (stdout, stderr string, code int) {
	c.t.Helper()
	return c.runAt(c.apiURLs[0], args...)
}

func (c *cluster) runAt(apiURL string, args ...string) (stdout, stderr string, code int) {
	c.t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Env = append(append(os.Environ(), c.env...), "VNCFLEET_URL="+apiURL)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var exitErr *exec.ExitError
	switch {
	case errors.As(err, &exitErr):
		code = exitErr.ExitCode()
	case err != nil:
		c.t.Fatalf("run %v: %v", args, err)
	}
	return out.String(), errb.String(), code
}

// simState is the simulator's /sim/state.
type simState struct {
	Accounts map[string]struct {
		Addresses []simAddress     `json:"addresses"`
		Creates   int64            `json:"creates"`
		Requests  int64            `json:"requests"`
		Counts    map[string]int64 `json:"counts"` // requests per operation
	} `json:"accounts"`
	PeakPerSecond int   `json:"peakPerSecond"`
	Requests      int64 `json:"requests"`
	Injected      struct {
		Failed, RateCapped, Lost, Dropped, Garbled int64
	} `json:"injected"`
}

type simAddress struct {
	CloudAddress   string   `json:"cloudAddress"`
	Password       string   `json:"cloudPassword"`
	Version        int      `json:"version"`
	Ready          bool     `json:"ready"`
	AllowedActions []string `json:"allowedActions"`
	Groups         []string `json:"groups"`
	AccessControl  *struct {
		Groups         []string `json:"groups"`
		CloudAddresses []string `json:"cloudAddresses"`
	} `json:"accessControl"`
}

func (c *cluster) state() simState {
	c.t.Helper()
	resp, err := http.Get(c.simURL + "/sim/state")
	require.NoError(c.t, err)
	defer resp.Body.Close()
	require.Equal(c.t, http.StatusOK, resp.StatusCode)
	var st simState
	require.NoError(c.t, json.NewDecoder(resp.Body).Decode(&st))
	return st
}

func (c *cluster) addresses() map[string]simAddress {
	c.t.Helper()
	out := map[string]simAddress{}
	for _, a := range c.state().Accounts[apiKey].Addresses {
		out[a.CloudAddress] = a
	}
	return out
}

// simPost sends a request to the simulator's inspection API (faults, drift).
func (c *cluster) simDo(method, path string, body any) {
	c.t.Helper()
	var r io.Reader
	if body != nil {
		js, err := json.Marshal(body)
		require.NoError(c.t, err)
		r = bytes.NewReader(js)
	}
	req, err := http.NewRequestWithContext(context.Background(), method, c.simURL+path, r)
	require.NoError(c.t, err)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(c.t, err)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	require.Less(c.t, resp.StatusCode, 300, "%s %s: %s", method, path, b)
}

// exportRow is one row of `vncfleet export`.
type exportRow map[string]string

func (c *cluster) export(args ...string) map[string]exportRow {
	c.t.Helper()
	out, errOut, code := c.run(append([]string{"export"}, args...)...)
	require.Equal(c.t, 0, code, errOut)
	records, err := csv.NewReader(strings.NewReader(out)).ReadAll()
	require.NoError(c.t, err)
	require.NotEmpty(c.t, records)
	require.Equal(c.t, []string{"device_id", "action", "status", "cloud_address", "cloud_password", "groups",
		"allow_groups", "allow_devices", "vnc_url", "last_error"}, records[0])
	rows := map[string]exportRow{}
	for _, rec := range records[1:] {
		row := exportRow{}
		for i, name := range records[0] {
			row[name] = rec[i]
		}
		rows[row["device_id"]] = row
	}
	return rows
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	require.NoError(t, os.WriteFile(path, []byte(content), 0o600))
	return path
}

// eventually polls cond until it holds or the timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Fatalf("timed out after %s waiting for %s", timeout, what)
}

// apiGet decodes a JSON answer of the vncfleet API.
func (c *cluster) apiGet(path string, v any) {
	c.t.Helper()
	status, body := c.apiGetAt(c.apiURLs[0], path)
	require.Equal(c.t, http.StatusOK, status, "GET %s: %s", path, body)
	require.NoError(c.t, json.Unmarshal(body, v))
}

// apiGetAt sends an administrator's GET to the serve process at apiURL.
func (c *cluster) apiGetAt(apiURL, path string) (status int, body []byte) {
	c.t.Helper()
	req, err := http.NewRequest(http.MethodGet, apiURL+path, nil)
	require.NoError(c.t, err)
	req.Header.Set("Authorization", "Bearer "+adminTok)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(c.t, err)
	defer resp.Body.Close()
	body, _ = io.ReadAll(resp.Body)
	return resp.StatusCode, body
}

type progress struct {
	Total    int            `json:"total"`
	Settled  int            `json:"settled"`
	Failed   int            `json:"failed"`
	Done     bool           `json:"done"`
	ByStatus map[string]int `json:"byStatus"`
}

// waitSettled waits until every device of the fleet owes nothing and is ready,
// deleted or failed.
func (c *cluster) waitSettled(timeout time.Duration) {
	c.t.Helper()
	eventually(c.t, timeout, "every device settled", func() bool {
		var st struct {
			Total    int            `json:"total"`
			ByStatus map[string]int `json:"byStatus"`
		}
		c.apiGet("/v1/status", &st)
		settled := st.ByStatus["ready"] + st.ByStatus["deleted"] + st.ByStatus["failed"]
		return st.Total > 0 && settled == st.Total
	})
}

// uploadNoWait uploads and returns the manifest id printed by the CLI.
func (c *cluster) upload(args ...string) (stdout string) {
	c.t.Helper()
	out, errOut, code := c.run(append([]string{"upload"}, args...)...)
	require.Equal(c.t, 0, code, "upload %v: %s\n%s", args, out, errOut)
	return out
}
