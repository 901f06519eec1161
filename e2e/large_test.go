package e2e

import (
	"fmt"
	"regexp"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestLargeManifestSurvivesAKillDuringItsApply: a manifest of more than
// inline_apply_rows rows is accepted at once and applied to its devices afterwards by
// a job. The process
// running that job is killed right after the upload; the others finish the apply
// (the sweeper restarts a stalled one) and provision every device, with exactly one
// address each once reconciliation has settled the creates the kill cut off; the
// manifest's progress counts its staged rows until they are applied.
func TestLargeManifestSurvivesAKillDuringItsApply(t *testing.T) {
	t.Parallel()
	// inline_apply_rows lowered from 10,000 so that a manifest of 2,100 devices takes
	// the path of a large one without loading the machine the other tests share.
	c := newCluster(t, clusterOpts{rate: 500, config: fastConfig + "inline_apply_rows: 500\n",
		simArgs: []string{"--ready-delay", "200ms"}})
	first := c.startServe()
	devices := factoryManifest(210, 4, 6) // 2,100 devices, applied by the job
	out := c.upload("--fleet", "big", writeFile(t, "big.csv", manifestCSV(devices)))
	m := regexp.MustCompile(`manifest #(\d+) stored`).FindStringSubmatch(out)
	require.NotNil(t, m, out)

	var p progress
	c.apiGet("/v1/manifests/"+m[1], &p)
	require.Equal(t, len(devices), p.Total)
	require.False(t, p.Done)

	first.kill() // SIGKILL while its apply job (or the first work) runs
	c.serves, c.apiURLs = c.serves[1:], c.apiURLs[1:]
	c.startServe()
	c.startServe()

	start := time.Now()
	eventually(t, 4*time.Minute, "manifest "+m[1]+" done", func() bool {
		c.apiGet("/v1/manifests/"+m[1], &p)
		return p.Done
	})
	t.Logf("%d devices provisioned %s after the kill", len(devices), time.Since(start).Round(time.Second))
	require.Equal(t, len(devices), p.Total)
	require.Equal(t, len(devices), p.ByStatus["ready"], fmt.Sprint(p.ByStatus))
	// Creates in flight when the process died may have made addresses whose answers
	// were lost: reconciliation adopts or deletes them once past the grace period.
	time.Sleep(6 * time.Second)
	reconcileTwice(t, c)
	verifyFleet(t, c, devices)
}
