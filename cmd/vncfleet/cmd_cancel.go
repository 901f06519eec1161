package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/vncfleet/vncfleet/fleet"
	"github.com/vncfleet/vncfleet/internal/apiclient"
)

func init() { register(newCancelCmd) }

// cancelRecheck is how often cancel asks again while calls are still in flight.
const cancelRecheck = 500 * time.Millisecond

func newCancelCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "cancel MANIFEST_ID",
		Short: "Stop a manifest's owed work safely",
		Long: `cancel stops the work a manifest still owes the cloud. No call is cut off: calls in
flight finish and their results are kept, and cancel waits for them (asking again until none
is left). Devices created stay created; those whose create, update or delete had not started
say "cancelled". It ends with the manifest's devices by status: what was done.`,
		Example: `  vncfleet cancel 12`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := strconv.ParseInt(args[0], 10, 64)
			if err != nil || id <= 0 {
				return withExit(exitBadInput, errors.New("MANIFEST_ID must be a positive number"))
			}
			client, err := apiClient(cmd)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			res, err := cancelUntilSettled(ctx, client, id, func(inFlight int) {
				fmt.Fprintf(cmd.ErrOrStderr(), "waiting for %s in flight to finish\n", fleet.Plural(inFlight, "call"))
			})
			if err != nil {
				return apiExit(err)
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "manifest %d cancelled: %s will not be provisioned\n", id, fleet.Plural(res.ByStatus["cancelled"], "device"))
			statuses := make([]string, 0, len(res.ByStatus))
			for s := range res.ByStatus {
				statuses = append(statuses, s)
			}
			slices.Sort(statuses)
			for _, s := range statuses {
				fmt.Fprintf(out, "  %-15s %d\n", s, res.ByStatus[s])
			}
			return nil
		},
	}
}

// cancelUntilSettled cancels, then cancels again while calls are in flight, so that a
// result that left work owed (a transient failure's retry) is dropped too.
func cancelUntilSettled(ctx context.Context, client *apiclient.Client, id int64, waiting func(inFlight int)) (*apiclient.CancelResult, error) {
	for said := -1; ; {
		res, err := client.Cancel(ctx, id)
		if err != nil {
			return nil, err
		}
		if res.InFlight == 0 {
			return res, nil
		}
		if res.InFlight != said {
			waiting(res.InFlight)
			said = res.InFlight
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(cancelRecheck):
		}
	}
}
