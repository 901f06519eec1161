package main

import (
	"context"
	"fmt"
	"runtime"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
)

// Absolute figures do not carry from one machine to another (issue 12), so every
// scenario says where it ran, and compares itself with a baseline measured in the
// same run on the same database: psql \copy for ingest, River's own no-op jobs for
// throughput, VNCCLOUD_RATE for the rate budget.

// printMachine prints the core count and the Go and PostgreSQL versions.
func printMachine(ctx context.Context, baseURL string) error {
	conn, err := pgx.Connect(ctx, baseURL)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer conn.Close(ctx)
	var pgVersion string
	if err := conn.QueryRow(ctx, `SHOW server_version`).Scan(&pgVersion); err != nil {
		return err
	}
	fmt.Printf("machine: %d cores (GOMAXPROCS %d), %s, PostgreSQL %s\n", runtime.NumCPU(), runtime.GOMAXPROCS(0), runtime.Version(), pgVersion)
	return nil
}

// noopArgs is the job of the River baseline: it does nothing, in a queue of its own
// (the periodic jobs vncfleet left behind stay out of it).
type noopArgs struct{}

func (noopArgs) Kind() string { return "bench_noop" }

func (noopArgs) InsertOpts() river.InsertOpts { return river.InsertOpts{Queue: noopQueue} }

const noopQueue = "bench_noop"

// noopWorkers is the baseline's River workers: enough that the number of workers is
// not what limits it (with vncfleet's 20, River's fetch cooldown of 100 ms caps a
// no-op queue at 200 jobs/s; vncfleet's jobs each work a batch of devices).
const noopWorkers = 1000

type noopWorker struct {
	river.WorkerDefaults[noopArgs]
}

func (noopWorker) Work(context.Context, *river.Job[noopArgs]) error { return nil }

// riverNoopThroughput is River's own ceiling here: n no-op jobs inserted with one
// InsertMany and worked by one client of noopWorkers workers (River's defaults
// otherwise), on pool's database; jobs per second from the insert to the last
// completion.
func riverNoopThroughput(ctx context.Context, pool *pgxpool.Pool, n int) (float64, error) {
	workers := river.NewWorkers()
	river.AddWorker(workers, noopWorker{})
	client, err := river.NewClient(riverpgxv5.New(pool), &river.Config{
		Queues:  map[string]river.QueueConfig{noopQueue: {MaxWorkers: noopWorkers}},
		Workers: workers,
	})
	if err != nil {
		return 0, err
	}
	completed, cancel := client.SubscribeConfig(&river.SubscribeConfig{ChanSize: n, Kinds: []river.EventKind{river.EventKindJobCompleted}})
	defer cancel()
	if err := client.Start(ctx); err != nil {
		return 0, err
	}
	defer func() { _ = client.Stop(context.WithoutCancel(ctx)) }()
	params := make([]river.InsertManyParams, n)
	for i := range params {
		params[i] = river.InsertManyParams{Args: noopArgs{}}
	}
	start := time.Now()
	if _, err := client.InsertMany(ctx, params); err != nil {
		return 0, err
	}
	timeout := time.After(10 * time.Minute)
	for done := 0; done < n; {
		select {
		case <-completed:
			done++
		case <-timeout:
			return 0, fmt.Errorf("river baseline: %d of %d no-op jobs completed in 10 minutes", done, n)
		}
	}
	return float64(n) / time.Since(start).Seconds(), nil
}
