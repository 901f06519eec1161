package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/vncfleet/vncfleet/internal/procrun"
	"github.com/vncfleet/vncfleet/internal/sim"
)

// The rate scenario runs vncfleet as it is deployed: the simulator (1 s readiness
// delay, no cap of its own) and two `serve` processes as separate processes, sharing
// VNCCLOUD_RATE through the database, with `vncfleet upload --wait` and `vncfleet
// rotate --all --wait` as an operator types them. Its baseline is the cap itself:
// the share of rate × duration the simulator received. Settings are the defaults but
// for the rate and the two schedules (scheduled rotation and reconciliation are off,
// so that a cron tick in the middle of a run does not spend budget that is measured).

// rateRun is what one phase of the scenario (provisioning, rotation) measured, from
// the simulator's own arrival times.
type rateRun struct {
	devices  int
	requests []sim.Request // the phase's API requests, in arrival order
	stored   time.Time     // when the work was stored (manifest committed, rotation scheduled)
	workOp   string        // the operation that starts each device's work: create, reset
	took     time.Duration // from the CLI's start to its exit
}

// busiest is the most requests in any sliding second (t-1s, t], the simulator's own
// window, and the end of the first window that held them.
func busiest(reqs []sim.Request) (most int, at time.Time) {
	head := 0
	for i, r := range reqs {
		for !reqs[head].At.After(r.At.Add(-time.Second)) {
			head++
		}
		if i-head+1 > most {
			most, at = i-head+1, r.At
		}
	}
	return most, at
}

func (r rateRun) print(name string, rate float64) {
	if len(r.requests) == 0 {
		fmt.Printf("%s: no API requests\n", name)
		return
	}
	first, last := r.requests[0].At, r.requests[len(r.requests)-1].At
	span := last.Sub(first)
	var firstWork, lastWork time.Time
	counts := map[string]int{}
	for _, q := range r.requests {
		counts[q.Op]++
		if q.Op == r.workOp {
			if firstWork.IsZero() {
				firstWork = q.At
			}
			lastWork = q.At
		}
	}
	share := float64(len(r.requests)) / (rate * span.Seconds())
	ideal := time.Duration(float64(len(r.requests)) / rate * float64(time.Second))
	fmt.Printf("%s: %d devices, %d API calls = %.2f per device %v, in %.1fs from the first request to the last (at the cap: %.1fs)\n",
		name, r.devices, len(r.requests), float64(len(r.requests))/float64(r.devices), counts, span.Seconds(), ideal.Seconds())
	most, at := busiest(r.requests)
	fmt.Printf("  share of the cap: %.1f%% of VNCCLOUD_RATE=%g; busiest sliding second: %d requests (cap %d), ending %.3fs into the run\n",
		100*share, rate, most, int(rate), at.Sub(first).Seconds())
	if !r.stored.IsZero() && !firstWork.IsZero() {
		fmt.Printf("  stored → first %s: %dms; first request → first %s: %dms\n",
			r.workOp, firstWork.Sub(r.stored).Milliseconds(), r.workOp, firstWork.Sub(first).Milliseconds())
	}
	if !lastWork.IsZero() {
		fmt.Printf("  tail, last %s → last request: %dms; the CLI took %.1fs\n", r.workOp, last.Sub(lastWork).Milliseconds(), r.took.Seconds())
	}
	fmt.Printf("  requests per second, second by second (%s+others where under 95%% of the cap): %s\n",
		r.workOp, perSecond(r.requests, first, r.workOp, int(0.95*rate)))
}

// perSecond is the count of requests in each whole second from first, for seeing
// where a run left budget unspent; a second under low is split into the work
// operation and the rest (polls, GETs).
func perSecond(reqs []sim.Request, first time.Time, workOp string, low int) string {
	var counts, work []int
	for _, q := range reqs {
		i := int(q.At.Sub(first) / time.Second)
		for len(counts) <= i {
			counts, work = append(counts, 0), append(work, 0)
		}
		counts[i]++
		if q.Op == workOp {
			work[i]++
		}
	}
	parts := make([]string, len(counts))
	for i, n := range counts {
		parts[i] = fmt.Sprint(n)
		if n < low {
			parts[i] = fmt.Sprintf("%d(%d+%d)", n, work[i], n-work[i])
		}
	}
	return strings.Join(parts, " ")
}

// rateRig is the processes of the scenario.
type rateRig struct {
	binary string
	simURL string
	env    []string
	serves []*procrun.Proc
	urls   []string
	procs  []*procrun.Proc
}

