package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// waitProgress is the part of GET /v1/manifests/{id} that shows the cloud and the
// limiter.
type waitProgress struct {
	Done      bool `json:"done"`
	CallsOwed int  `json:"callsOwed"`
	Cloud     *struct {
		PausedUntil *time.Time `json:"pausedUntil"`
		Limiter     *struct {
			Rate      float64 `json:"rate"`
			Factor    float64 `json:"factor"`
			Sending   float64 `json:"sending"`
			Processes int     `json:"processes"`
			Slowed    int     `json:"slowed"`
		} `json:"limiter"`
	} `json:"cloud"`
}

// manifestProgress reads manifest id's progress from serve process i; false while the
// manifest is not stored yet.
func (c *cluster) manifestProgress(i int, id int64) (waitProgress, bool) {
	c.t.Helper()
	var p waitProgress
	status, body := c.apiGetAt(c.apiURLs[i], "/v1/manifests/"+strconv.FormatInt(id, 10)+"?no_groups=true")
	if status == http.StatusNotFound {
		return p, false
	}
	require.Equal(c.t, http.StatusOK, status, "%s", body)
	require.NoError(c.t, json.Unmarshal(body, &p))
	return p, true
}

// startCLI runs a CLI command as a process of its own, its output readable while it
// runs.
func (c *cluster) startCLI(name string, args ...string) *proc {
	c.t.Helper()
	return start(c.t, name, append(c.env, "VNCFLEET_URL="+c.apiURLs[0]), args...)
}

func (p *proc) wait(t *testing.T, within time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(within):
		t.Fatalf("%s did not end within %s:\n%s", p.name, within, tail(p.out.String(), 4000))
	}
	if p.err == nil {
		return 0
	}
	code := p.cmd.ProcessState.ExitCode()
	require.GreaterOrEqual(t, code, 0, "%s: %v", p.name, p.err)
	return code
}

func connectManifest(n int) string {
	var b strings.Builder
	b.WriteString("device_id,action,groups\n")
	for i := range n {
		fmt.Fprintf(&b, "dev-%04d,connect,line-%02d\n", i, i%10)
	}
	return b.String()
}

