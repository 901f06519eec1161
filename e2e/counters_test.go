package e2e

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/vncfleet/vncfleet/internal/store"
)

// TestCountersStayExactThroughFaultsAndAKill: the status counters that progress,
// status and the metrics read stay equal to a full count of the devices while two
// workers provision under simulator faults (503s, creates committed but answered
// 503), when one of them is killed with SIGKILL in the middle of its batches, while
// a second manifest moves devices to new groups, and once everything has settled.
func TestCountersStayExactThroughFaultsAndAKill(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterOpts{rate: 80, config: fastConfig,
		simArgs: []string{"--fail-rate", "0.05", "--lost-rate", "0.03", "--ready-delay", "300ms", "--latency", "20ms", "--seed", "5"}})
	c.startServe()
	c.startServe()
	pool, err := pgxpool.New(context.Background(), c.dbURL)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	st := store.New(pool, nil)

	devices := factoryManifest(30, 4, 6) // 300 devices
	c.upload("--fleet", "counted", writeFile(t, "counted.csv", manifestCSV(devices)))
	eventually(t, 2*time.Minute, "provisioning under way", func() bool {
		var p struct {
			ByStatus map[string]int `json:"byStatus"`
		}
		c.apiGet("/v1/status?fleet=counted", &p)
		return p.ByStatus["ready"] >= 30
	})
	c.serves[0].kill() // SIGKILL: its claims and uncommitted results are gone
	c.serves, c.apiURLs = c.serves[1:], c.apiURLs[1:]
	requireCountersExact(t, st, "right after the kill")
	c.startServe()

	// A second manifest regroups the first ten lines' viewers: their counts move to the
	// new manifest and group while the first one's work is still in flight.
	for i := range devices[:100] {
		if devices[i].action == "connect" {
			devices[i].groups = []string{"rework"}
		}
	}
	c.upload("--fleet", "counted", writeFile(t, "rework.csv", manifestCSV(devices[:100])))
	requireCountersExact(t, st, "after the second upload")

	c.waitSettled(3 * time.Minute)
	requireCountersExact(t, st, "once settled")

	// What `vncfleet status` prints is the full count.
	out, errOut, code := c.run("status", "--fleet", "counted", "--json")
	require.Equal(t, 0, code, "status: %s\n%s", out, errOut)
	var status struct {
		Total    int                       `json:"total"`
		ByStatus map[string]int            `json:"byStatus"`
		ByGroup  map[string]map[string]int `json:"byGroup"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &status))
	require.Equal(t, len(devices), status.Total)
	var ready, rework int
	require.NoError(t, pool.QueryRow(context.Background(), `
		SELECT count(*) FILTER (WHERE status = 'ready'), count(*) FILTER (WHERE 'rework' = ANY (groups))
		FROM devices`).Scan(&ready, &rework))
	require.Equal(t, ready, status.ByStatus["ready"])
	require.Equal(t, 40, rework, "ten lines of four viewers")
	require.Equal(t, rework, status.ByGroup["rework"]["ready"]+status.ByGroup["rework"]["failed"])
	require.Equal(t, 80, sumCounts(status.ByGroup["ops"]), "the other twenty lines' viewers stay in ops")
}

func sumCounts(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

func requireCountersExact(t *testing.T, st *store.Store, when string) {
	t.Helper()
	drift, err := st.CountsDrift(context.Background())
	require.NoError(t, err)
	require.Empty(t, drift, "status counters %s", when)
}