func (rr *rateRig) close() {
	for _, p := range rr.procs {
		_, _ = p.Terminate(15 * time.Second)
		p.Kill()
	}
}

func (rr *rateRig) start(name string, env []string, args ...string) (*procrun.Proc, error) {
	p, err := procrun.Start(name, rr.binary, env, args...)
	if err != nil {
		return nil, err
	}
	rr.procs = append(rr.procs, p)
	return p, nil
}

// cli runs a CLI command against the first serve to its end; onLine sees each line of
// its output as it comes (with when it came).
func (rr *rateRig) cli(args []string, onLine func(string, time.Time)) (time.Duration, error) {
	env := slices.Clone(rr.env)
	if len(rr.urls) > 0 {
		env = append(env, "VNCFLEET_URL="+rr.urls[0])
	}
	p, err := procrun.Start(args[0], rr.binary, env, args...)
	if err != nil {
		return 0, err
	}
	started := time.Now()
	seen := 0
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for done := false; !done; {
		select {
		case <-p.Done:
			done = true
		case <-tick.C:
		}
		out := p.Out.String()
		for {
			nl := strings.IndexByte(out[seen:], '\n')
			if nl < 0 {
				break
			}
			if onLine != nil {
				onLine(out[seen:seen+nl], time.Now())
			}
			seen += nl + 1
		}
	}
	took := time.Since(started)
	if code, err := p.ExitCode(); err != nil || code != 0 {
		return took, fmt.Errorf("%s exited %d (%v):\n%s", strings.Join(args, " "), code, err, procrun.Tail(p.Out.String(), 2000))
	}
	return took, nil
}

func (rr *rateRig) requests(since time.Time) ([]sim.Request, error) {
	u := rr.simURL + "/sim/requests"
	if !since.IsZero() {
		u += "?since=" + url.QueryEscape(since.Format(time.RFC3339Nano))
	}
	resp, err := http.Get(u)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var l sim.RequestLog
	if err := json.NewDecoder(resp.Body).Decode(&l); err != nil {
		return nil, err
	}
	if l.Dropped > 0 {
		return nil, fmt.Errorf("the simulator's request log forgot %d requests", l.Dropped)
	}
	return l.Requests, nil
}

// storedAt finds when a serve logged "manifest stored" (JSON logs), the moment the
// upload's transaction committed.
func storedAt(serves []*procrun.Proc) time.Time {
	for _, p := range serves {
		if line := logLine(p, "manifest stored"); line != nil {
			t, _ := time.Parse(time.RFC3339Nano, fmt.Sprint(line["time"]))
			return t
		}
	}
	return time.Time{}
}

