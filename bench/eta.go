package main

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"strings"
	"time"

	"github.com/vncfleet/vncfleet/internal/progress"
)

// etaSample is one poll of a manifest's progress, as `upload --wait` polls it.
type etaSample struct {
	at       time.Duration // since the upload was answered
	settled  int
	total    int
	byStatus map[string]int
}

// benchETA: how far off the ETA is early in a run. One run provisions the devices
// at the rate, polled every second as `upload --wait` polls; the samples are then
// replayed through the ETA rule (progress: calls owed at the rate achieved, the
// budget until measured) and through the rule it replaced (devices left at the
// devices settled per second over 30 s, hidden for the first 10 s), the baseline,
// in the same run. A ratio is the run's length the ETA predicted (time elapsed plus
// the ETA) over its real length, or the inverse when under 1: 1 is exact.
func benchETA(baseURL string, devices int, rate float64, readyDelay time.Duration) error {
	ctx := context.Background()
	sc, err := newScenario(ctx, baseURL, "vncfleet_bench_eta", readyDelay, 0)
	if err != nil {
		return err
	}
	defer sc.done()
	r, err := sc.rig(ctx, rate)
	if err != nil {
		return err
	}
	defer r.close()

	var b strings.Builder
	b.WriteString("device_id,action,groups\n")
	for i := range devices {
		fmt.Fprintf(&b, "dev-%07d,connect,line-%04d\n", i, i/20)
	}
	var up struct {
		Manifest struct {
			ID int64 `json:"id"`
		} `json:"manifest"`
	}
	if err := r.request(ctx, http.MethodPost, "/v1/manifests?fleet=bench", "text/csv", b.String(), &up); err != nil {
		return err
	}
	start := time.Now()
	var samples []etaSample
	for {
		var p struct {
			Total, Settled, Failed, Staged int
			Done                           bool
			ByStatus                       map[string]int
		}
		if err := r.request(ctx, http.MethodGet, fmt.Sprintf("/v1/manifests/%d?no_groups=true", up.Manifest.ID), "", "", &p); err != nil {
			return err
		}
		if p.ByStatus == nil {
			p.ByStatus = map[string]int{}
		}
		p.ByStatus["staged"] = p.Staged
		samples = append(samples, etaSample{time.Since(start), p.Settled, p.Total, p.ByStatus})
		if p.Done {
			if p.Failed > 0 {
				return fmt.Errorf("%d devices failed", p.Failed)
			}
			break
		}
		time.Sleep(time.Second)
	}
	took := samples[len(samples)-1].at

	calls := replayETA(samples, took, func() func(s etaSample) (time.Duration, bool) {
		var pace progress.Pace
		return func(s etaSample) (time.Duration, bool) {
			owed := progress.CallsOwed(s.byStatus)
			pace.Observe(time.Unix(0, 0).Add(s.at), owed, s.settled)
			return pace.ETA(owed, rate, 0)
		}
	}())
	old := replayETA(samples, took, func() func(s etaSample) (time.Duration, bool) {
		var window []etaSample
		return func(s etaSample) (time.Duration, bool) {
			window = append(window, s)
			for len(window) > 1 && s.at-window[1].at >= progress.DefaultWindow {
				window = window[1:]
			}
			first := window[0]
			span := s.at - first.at
			if span < progress.DefaultWindow/3 || s.settled <= first.settled {
				return 0, false
			}
			perSecond := float64(s.settled-first.settled) / span.Seconds()
			return time.Duration(float64(s.total-s.settled) / perSecond * float64(time.Second)), true
		}
	}())
	fmt.Printf("eta: %d devices at %g/s, readiness delay %s: took %.1fs, %d polls\n", devices, rate, readyDelay, took.Seconds(), len(samples))
	fmt.Printf("  calls rule (now):        %s\n", calls)
	fmt.Printf("  devices rule (baseline): %s\n", old)
	if calls.shown > 0 && old.shown > 0 {
		fmt.Printf("  the first ETA shown, calls rule vs baseline: at %.0fs off by %.2f vs at %.0fs off by %.2f\n",
			calls.firstAt.Seconds(), calls.firstRatio, old.firstAt.Seconds(), old.firstRatio)
	}
	if calls.worst > 0 && old.worst > 0 {
		fmt.Printf("  worst ratio in the first half, calls rule vs baseline: %.2f vs %.2f (%.1fx closer)\n", calls.worst, old.worst, old.worst/calls.worst)
	}
	return nil
}

type etaReplay struct {
	shown, firstHalf int
	firstAt          time.Duration
	firstRatio       float64
	worst            float64 // the worst ratio in the first half of the run
}

func (e etaReplay) String() string {
	if e.shown == 0 {
		return "no ETA shown"
	}
	return fmt.Sprintf("first ETA at %.0fs (ratio %.2f); %d polls of the first half with an ETA, worst ratio %.2f; %d in all",
		e.firstAt.Seconds(), e.firstRatio, e.firstHalf, e.worst, e.shown)
}

func replayETA(samples []etaSample, took time.Duration, eta func(etaSample) (time.Duration, bool)) etaReplay {
	var e etaReplay
	for _, s := range samples {
		d, ok := eta(s)
		if !ok || s.settled == s.total {
			continue
		}
		ratio := (s.at + d).Seconds() / took.Seconds()
		if ratio < 1 {
			ratio = 1 / ratio
		}
		if e.shown == 0 {
			e.firstAt, e.firstRatio = s.at, ratio
		}
		e.shown++
		if s.at <= took/2 {
			e.firstHalf++
			e.worst = math.Max(e.worst, ratio)
		}
	}
	return e
}
