package main

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/vncfleet/vncfleet/migrations"
)

// ownName makes a scenario's database name this process's own, so that benchmarks
// run at once on one server (by several people) do not drop each other's databases.
func ownName(name string) string { return fmt.Sprintf("%s_%d", name, os.Getpid()) }

// emptyDatabase drops and creates database name on the server of baseURL and returns
// its URL; nothing is migrated (a scenario running another build migrates with it).
func emptyDatabase(ctx context.Context, baseURL, name string) (string, error) {
	name = ownName(name)
	admin, err := pgx.Connect(ctx, baseURL)
	if err != nil {
		return "", fmt.Errorf("connect: %w", err)
	}
	defer admin.Close(ctx)
	ident := pgx.Identifier{name}.Sanitize()
	if _, err := admin.Exec(ctx, "DROP DATABASE IF EXISTS "+ident+" WITH (FORCE)"); err != nil {
		return "", err
	}
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+ident); err != nil {
		return "", err
	}
	return withDatabase(baseURL, name), nil
}

// freshDatabase drops and creates database name on the server of baseURL, migrates
// it, and returns its URL and a pool.
func freshDatabase(ctx context.Context, baseURL, name string) (string, *pgxpool.Pool, error) {
	if _, err := emptyDatabase(ctx, baseURL, name); err != nil {
		return "", nil, err
	}
	name = ownName(name)
	cfg, err := pgxpool.ParseConfig(baseURL)
	if err != nil {
		return "", nil, err
	}
	cfg.ConnConfig.Database = name
	cfg.MaxConns = 40
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return "", nil, err
	}
	if _, err := migrations.Migrate(ctx, pool, slog.New(slog.DiscardHandler)); err != nil {
		pool.Close()
		return "", nil, fmt.Errorf("migrate: %w", err)
	}
	return withDatabase(baseURL, name), pool, nil
}

// withDatabase swaps the database of a postgres:// URL.
func withDatabase(url, name string) string {
	rest, query, _ := strings.Cut(url, "?")
	i := strings.LastIndex(rest, "/")
	return rest[:i+1] + name + "?" + query
}

func dropDatabase(ctx context.Context, baseURL, name string) {
	name = ownName(name)
	admin, err := pgx.Connect(ctx, baseURL)
	if err != nil {
		return
	}
	defer admin.Close(ctx)
	_, _ = admin.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)")
}

// peakRSS is this process's peak resident set size, from /proc/self/status.
func peakRSS() string {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return "unknown"
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}
