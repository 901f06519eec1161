package main

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/vncfleet/vncfleet/fleet"
)

func init() { register(newRetryCmd) }

func newRetryCmd() *cobra.Command {
	var fleetName string
	var manifest int64
	var wait, now bool
	cmd := &cobra.Command{
		Use:   "retry",
		Short: "Schedule the failed devices again",
		Long: `retry asks the server to schedule its failed devices again: every fleet's, or only those of
--fleet NAME, or only those of --manifest ID. It prints how many were scheduled. --wait shows
progress on stderr and returns when they are settled: exit 1 if any failed again. --now also
takes the devices waiting out a backoff (after transient errors such as 503s, or between
readiness polls) out of it, so they are tried at once. An unknown fleet or manifest is
"not found" (exit 2).`,
		Example: `  vncfleet retry --manifest 12 --wait
  vncfleet retry --fleet factory`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if manifest < 0 {
				return withExit(exitBadInput, errors.New("--manifest must be a positive number"))
			}
			client, err := apiClient(cmd)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			res, err := client.RetryWith(ctx, fleetName, manifest, now)
			if err != nil {
				return apiExit(err)
			}
			out := cmd.OutOrStdout()
			if res.Key != "" {
				fmt.Fprintf(out, "%s again (work %s)\n", retried(res.Retried, now), res.Key)
			} else {
				fmt.Fprintf(out, "%s again\n", retried(res.Retried, now))
			}
			switch {
			case !wait || res.Retried == 0:
				return nil
			case res.Key != "":
				return waitWork(ctx, cmd, client, res.Key)
			case manifest > 0:
				return waitManifest(ctx, cmd, client, manifest)
			}
			return withExit(exitBadInput, errors.New("the server named no work to wait for; use vncfleet status to follow the retried devices"))
		},
	}
	cmd.Flags().StringVar(&fleetName, "fleet", "", "only this fleet's failed devices (default: every fleet)")
	cmd.Flags().Int64Var(&manifest, "manifest", 0, "only the failed devices of this manifest")
	cmd.Flags().BoolVar(&now, "now", false, "also take the devices waiting out a backoff out of it, so they are tried at once")
	cmd.Flags().BoolVar(&wait, "wait", false, "show progress and return when the retried devices are settled (exit 1 if any failed)")
	return cmd
}

// retried says how many devices a retry scheduled: "3 failed devices scheduled".
func retried(n int, now bool) string {
	what := "failed device"
	if now {
		what = "failed or waiting device"
	}
	return fleet.Plural(n, what) + " scheduled"
}
