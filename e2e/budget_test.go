package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Provisioning and rotation share the rate budget (issue 12). These tests count what
// the simulator received and in what order; none of them depends on how fast the
// machine is.

// simRequest is one entry of the simulator's GET /sim/requests.
type simRequest struct {
	At time.Time `json:"at"`
	Op string    `json:"op"`
}

func (c *cluster) requests() []simRequest {
	c.t.Helper()
	resp, err := http.Get(c.simURL + "/sim/requests")
	require.NoError(c.t, err)
	defer resp.Body.Close()
	var l struct {
		Dropped  int64        `json:"dropped"`
		Requests []simRequest `json:"requests"`
	}
	require.NoError(c.t, json.NewDecoder(resp.Body).Decode(&l))
	require.Zero(c.t, l.Dropped, "the simulator's request log is too short for the test")
	return l.Requests
}

// manifestID is the id `vncfleet upload` printed.
func manifestID(t *testing.T, out string) string {
	t.Helper()
	m := regexp.MustCompile(`manifest #(\d+) stored`).FindStringSubmatch(out)
	require.NotNil(t, m, out)
	return m[1]
}

func devicesNamed(prefix string, n int) []device {
	out := make([]device, n)
	for i := range out {
		out[i] = device{id: fmt.Sprintf("%s-%03d", prefix, i), action: "connect", groups: []string{prefix}}
	}
	return out
}

// TestSmallManifestDuringALargeRotation: a 20-row manifest uploaded while both serve
// processes rotate 400 devices is provisioned before the rotation ends, and while its
// creates are sent the rotation gets no more than its share: fewer rotation calls
// than the manifest's own creates in that span (in arrival order at the simulator),
// where a first-come queue would have put the rotation's hundreds of waiting calls
// first.
func TestSmallManifestDuringALargeRotation(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterOpts{rate: 100, config: fastConfig,
		simArgs: []string{"--ready-delay", "200ms", "--request-log", "100000"}})
	c.startServe()
	c.startServe()
	c.upload("--wait", "--fleet", "installed", writeFile(t, "installed.csv", manifestCSV(devicesNamed("installed", 400))))

	out, errOut, code := c.run("rotate", "--all")
	require.Equal(t, 0, code, "%s\n%s", out, errOut)
	key := regexp.MustCompile(`\(work (\S+)\)`).FindStringSubmatch(out)
	require.NotNil(t, key, out)
	eventually(t, time.Minute, "the rotation under way", func() bool { return c.state().Accounts[apiKey].Counts["reset"] >= 50 })

	out, errOut, code = c.run("upload", "--wait", "--fleet", "urgent", writeFile(t, "urgent.csv", manifestCSV(devicesNamed("urgent", 20))))
	require.Equal(t, 0, code, "%s\n%s", out, errOut)
	var rot progress
	c.apiGet("/v1/work/"+key[1], &rot)
	require.False(t, rot.Done, "the rotation ended before the urgent manifest was provisioned: %+v", rot)
	require.Less(t, rot.Settled, rot.Total)

	// Every create since the rotation began is the urgent manifest's.
	reqs := c.requests()
	var creates []int
	rotationStarted := false
	for i, r := range reqs {
		rotationStarted = rotationStarted || r.Op == "reset"
		if rotationStarted && r.Op == "create" {
			creates = append(creates, i)
		}
	}
	require.Len(t, creates, 20)
	rotationCalls := 0
	for _, r := range reqs[creates[0]:creates[len(creates)-1]] {
		if r.Op == "reset" || r.Op == "get" {
			rotationCalls++
		}
	}
	t.Logf("between the urgent manifest's first and last create: %d rotation calls; rotation at %d of %d when it was done",
		rotationCalls, rot.Settled, rot.Total)
	require.Less(t, rotationCalls, len(creates), "the rotation's calls while the urgent manifest's creates waited")
}

// TestTwoManifestsProgressInterleaved: a 20-row manifest uploaded after a 2000-row one
// of another fleet is done while the large one is still in progress, the large one
// having progressed before and after: neither waits for the other to finish.
func TestTwoManifestsProgressInterleaved(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterOpts{rate: 100, config: fastConfig, simArgs: []string{"--ready-delay", "200ms"}})
	c.startServe()
	c.startServe()
	// 2000 devices: 40 s of the budget, so that the small manifest has the time of a
	// loaded machine's scheduling to show it is not queued behind them (the test ends
	// when the small one is done, not the large one).
	large := manifestID(t, c.upload("--fleet", "large", writeFile(t, "large.csv", manifestCSV(devicesNamed("large", 2000)))))
	var p progress
	eventually(t, time.Minute, "the large manifest under way", func() bool {
		p = progress{} // a decoded answer's map would keep the statuses of the one before
		c.apiGet("/v1/manifests/"+large, &p)
		return p.ByStatus["ready"] >= 20
	})
	out, errOut, code := c.run("upload", "--wait", "--fleet", "small", writeFile(t, "small.csv", manifestCSV(devicesNamed("small", 20))))
	require.Equal(t, 0, code, "%s\n%s", out, errOut)
	p = progress{}
	c.apiGet("/v1/manifests/"+large, &p)
	t.Logf("the large manifest when the small one was done: %v", p.ByStatus)
	require.False(t, p.Done, "the large manifest finished first: the small one waited behind it")
	require.Less(t, p.ByStatus["ready"], p.Total)
	p = progress{}
	c.apiGet("/v1/manifests/"+manifestID(t, out), &p)
	require.True(t, p.Done)
	require.Equal(t, 20, p.ByStatus["ready"])
}
