package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// privatePostgres runs a PostgreSQL cluster of the test's own, so that the test can
// restart it without disturbing the tests that share the machine's cluster.
type privatePostgres struct {
	t    *testing.T
	dir  string
	port int
}

func pgBin(name string) string {
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin/" + name)
	if len(matches) == 0 {
		return name
	}
	return matches[len(matches)-1]
}

func (p *privatePostgres) asPostgres(args ...string) {
	p.t.Helper()
	cmd := exec.Command("runuser", append([]string{"-u", "postgres", "--"}, args...)...)
	out, err := cmd.CombinedOutput()
	require.NoError(p.t, err, "%v: %s", args, out)
}

func startPrivatePostgres(t *testing.T) *privatePostgres {
	t.Helper()
	pg, err := user.Lookup("postgres")
	require.NoError(t, err, "the postgres system user runs the private cluster")
	dir, err := os.MkdirTemp("", "vncfleet-pg-")
	require.NoError(t, err)
	uid, _ := strconv.Atoi(pg.Uid)
	gid, _ := strconv.Atoi(pg.Gid)
	require.NoError(t, os.Chown(dir, uid, gid))
	addr := freeAddr(t)
	port, _ := strconv.Atoi(addr[strings.LastIndex(addr, ":")+1:])
	p := &privatePostgres{t: t, dir: dir, port: port}
	p.asPostgres(pgBin("initdb"), "-D", filepath.Join(dir, "data"), "-A", "trust", "-U", "postgres", "--no-sync")
	p.start()
	t.Cleanup(func() {
		_ = exec.Command("runuser", "-u", "postgres", "--", pgBin("pg_ctl"), "-D", filepath.Join(dir, "data"), "-m", "immediate", "stop").Run()
		_ = os.RemoveAll(dir)
	})
	return p
}

func (p *privatePostgres) start() {
	p.asPostgres(pgBin("pg_ctl"), "-D", filepath.Join(p.dir, "data"), "-w", "-l", filepath.Join(p.dir, "log"),
		"-o", fmt.Sprintf("-p %d -k %s -c listen_addresses='' -c fsync=off", p.port, p.dir), "start")
}

func (p *privatePostgres) stop() {
	p.asPostgres(pgBin("pg_ctl"), "-D", filepath.Join(p.dir, "data"), "-w", "-m", "fast", "stop")
}

func (p *privatePostgres) url() string {
	return fmt.Sprintf("postgres:///postgres?host=%s&port=%d&user=postgres", p.dir, p.port)
}

// TestDatabaseRestartMidRun stops PostgreSQL for a few seconds while a manifest is
// being provisioned: the work resumes when it is back and no device fails because of it.
func TestDatabaseRestartMidRun(t *testing.T) {
	t.Parallel()
	pg := startPrivatePostgres(t)
	c := newCluster(t, clusterOpts{dbURL: pg.url(), rate: 40, config: fastConfig, simArgs: []string{"--ready-delay", "300ms"}})
	out, errOut, code := c.runAt("http://127.0.0.1:1", "migrate")
	require.Equal(t, 0, code, "migrate: %s\n%s", out, errOut)
	c.startServe()

	devices := factoryManifest(15, 4, 6) // 150 devices: several seconds at 40 requests/s
	c.upload("--fleet", "restart", writeFile(t, "restart.csv", manifestCSV(devices)))
	time.Sleep(2 * time.Second)
	pg.stop()
	time.Sleep(4 * time.Second)
	pg.start()

	c.waitSettled(3 * time.Minute)
	var st struct {
		ByStatus map[string]int `json:"byStatus"`
	}
	c.apiGet("/v1/status", &st)
	require.Zero(t, st.ByStatus["failed"], "no device failed because the database went away")
	time.Sleep(6 * time.Second)
	reconcileTwice(t, c)
	verifyFleet(t, c, devices)
	require.NotContains(t, c.serves[0].out.String(), "panic")
}