// benchRate provisions devices with two serve processes under VNCCLOUD_RATE=rate and a
// 1 s readiness delay, then rotates them all, and prints the share of the cap each
// phase used. serveBinary, when set, runs serve and the CLI from that binary (another
// build, such as main's, for a before-and-after in one sitting); the simulator is
// always this tree's.
func benchRate(baseURL string, devices int, rate float64, readyDelay time.Duration, serveBinary string, simNice int) error {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "vncfleet-bench-rate-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	simBinary, err := procrun.Build(dir, "./cmd/vncfleet")
	if err != nil {
		return err
	}
	if serveBinary == "" {
		serveBinary = simBinary
	}
	const name = "vncfleet_bench_rate"
	dbURL, err := emptyDatabase(ctx, baseURL, name)
	if err != nil {
		return err
	}
	defer dropDatabase(ctx, baseURL, name)

	rr := &rateRig{binary: serveBinary}
	defer rr.close()
	simAddr, err := procrun.FreeAddr()
	if err != nil {
		return err
	}
	rr.simURL = "http://" + simAddr
	simArgs := []string{"sim", "--account", benchKey + ":" + benchSecret, "--ready-delay", readyDelay.String(),
		"--request-log", fmt.Sprint(8*devices + 10_000)}
	name0 := simBinary
	if simNice != 0 {
		// The simulator stamps each request when its handler starts: starved of CPU by
		// the processes it measures (two cores), it stamps a stall's requests together.
		// A real API's edge is not on vncfleet's machine.
		simArgs = append([]string{"-n", fmt.Sprint(simNice), simBinary}, simArgs...)
		name0 = "nice"
		fmt.Printf("simulator at nice %d\n", simNice)
	}
	simProc, err := procrun.Start("sim", name0, []string{"VNCFLEET_SIM_LISTEN=" + simAddr}, simArgs...)
	if err != nil {
		return err
	}
	rr.procs = append(rr.procs, simProc)
	if err := simProc.WaitHealthy(rr.simURL, http.DefaultClient, 30*time.Second); err != nil {
		return err
	}
	config := filepath.Join(dir, "vncfleet.yaml")
	if err := os.WriteFile(config, []byte("rotation:\n  schedule: \"\"\nreconcile:\n  schedule: \"\"\n"), 0o600); err != nil {
		return err
	}
	rr.env = append(procrun.Env{DatabaseURL: dbURL, SimURL: rr.simURL, APIKey: benchKey, APISecret: benchSecret,
		AdminToken: benchToken, Rate: rate}.Vars(), "VNCFLEET_LOG_FORMAT=json")
	if _, err := rr.cli([]string{"migrate"}, nil); err != nil {
		return err
	}
	for i := range 2 {
		addr, err := procrun.FreeAddr()
		if err != nil {
			return err
		}
		p, err := rr.start(fmt.Sprintf("serve-%d", i+1), append(slices.Clone(rr.env), "VNCFLEET_LISTEN="+addr), "serve", "--config", config)
		if err != nil {
			return err
		}
		if err := p.WaitHealthy("http://"+addr, http.DefaultClient, 60*time.Second); err != nil {
			return err
		}
		rr.serves = append(rr.serves, p)
		rr.urls = append(rr.urls, "http://"+addr)
	}
	// Start-up calls (the doctor's credential check) are not part of the run.
	time.Sleep(time.Second)
	startUp, err := rr.requests(time.Time{})
	if err != nil {
		return err
	}
	var since time.Time
	if len(startUp) > 0 {
		since = startUp[len(startUp)-1].At
	}

	manifest := filepath.Join(dir, "manifest.csv")
	var b strings.Builder
	b.WriteString("device_id,action,groups,allow_groups\n")
	for i := range devices {
		if i%2 == 0 {
			fmt.Fprintf(&b, "dev-%07d,connect,line-%04d,\n", i, i/20)
		} else {
			fmt.Fprintf(&b, "dev-%07d,listen,,line-%04d\n", i, i/20)
		}
	}
	if err := os.WriteFile(manifest, []byte(b.String()), 0o600); err != nil {
		return err
	}
	took, err := rr.cli([]string{"upload", "--wait", "--fleet", "bench", manifest}, nil)
	if err != nil {
		return err
	}
	reqs, err := rr.requests(since)
	if err != nil {
		return err
	}
	rateRun{devices: devices, requests: reqs, stored: storedAt(rr.serves), workOp: "create", took: took}.print("provision", rate)
	if len(reqs) > 0 {
		since = reqs[len(reqs)-1].At
	}

	var scheduled time.Time
	took, err = rr.cli([]string{"rotate", "--all", "--wait"}, func(line string, at time.Time) {
		if scheduled.IsZero() && strings.Contains(line, "rotations scheduled") {
			scheduled = at
		}
	})
	if err != nil {
		return err
	}
	reqs, err = rr.requests(since)
	if err != nil {
		return err
	}
	rateRun{devices: devices, requests: reqs, stored: scheduled, workOp: "reset", took: took}.print("rotate --all", rate)
	// Where the budget went, in each process's own words (serve logs its limiter's
	// counters when it stops; builds before issue 12 do not).
	for _, p := range rr.serves {
		_, _ = p.Terminate(30 * time.Second)
		if line := logLine(p, "rate limiter: this process's share of VNCCLOUD_RATE"); line != nil {
			fmt.Printf("%s's limiter over both phases: grants %v (onboarding %v, rotation %v), %v slots leased in %v leases; late %v, unused %v, leases with an uncertain clock %v\n",
				p.Name, line["grants"], line["onboarding"], line["rotation"], line["slots"], line["leases"], line["late"], line["unused"], line["uncertain_clock"])
		}
	}
	return nil
}

// logLine is the first JSON log line of p with message msg, or nil.
func logLine(p *procrun.Proc, msg string) map[string]any {
	sc := bufio.NewScanner(strings.NewReader(p.Out.String()))
	sc.Buffer(make([]byte, 0, 1<<16), 1<<20)
	for sc.Scan() {
		var line map[string]any
		if json.Unmarshal(sc.Bytes(), &line) == nil && line["msg"] == msg {
			return line
		}
	}
	return nil
}
