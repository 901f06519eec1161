package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/vncfleet/vncfleet/internal/app"
	"github.com/vncfleet/vncfleet/migrations"
)

func init() { register(newMigrateCmd) }

func newMigrateCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "migrate",
		Short: "Apply River's and vncfleet's migrations to DATABASE_URL (idempotent)",
		Long: `migrate applies River's migrations and then vncfleet's own to the database at
DATABASE_URL. Running it again applies nothing; several processes may run it at once
(an advisory lock serialises them).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig(cmd)
			if err != nil {
				return err
			}
			logger := newLogger(cfg)
			pool, err := app.OpenPool(cmd.Context(), cfg.DatabaseURL)
			if err != nil {
				return exitFor(err)
			}
			defer pool.Close()
			res, err := migrations.Migrate(cmd.Context(), pool, logger)
			if err != nil {
				return withExit(exitUnreachable, err)
			}
			fmt.Fprintln(cmd.OutOrStdout(), res)
			return nil
		},
	}
}
