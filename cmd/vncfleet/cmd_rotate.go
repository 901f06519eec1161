package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/vncfleet/vncfleet/fleet"
	"github.com/vncfleet/vncfleet/internal/apiclient"
)

func init() { register(newRotateCmd) }

func newRotateCmd() *cobra.Command {
	var fleetName string
	var all, wait bool
	cmd := &cobra.Command{
		Use:   "rotate",
		Short: "Rotate now the passwords the schedule would rotate (--all: every device)",
		Long: `rotate asks the server to reset now the cloud passwords that the rotation schedule would
reset next (those that are due), or with --all those of every ready device. It prints how many
rotations were scheduled. --wait shows progress on stderr and returns when every rotation is
settled: exit 1 if any device failed.`,
		Example: `  vncfleet rotate --fleet factory
  vncfleet rotate --all --wait`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			client, err := apiClient(cmd)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			res, err := client.Rotate(ctx, fleetName, all)
			if err != nil {
				return apiExit(err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s scheduled (work %s)\n", fleet.Plural(res.Scheduled, "rotation"), res.Key)
			if !wait || res.Scheduled == 0 {
				return nil
			}
			return waitWork(ctx, cmd, client, res.Key)
		},
	}
	cmd.Flags().StringVar(&fleetName, "fleet", "", "only this fleet (default: every fleet)")
	cmd.Flags().BoolVar(&all, "all", false, "rotate every ready device, not only those whose password is due")
	cmd.Flags().BoolVar(&wait, "wait", false, "show progress and return when every rotation is settled (exit 1 if any failed)")
	return cmd
}

// waitWork waits until the work named key (a rotation, a retry) is settled, prints
// its counts per status, and returns exit 1 if any device failed.
func waitWork(ctx context.Context, cmd *cobra.Command, client *apiclient.Client, key string) error {
	label := "work " + key
	var seen cloudSeen
	p, err := pollUntilDone(ctx, cmd, label, &seen, func(ctx context.Context) (*apiclient.Progress, error) { return client.WorkProgress(ctx, key) })
	if err != nil {
		return err
	}
	printSettled(cmd.OutOrStdout(), label, p, &seen)
	if n := failedOf(p); n > 0 {
		return withExit(exitSomeFailed, errors.New(devicesFailed(n, p.Total)))
	}
	return nil
}

// devicesFailed is a wait's failures: "1 of 3 devices failed".
func devicesFailed(failed, total int) string {
	return fmt.Sprintf("%d of %s failed", failed, fleet.Plural(total, "device"))
}

// failedOf counts the failed devices; work progress has no "failed" field, only counts.
func failedOf(p *apiclient.Progress) int { return max(p.Failed, p.ByStatus["failed"]) }
