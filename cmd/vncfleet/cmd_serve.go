package main

import (
	"context"
	"fmt"
	"net"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/vncfleet/vncfleet/internal/app"
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
It refuses to start without VNCFLEET_SECRET_KEY or on an unmigrated database.
With VNCFLEET_TLS_CERT_FILE and VNCFLEET_TLS_KEY_FILE it answers HTTPS only (TLS 1.2+),
reading the files again when they change.
,
GET /metrics serves Prometheus metrics; OpenTelemetry traces are exported by OTLP/HTTP
when OTEL_EXPORTER_OTLP_ENDPOINT is set.`,
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
			stopTracing, err := tracing.Start(ctx, vnccloud.Version)
			if err != nil {
				return withExit(exitBadInput, err)
			}
			defer func() { _ = stopTracing(context.WithoutCancel(ctx)) }() // flushes the last spans
			w, err := app.NewWorker(ctx, pool, cfg, app.Options{Logger: logger})
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
