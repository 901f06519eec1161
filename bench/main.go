// Command bench measures vncfleet on this machine and prints the figures the issues
// name. It is not a test: nothing here fails on timing.
//
//	go run ./bench ingest     --rows 1000000   # manifest ingest vs psql \copy: time and peak RSS
//	go run ./bench throughput --devices 20000  # devices/s end to end, no rate cap, simulator in-process
//	go run ./bench calls      --devices 2000 [--ready-jitter 0.5]  # API calls per device, 1 s readiness delay (± 50%)
//	go run ./bench rotation   --devices 10000  # rotation throughput as a share of VNCCLOUD_RATE
//	go run ./bench scrape     --devices 1000000 # cost of one GET /metrics, and of the gauges' background reading
//	go run ./bench views      --devices 1000000 # status, export and reconciliation of one fleet of ready devices
//	go run ./bench console    --requests 2000  # a console request with its session in PostgreSQL vs the bearer token's
//	go run ./bench eta        --devices 400    # how far off the ETA is early in a run, against the rule it replaced
//	go run ./bench rate       --devices 10000 --rate 200 # share of VNCCLOUD_RATE used: sim and two serve as processes
//
// Each scenario uses a database of its own (vncfleet_bench_*_PID), dropped afterwards.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"runtime/pprof"
	"time"

	"github.com/vncfleet/vncfleet/internal/console"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	scenario, args := os.Args[1], os.Args[2:]
	fs := flag.NewFlagSet(scenario, flag.ExitOnError)
	base := fs.String("database", envOr("BENCH_DATABASE_URL", "postgres:///postgres?host=/var/run/postgresql"),
		"PostgreSQL server to create the benchmark database on")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the whole run to this file")
	var err error
	defer func() {
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
	}()
	startProfile := func() {
		if *cpuProfile == "" {
			return
		}
		f, ferr := os.Create(*cpuProfile)
		if ferr == nil {
			ferr = pprof.StartCPUProfile(f)
		}
		if ferr != nil {
			fmt.Fprintln(os.Stderr, "bench: cpu profile:", ferr)
			os.Exit(1)
		}
	}
	defer pprof.StopCPUProfile()
	// begin starts a scenario whose flags are parsed: where it runs, then the profile.
	begin := func() bool {
		if err = printMachine(context.Background(), *base); err != nil {
			return false
		}
		startProfile()
		return true
	}
	switch scenario {
	case "ingest":
		rows := fs.Int("rows", 1_000_000, "manifest rows")
		keep := fs.Bool("keep", false, "keep the database afterwards (to look into it)")
		_ = fs.Parse(args)
		if begin() {
			err = benchIngest(*base, *rows, *keep)
		}
	case "throughput":
		devices := fs.Int("devices", 20_000, "devices to provision")
		_ = fs.Parse(args)
		if begin() {
			err = benchThroughput(*base, *devices)
		}
	case "calls":
		devices := fs.Int("devices", 2_000, "devices to provision")
		delay := fs.Duration("ready-delay", 1e9, "simulator readiness delay")
		jitter := fs.Float64("ready-jitter", 0, "spread of the readiness delay: each drawn in ready-delay × [1-F, 1+F]")
		_ = fs.Parse(args)
		if begin() {
			err = benchCalls(*base, *devices, *delay, *jitter)
		}
	case "rotation":
		devices := fs.Int("devices", 10_000, "devices to rotate")
		rate := fs.Float64("rate", 50, "VNCCLOUD_RATE for the run")
		_ = fs.Parse(args)
		if begin() {
			err = benchRotation(*base, *devices, *rate)
		}
	case "rate":
		devices := fs.Int("devices", 10_000, "devices to provision, then rotate")
		rate := fs.Float64("rate", 200, "VNCCLOUD_RATE for the run")
		delay := fs.Duration("ready-delay", time.Second, "simulator readiness delay")
		binary := fs.String("binary", "", "run serve and the CLI from this vncfleet binary (default: build this tree)")
		simNice := fs.Int("sim-nice", 0, "run the simulator at this nice value (negative: ahead of the processes it measures; needs the privilege)")
		_ = fs.Parse(args)
		if begin() {
			err = benchRate(*base, *devices, *rate, *delay, *binary, *simNice)
		}
	case "scrape":
		devices := fs.Int("devices", 1_000_000, "devices in the database")
		fleets := fs.Int("fleets", 10, "fleets they belong to")
		scrapes := fs.Int("scrapes", 50, "scrapes to time")
		_ = fs.Parse(args)
		if begin() {
			err = benchScrape(*base, *devices, *fleets, *scrapes)
		}
	case "views":
		devices := fs.Int("devices", 1_000_000, "ready devices in the fleet")
		reconcile := fs.Bool("reconcile", true, "also measure serve's peak RSS in a dry-run reconciliation (a simulator process holds the addresses)")
		keep := fs.Bool("keep", false, "keep the database afterwards (to look into it)")
		_ = fs.Parse(args)
		if begin() {
			err = benchViews(*base, *devices, *reconcile, *keep)
		}
	case "simhelper": // the simulator process of the views scenario
		addresses := fs.Int("addresses", 0, "addresses to hold")
		list := fs.String("list", "", "file to write them to, one a line")
		_ = fs.Parse(args)
		err = simHelper(*addresses, *list)
	case "console":
		requests := fs.Int("requests", 2000, "requests of each kind to time")
		sessions := fs.Int("sessions", console.DefaultMaxSessions-1, "other sessions in the table")
		_ = fs.Parse(args)
		if begin() {
			err = benchConsole(*base, *requests, *sessions)
		}
	case "eta":
		devices := fs.Int("devices", 400, "devices to provision")
		rate := fs.Float64("rate", 20, "VNCCLOUD_RATE for the run")
		delay := fs.Duration("ready-delay", 2e9, "simulator readiness delay")
		_ = fs.Parse(args)
		if begin() {
			err = benchETA(*base, *devices, *rate, *delay)
		}
	default:
		usage()
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: go run ./bench ingest|throughput|calls|rotation|rate|scrape|views|console|eta [flags]")
	os.Exit(2)
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
