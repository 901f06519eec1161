package e2e

import (
	"encoding/csv"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// The fault campaign's knobs. Everything else is vncfleet's default configuration:
// no config file, so claim lease, call timeout, readiness backoff, adoption grace and
// schedules are what users get.
const (
	campaignRate = 40 // VNCCLOUD_RATE, both workers together
	// campaignPhaseBound only keeps a hung run from hanging the suite: a phase that
	// has not settled this long after its kill is reported as a failure.
	campaignPhaseBound = 8 * time.Minute
)

// campaignSimArgs are the simulator's faults: 503s, lost and dropped create answers,
// cut-off reset answers and a per-account rate cap above VNCCLOUD_RATE (so a burst
// meets 503 with Retry-After).
var campaignSimArgs = []string{"--fail-rate", "0.05", "--lost-rate", "0.03", "--drop-rate", "0.03",
	"--garble-rate", "0.05", "--rate", "50"}

// TestFaultCampaign is issue 8's fault campaign, with real processes: rounds of
// provisioning and rotation against `vncfleet sim` with every fault it makes, two
// `serve` under VNCCLOUD_RATE, and in each round a kill -9 of a random worker at a
// random moment during provisioning and another during rotation, each followed at
// once by a new worker. After each round comes exactly one `vncfleet reconcile`; then
// the account must hold exactly one address per present device, and once the work
// reconcile scheduled is done, every device is ready with the cloud's password and
// its manifest's spec. No cloud password may appear in any process's output.
//
// The seed (printed) decides the kill moments, the victims and the simulator's dice:
// VNCFLEET_CAMPAIGN_SEED=N repeats a run. VNCFLEET_CAMPAIGN_ROUNDS (default 1) and
// VNCFLEET_CAMPAIGN_DEVICES (per round, default 60, in tens) make the long form:
//
//	VNCFLEET_CAMPAIGN_ROUNDS=20 go test -count=1 -run TestFaultCampaign -timeout 60m -v ./e2e/
//
// Figures (t.Log, per round and in total): kills, faults injected, surplus addresses
// right after reconcile, devices not ready or with a wrong password or spec, and the
// longest wait after a kill: from the kill until the last device that was unsettled
// at that moment settled.
func TestFaultCampaign(t *testing.T) {
	t.Parallel()
	seed := campaignEnv(t, "VNCFLEET_CAMPAIGN_SEED", rand.Uint64()>>1)
	rounds := int(campaignEnv(t, "VNCFLEET_CAMPAIGN_ROUNDS", 1))
	perRound := int(campaignEnv(t, "VNCFLEET_CAMPAIGN_DEVICES", 60))
	require.GreaterOrEqual(t, perRound, 10, "VNCFLEET_CAMPAIGN_DEVICES")
	t.Logf("fault campaign: seed %d (repeat with VNCFLEET_CAMPAIGN_SEED=%d), %d rounds of %d devices, VNCCLOUD_RATE=%d, sim %s",
		seed, seed, rounds, perRound/10*10, campaignRate, strings.Join(campaignSimArgs, " "))

	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	simArgs := append([]string{"--seed", strconv.FormatInt(rng.Int64N(1<<62)+1, 10)}, campaignSimArgs...)
	k := &campaign{t: t, c: newCluster(t, clusterOpts{rate: campaignRate, simArgs: simArgs}), rng: rng, passwords: map[string]bool{}}
	k.startServe()
	k.startServe()

	var present []device
	var total figures
	for n := 1; n <= rounds; n++ {
		fig := k.round(n, perRound/10, &present)
		t.Logf("round %d: %s", n, fig)
		total.add(fig)
	}
	t.Logf("total over %d rounds (account and fleet as after the last): %s", rounds, total)
	k.checkLogs()
}

// campaign is the state of one fault campaign.
type campaign struct {
	t   *testing.T
	c   *cluster
	rng *rand.Rand
	// procs are every serve and CLI process started, killed ones included, and outputs
	// the CLI output read directly: all of it is checked for passwords.
	procs   []*proc
	outputs []string
	// passwords are every cloud password seen in the simulator's state.
	passwords map[string]bool
}

// figures are what a round counts: events of the round (kills, faults, what reconcile
// did) and the state of the whole account and fleet after its reconcile.
type figures struct {
	kills, killsAfterSettled      int
	failed, rateCapped            int64 // 503s without effect
	lost, dropped, garbled        int64 // answers lost after the cloud acted
	surplus, missing              int   // right after reconcile: addresses beyond / short of one per present device, all rounds'
	notReady, wrongPasswords      int   // after the work reconcile scheduled, all rounds' devices
	wrongSpecs                    int
	inFlight, reconcileErrors     int // as reconcile reported them
	adopted, deletedOrphans       int
	longestWait                   time.Duration
	reconcileFailed, phasesFailed int
}

func (f figures) String() string {
	return fmt.Sprintf("%d kills (%d after the work had settled), longest wait after a kill %s; "+
		"injected: %d lost create answers (503), %d dropped create connections, %d cut-off resets, %d 503s, %d rate-capped; "+
		"reconcile: %d in flight, %d adopted, %d orphans deleted, %d errors, %d runs not exit 0; "+
		"after reconcile: %d surplus addresses, %d missing; %d devices not ready, %d wrong passwords, %d wrong specs; %d phases failed",
		f.kills, f.killsAfterSettled, f.longestWait.Round(100*time.Millisecond),
		f.lost, f.dropped, f.garbled, f.failed, f.rateCapped,
		f.inFlight, f.adopted, f.deletedOrphans, f.reconcileErrors, f.reconcileFailed,
		f.surplus, f.missing, f.notReady, f.wrongPasswords, f.wrongSpecs, f.phasesFailed)
}

func (f *figures) add(o figures) {
	f.kills += o.kills
	f.killsAfterSettled += o.killsAfterSettled
	f.failed += o.failed
	f.rateCapped += o.rateCapped
	f.lost += o.lost
	f.dropped += o.dropped
	f.garbled += o.garbled
	// The account and the fleet carry over from round to round: their figures are
	// those of the last round, not sums.
	f.surplus, f.missing = o.surplus, o.missing
	f.notReady, f.wrongPasswords, f.wrongSpecs = o.notReady, o.wrongPasswords, o.wrongSpecs
	f.inFlight += o.inFlight
	f.reconcileErrors += o.reconcileErrors
	f.adopted += o.adopted
	f.deletedOrphans += o.deletedOrphans
	f.longestWait = max(f.longestWait, o.longestWait)
	f.reconcileFailed += o.reconcileFailed
	f.phasesFailed += o.phasesFailed
}

// round provisions a new fleet of lines×10 devices and rotates it, a worker killed in
// each phase, then reconciles once and checks every present device.
func (k *campaign) round(n, lines int, present *[]device) figures {
	t, c := k.t, k.c
	var fig figures
	fleet := fmt.Sprintf("round-%02d", n)
	devices := renamed(fmt.Sprintf("r%02d-", n), factoryManifest(lines, 5, 5))
	*present = append(*present, devices...)
	before := k.state()

	created := before.Accounts[apiKey].Creates
	path := writeFile(t, fleet+".csv", manifestCSV(devices))
	k.phase(&fig, fleet, []string{"upload", "--wait", "--fleet", fleet, path}, len(devices), func(st simState) int {
		return int(st.Accounts[apiKey].Creates - created)
	})

	versions := map[string]int{} // of the fleet's addresses, before the rotation
	cloud := c.addresses()
	for _, row := range c.export("--fleet", fleet) {
		versions[row["cloud_address"]] = cloud[row["cloud_address"]].Version
	}
	k.phase(&fig, fleet, []string{"rotate", "--all", "--wait", "--fleet", fleet}, len(devices), func(st simState) int {
		reset := 0
		for _, a := range st.Accounts[apiKey].Addresses {
			if v, ok := versions[a.CloudAddress]; ok && a.Version > v {
				reset++
			}
		}
		return reset
	})

	// Exactly one reconcile, right after the round's work returned.
	out, errOut, code := c.run("reconcile", "--json")
	k.outputs = append(k.outputs, out, errOut)
	if code != 0 {
		fig.reconcileFailed++
		t.Errorf("round %d: reconcile exited %d: %s\n%s", n, code, out, errOut)
	}
	var report map[string]json.RawMessage
	if err := json.Unmarshal([]byte(out), &report); err == nil {
		fig.inFlight, fig.adopted = listLen(report["inFlight"]), listLen(report["adopted"])
		fig.deletedOrphans, fig.reconcileErrors = listLen(report["deletedOrphans"]), listLen(report["errors"])
	}
	if fig.reconcileErrors > 0 {
		t.Errorf("round %d: reconcile listed %d errors: %s", n, fig.reconcileErrors, report["errors"])
	}
	// The contract of reconcile's exit 0: exactly one address per present device, now.
	held := len(k.state().Accounts[apiKey].Addresses)
	fig.surplus, fig.missing = max(held-len(*present), 0), max(len(*present)-held, 0)
	if held != len(*present) {
		t.Errorf("round %d: right after reconcile the account holds %d addresses for %d present devices (%d in flight per its report)",
			n, held, len(*present), fig.inFlight)
	}

	c.waitSettled(campaignPhaseBound) // the work reconcile scheduled (adoptions, re-creations)
	a := auditFleet(t, c, *present)
	fig.notReady, fig.wrongPasswords, fig.wrongSpecs = a.notReady, a.wrongPasswords, a.wrongSpecs
	if len(a.problems) > 0 {
		t.Errorf("round %d: %d problems after reconcile, the first ones:\n%s", n, len(a.problems), strings.Join(a.first(10), "\n"))
	}

	after := k.state()
	fig.failed, fig.rateCapped = after.Injected.Failed-before.Injected.Failed, after.Injected.RateCapped-before.Injected.RateCapped
	fig.lost, fig.dropped = after.Injected.Lost-before.Injected.Lost, after.Injected.Dropped-before.Injected.Dropped
	fig.garbled = after.Injected.Garbled - before.Injected.Garbled
	return fig
}

// phase runs a CLI command that waits for its work (upload --wait, rotate --wait)
// against a worker that stays up, kills the other worker with SIGKILL once progress
// reaches a random share of the devices, starts a new worker at once, and follows the
// devices that were unsettled at the kill until they settle.
func (k *campaign) phase(fig *figures, fleet string, args []string, devices int, progress func(simState) int) {
	t, c := k.t, k.c
	require.Len(t, c.serves, 2)
	victim := k.rng.IntN(2)
	url := c.apiURLs[1-victim]
	threshold := max(1, int((0.1+0.6*k.rng.Float64())*float64(devices)))
	cli := k.cli(url, args...)
	for !cli.exited() && progress(k.state()) < threshold {
		time.Sleep(50 * time.Millisecond)
	}
	unsettled := k.unsettled(url, fleet)
	unsettledAtKill := len(unsettled)
	if unsettledAtKill == 0 {
		fig.killsAfterSettled++
	}
	killedAt := time.Now()
	c.serves[victim].kill() // SIGKILL: no chance to release claims or record answers
	fig.kills++
	c.serves = append(c.serves[:victim], c.serves[victim+1:]...)
	c.apiURLs = append(c.apiURLs[:victim], c.apiURLs[victim+1:]...)
	k.startServe()

	var waited time.Duration
	for len(unsettled) > 0 && time.Since(killedAt) < campaignPhaseBound {
		time.Sleep(250 * time.Millisecond)
		now := k.unsettled(url, fleet)
		for id := range unsettled {
			if !now[id] {
				waited = max(waited, time.Since(killedAt))
				delete(unsettled, id)
			}
		}
	}
	t.Logf("%s: killed a worker at %d of %d devices' progress with %d devices unsettled; they waited up to %s",
		strings.Join(args[:2], " "), threshold, devices, unsettledAtKill, waited.Round(100*time.Millisecond))
	fig.longestWait = max(fig.longestWait, waited)
	if len(unsettled) > 0 {
		fig.phasesFailed++
		t.Errorf("%s: %d devices still unsettled %s after the kill", strings.Join(args[:2], " "), len(unsettled), campaignPhaseBound)
	}
	select {
	case <-cli.done:
	case <-time.After(campaignPhaseBound):
		cli.kill()
	}
	if code := cli.exitCode(); code != 0 {
		fig.phasesFailed++
		t.Errorf("%s exited %d:\n%s", strings.Join(args, " "), code, tail(cli.out.String(), 2000))
	}
}

// startServe starts a worker and keeps it for the log check.
func (k *campaign) startServe() { k.procs = append(k.procs, k.c.startServe()) }

// cli starts a CLI command against the server at url.
func (k *campaign) cli(url string, args ...string) *proc {
	p := start(k.t, args[0], append(append([]string{}, k.c.env...), "VNCFLEET_URL="+url), args...)
	k.procs = append(k.procs, p)
	return p
}

func (p *proc) exited() bool { return p.Exited() }

// exitCode is the exit code of a process that has exited; -1 when killed.
func (p *proc) exitCode() int {
	code, err := p.ExitCode()
	if err != nil {
		return -1
	}
	return code
}

// state is the simulator's state; every password in it is remembered for the log check.
func (k *campaign) state() simState {
	st := k.c.state()
	for _, a := range st.Accounts[apiKey].Addresses {
		k.passwords[a.Password] = true
	}
	return st
}

// unsettled are the devices of the fleet that are not ready, deleted, failed or
// cancelled, as the server at url exports them.
func (k *campaign) unsettled(url, fleet string) map[string]bool {
	t := k.t
	req, err := http.NewRequest(http.MethodGet, url+"/v1/export?fleet="+fleet, nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+adminTok)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	records, err := csv.NewReader(resp.Body).ReadAll()
	require.NoError(t, err)
	require.NotEmpty(t, records)
	id, status := columnOf(t, records[0], "device_id"), columnOf(t, records[0], "status")
	out := map[string]bool{}
	for _, rec := range records[1:] {
		switch rec[status] {
		case "ready", "deleted", "failed", "cancelled":
		default:
			out[rec[id]] = true
		}
	}
	return out
}

func columnOf(t *testing.T, header []string, name string) int {
	for i, h := range header {
		if h == name {
			return i
		}
	}
	t.Fatalf("no column %s in %v", name, header)
	return -1
}

// checkLogs fails the test for every process whose output holds a cloud password the
// simulator held. Passwords are 20 base62 characters: each such run in the output is
// looked up, so the check costs one pass over the logs.
func (k *campaign) checkLogs() {
	logs := map[string]string{"sim": k.c.sim.out.String(), "reconcile output": strings.Join(k.outputs, "\n")}
	for i, p := range k.procs {
		logs[fmt.Sprintf("%s #%d", p.name, i)] = p.out.String()
	}
	leaks := 0
	for name, text := range logs {
		for _, w := range base62Windows(text, 20) {
			if k.passwords[w] {
				leaks++
				k.t.Errorf("a cloud password appears in the output of %s", name)
				break
			}
		}
	}
	k.t.Logf("log check: %d processes' output searched for %d cloud passwords: %d leak", len(logs), len(k.passwords), leaks)
}

// base62Windows returns every n-character window of the runs of base62 characters in s.
func base62Windows(s string, n int) []string {
	var out []string
	runStart := -1
	for i := 0; i <= len(s); i++ {
		if i < len(s) && isBase62(s[i]) {
			if runStart < 0 {
				runStart = i
			}
			continue
		}
		if runStart >= 0 {
			for j := runStart; j+n <= i; j++ {
				out = append(out, s[j:j+n])
			}
			runStart = -1
		}
	}
	return out
}

func isBase62(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z'
}

// renamed gives the devices, and the devices they name, a prefix, so that rounds
// never share a device_id (export rows are keyed by it).
func renamed(prefix string, devices []device) []device {
	for i := range devices {
		devices[i].id = prefix + devices[i].id
		for j := range devices[i].allowDevices {
			devices[i].allowDevices[j] = prefix + devices[i].allowDevices[j]
		}
	}
	return devices
}

// listLen counts a report list; null or absent is 0.
func listLen(raw json.RawMessage) int {
	var list []json.RawMessage
	_ = json.Unmarshal(raw, &list)
	return len(list)
}

// campaignEnv reads a non-negative number from the environment, def when unset.
func campaignEnv(t *testing.T, name string, def uint64) uint64 {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.ParseUint(v, 10, 64)
	require.NoError(t, err, "%s=%q", name, v)
	return n
}