// TestWaitShowsTheClusterLimiter: during a storm of 503s with Retry-After (the
// simulator's rate cap far under VNCCLOUD_RATE), the progress answer of either serve
// process shows the whole cluster's limiter (both processes, paused by the
// Retry-After, slowed down by AIMD), `upload --wait`'s progress line and cloud line
// say so, and all of it clears once the storm ends, while the run goes on; the final
// summary tells what the wait went through.
func TestWaitShowsTheClusterLimiter(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterOpts{rate: 20, simArgs: []string{"--ready-delay", "100ms", "--rate", "1"}, config: fastConfig})
	c.startServe()
	c.startServe()
	cli := c.startCLI("upload --wait", "upload", "--wait", "--timeout", "4m", writeFile(t, "m.csv", connectManifest(200)))

	var sawPause, sawSlowed bool
	eventually(t, 90*time.Second, "the progress answer shows the pause and the slow-down of the whole cluster", func() bool {
		for i := range c.apiURLs {
			p, ok := c.manifestProgress(i, 1)
			if !ok || p.Cloud == nil {
				continue
			}
			require.False(t, p.Done, "the storm lets 1 call a second through: 200 devices cannot be done")
			if p.Cloud.PausedUntil != nil {
				sawPause = true
			}
			if l := p.Cloud.Limiter; l != nil {
				require.Equal(t, 2, l.Processes, "both serve processes publish")
				require.InDelta(t, 20.0, l.Rate, 1e-9)
				if l.Slowed > 0 {
					require.Less(t, l.Factor, 1.0)
					sawSlowed = true
				}
			}
		}
		return sawPause && sawSlowed
	})
	progressLine := regexp.MustCompile(`(?m)^manifest #1 \d+/200 settled .*\| paused until \d\d:\d\d:\d\d by Retry-After|` +
		`(?m)^manifest #1 \d+/200 settled .*\| (.*; )?sending [0-9.]+/s of 20/s: VNC Cloud asked to slow down`)
	eventually(t, 90*time.Second, "upload --wait's lines show the limiter", func() bool {
		out := cli.out.String()
		return progressLine.MatchString(out) &&
			(strings.Contains(out, "every call paused by Retry-After") || strings.Contains(out, "the cluster slowed down at VNC Cloud's request"))
	})

	c.simDo(http.MethodPost, "/sim/faults", map[string]any{"rate": 0})
	eventually(t, 60*time.Second, "the progress answer clears once the storm ends", func() bool {
		p, ok := c.manifestProgress(1, 1)
		require.True(t, ok)
		require.False(t, p.Done, "cleared before the run ends: 380 calls at 20/s take far longer than the limiter takes to recover")
		return p.Cloud != nil && p.Cloud.PausedUntil == nil && p.Cloud.Limiter != nil && p.Cloud.Limiter.Slowed == 0
	})

	require.Equal(t, 0, cli.wait(t, 3*time.Minute), cli.out.String())
	out := cli.out.String()
	var last string
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "manifest #1 ") && strings.Contains(l, " settled (") {
			last = l
		}
	}
	require.Contains(t, last, "200/200 settled", out)
	require.NotContains(t, last, "slow down", "the last line is at full speed")
	require.NotContains(t, last, "Retry-After")
	t.Logf("upload --wait through the storm:\n%s", tail(out, 3000))
	require.Regexp(t, `(?m)^VNC Cloud asked to slow down during the wait: (sending [0-9.]+/s of 20/s at the slowest; )?`+
		`every call paused by Retry-After (once|\d+ times), the last until \d\d:\d\d:\d\d$`, out)
}

// TestETAEarlyInARunMeansSomething: the bad case ("ETA 46m25s" early in a run
// that took 54 s) with real processes. Every ETA `upload --wait` shows in the first
// half of the run, added to the time elapsed, is within a factor of four of the
// run's real duration (the old rule was off by ten to fifty; the factor leaves room
// for a machine too busy to keep up with the budget).
func TestETAEarlyInARunMeansSomething(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterOpts{rate: 10, simArgs: []string{"--ready-delay", "1s"}, config: fastConfig})
	c.startServe()
	cli := c.startCLI("upload --wait", "upload", "--wait", "--timeout", "4m", writeFile(t, "m.csv", connectManifest(100)))
	require.Equal(t, 0, cli.wait(t, 4*time.Minute), cli.out.String())
	out := cli.out.String()

	line := regexp.MustCompile(`(?m)^manifest #1 (\d+)/100 settled .*?\| [0-9.]+/s(?: ETA (\S+))? .*\| (\S+) elapsed$`)
	type seen struct{ elapsed, eta time.Duration }
	var lines []seen
	var total time.Duration
	for _, m := range line.FindAllStringSubmatch(out, -1) {
		elapsed, err := time.ParseDuration(m[3])
		require.NoError(t, err, m[0])
		total = elapsed
		if m[1] == "100" || m[2] == "" {
			continue
		}
		eta, err := time.ParseDuration(m[2])
		require.NoError(t, err, m[0])
		lines = append(lines, seen{elapsed, eta})
	}
	require.Greater(t, total, 5*time.Second, "200 calls at 10/s: %s", out)
	early := 0
	for _, l := range lines {
		if l.elapsed > total/2 {
			continue
		}
		early++
		predicted := l.elapsed + l.eta
		require.True(t, predicted >= total/4 && predicted <= 4*total,
			"at %s the ETA said %s: a run of %s, which took %s\n%s", l.elapsed, l.eta, predicted, total, out)
	}
	require.Positive(t, early, "the budget is known from the start, so an ETA shows early: %s", out)
	t.Logf("run of %s; ETAs early: %v", total, lines)
}
