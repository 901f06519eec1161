package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os/signal"
	"strings"
	"syscall"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/spf13/cobra"

	"github.com/vncfleet/vncfleet/internal/app"
	"github.com/vncfleet/vncfleet/internal/config"
	"github.com/vncfleet/vncfleet/internal/doctor"
	"github.com/vncfleet/vncfleet/internal/metrics"
	"github.com/vncfleet/vncfleet/internal/tracing"
	"github.com/vncfleet/vncfleet/vnccloud"
)

func init() { register(newServeCmd) }

func newServeCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "serve",
		Short: "Run the HTTP API and the River workers until SIGINT/SIGTERM",
		Long: `serve runs the HTTP API on VNCFLEET_LISTEN and the River workers, periodic jobs
included. Several serve processes on one database share the work. On SIGINT or SIGTERM it
stops fetching jobs, lets in-flight calls finish within the shutdown timeout, and exits 0.
At start it runs the checks of vncfleet doctor and logs one line each; it refuses to start
(exit 2, or 3 for the database) when the database is unmigrated, the secret key is missing
or opens none of the stored passwords, or VNC Cloud refuses the credentials.
With VNCFLEET_TLS_CERT_FILE and VNCFLEET_TLS_KEY_FILE it answers HTTPS only (TLS 1.2+),
reading the files again when they change. GET /metrics serves Prometheus metrics;
OpenTelemetry traces are exported by OTLP/HTTP when OTEL_EXPORTER_OTLP_ENDPOINT is set.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig(cmd)
			if err != nil {
				return err
			}
			logger := newLogger(cfg)
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			pool, err := app.OpenPool(ctx, cfg.DatabaseURL)
			if err != nil {
				return exitFor(err)
			}
			defer pool.Close()
			met := metrics.New()
			if err := selfCheck(ctx, cfg, pool, logger, met); err != nil {
				return err
			}
			stopTracing, err := tracing.Start(ctx, vnccloud.Version)
			if err != nil {
				return withExit(exitBadInput, err)
			}
			defer func() { _ = stopTracing(context.WithoutCancel(ctx)) }() // flushes the last spans
			w, err := app.NewWorker(ctx, pool, cfg, app.Options{Logger: logger, Metrics: met})
			if err != nil {
				return withExit(exitBadInput, err)
			}
			if err := w.Store.Ping(ctx); err != nil {
				return withExit(exitUnreachable, err)
			}
			ln, err := net.Listen("tcp", cfg.Listen)
			if err != nil {
				return withExit(exitUnreachable, fmt.Errorf("listen on %s: %w", cfg.Listen, err))
			}
			return exitFor(w.Serve(ctx, ln, cfg.Workers.ShutdownTimeout, logger))
		},
	}
}

// selfCheck runs doctor's checks, logs one line each, and refuses to start when a
// fatal one fails: exit 3 when it is the database, 2 (configuration) otherwise.
func selfCheck(ctx context.Context, cfg *config.Config, pool *pgxpool.Pool, logger *slog.Logger, met *metrics.Metrics) error {
	results := app.SelfCheck(ctx, cfg, pool, nil, met)
	var fatal []string
	code := exitBadInput
	for _, r := range results {
		level := slog.LevelInfo
		switch {
		case r.Outcome == doctor.Fail && r.Fatal:
			level = slog.LevelError
			fatal = append(fatal, r.Name+": "+r.Detail)
			if r.Name == "database" {
				code = exitUnreachable
			}
		case r.Outcome == doctor.Fail, r.Outcome == doctor.Warn:
			level = slog.LevelWarn
		}
		logger.Log(ctx, level, "self-check "+r.Name+": "+string(r.Outcome)+": "+r.Detail)
	}
	if len(fatal) > 0 {
		return withExit(code, fmt.Errorf("serve cannot work and does not start: %s", strings.Join(fatal, "; ")))
	}
	return nil
}
