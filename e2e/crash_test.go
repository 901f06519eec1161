package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
)

// TestKillLosesAtMostASecondOfAnswers: with default settings, two workers, a rate cap
// of 40 requests/s and a 300-device manifest, one worker is killed with SIGKILL 4 s
// in. Its answers were recorded as they came (within half a second), so the surplus
// addresses it leaves (creates answered but not recorded, which the survivor makes
// again) are at most what the cap lets through in about a second, never a batch
// (this run made 117 surplus addresses before answers were group-committed). Its
// claims are released when the survivor's sweeper finds it dead, in seconds, not at
// the end of the 2-minute lease.
func TestKillLosesAtMostASecondOfAnswers(t *testing.T) {
	t.Parallel()
	const rate = 40
	c := newCluster(t, clusterOpts{rate: rate})
	victim := c.startServe()
	c.startServe()
	devices := factoryManifest(30, 6, 4)
	require.Len(t, devices, 300)
	c.upload("--fleet", "kill", writeFile(t, "kill.csv", manifestCSV(devices)))

	time.Sleep(4 * time.Second)
	ctx := context.Background()
	db, err := pgx.Connect(ctx, c.dbURL)
	require.NoError(t, err)
	defer db.Close(ctx)
	var workerID int64
	require.NoError(t, db.QueryRow(ctx, `SELECT id FROM worker_processes WHERE pid = $1 AND gone_at IS NULL`,
		victim.cmd.Process.Pid).Scan(&workerID))
	// Kill it while it holds claims (it shares the work with the other worker).
	var held int
	eventually(t, time.Minute, "the victim holds claims", func() bool {
		require.NoError(t, db.QueryRow(ctx, `SELECT count(*) FROM devices WHERE claim_worker = $1 AND claim_until > now()`, workerID).Scan(&held))
		return held > 0
	})
	victim.kill()
	killedAt := time.Now()
	c.serves, c.apiURLs = c.serves[1:], c.apiURLs[1:]

	// Released by the survivor, long before the lease would have ended them.
	var released time.Duration
	eventually(t, time.Minute, "the dead worker's claims released", func() bool {
		var left int
		require.NoError(t, db.QueryRow(ctx, `SELECT count(*) FROM devices WHERE claim_worker = $1 AND claim_until > now()`, workerID).Scan(&left))
		released = time.Since(killedAt)
		return left == 0
	})
	t.Logf("the killed worker held %d claims; released %s after the kill", held, released.Round(100*time.Millisecond))
	require.Less(t, released, 30*time.Second, "released by presence, not by the 2-minute lease")

	c.waitSettled(5 * time.Minute)
	surplus := len(c.addresses()) - len(devices)
	t.Logf("surplus addresses after the kill: %d (the cap sends %d a second)", surplus, rate)
	require.LessOrEqual(t, surplus, rate, "at most about a second of answers lost")

	rows := c.export("--secrets")
	require.Len(t, rows, len(devices))
	for id, row := range rows {
		require.Equal(t, "ready", row["status"], fmt.Sprintf("%s: %s", id, row["last_error"]))
	}
}
