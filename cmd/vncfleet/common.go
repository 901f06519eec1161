package main

import (
	"errors"
	"log/slog"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/vncfleet/vncfleet/internal/app"
	"github.com/vncfleet/vncfleet/internal/config"
)

// loadConfig reads --config (if given) and the environment, which wins over the file.
func loadConfig(cmd *cobra.Command) (*config.Config, error) {
	path, _ := cmd.Flags().GetString("config")
	cfg, err := config.Load(path, nil)
	if err != nil {
		return nil, withExit(exitBadInput, err)
	}
	return cfg, nil
}

// newLogger builds the process logger: text or JSON on stderr at the configured level.
func newLogger(cfg *config.Config) *slog.Logger {
	var level slog.Level
	if err := level.UnmarshalText([]byte(cfg.LogLevel)); err != nil {
		level = slog.LevelInfo
	}
	opts := &slog.HandlerOptions{Level: level}
	if strings.EqualFold(cfg.LogFormat, "json") {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts))
}

// exitFor maps an error from wiring to the contract's exit codes.
func exitFor(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, app.ErrUnreachable) {
		return withExit(exitUnreachable, err)
	}
	if errors.Is(err, app.ErrBadConfig) {
		return withExit(exitBadInput, err)
	}
	return err
}
