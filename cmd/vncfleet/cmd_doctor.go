package main

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/vncfleet/vncfleet/internal/app"
	"github.com/vncfleet/vncfleet/internal/doctor"
)

func init() { register(newDoctorCmd) }

func newDoctorCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "doctor",
		Short: "Check that this configuration can work: database, secret key, credentials, clock, webhook",
		Long: `doctor checks what serve needs, with the same configuration (environment, --config),
and prints one line per check:

  database    reachable and migrated (else: run vncfleet migrate)
  secret key  VNCFLEET_SECRET_KEY opens a sample of the stored passwords
  VNC Cloud   the credentials are accepted (one cheap list call)
  Zenlayer    the credentials are accepted, when configured
  clock       this machine's clock is within 5 s of the database's
  webhook     VNCFLEET_WEBHOOK_URL accepts connections, when configured

It changes nothing. Exit 0 when no check fails, 1 when one does. serve runs the same
checks when it starts, logs one line each, and refuses to start when the database, the
secret key or the VNC Cloud credentials cannot work.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig(cmd)
			if err != nil {
				return err
			}
			pool, poolErr := app.OpenPool(cmd.Context(), cfg.DatabaseURL)
			if pool != nil {
				defer pool.Close()
			}
			results := app.SelfCheck(cmd.Context(), cfg, pool, poolErr, nil)
			for _, r := range results {
				fmt.Fprintln(cmd.OutOrStdout(), r)
			}
			if failed, _ := doctor.Failed(results); failed {
				return withExit(exitSomeFailed, errors.New("a check failed: see its line above"))
			}
			return nil
		},
	}
}
