package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/vncfleet/vncfleet/fleet"
	"github.com/vncfleet/vncfleet/internal/apiclient"
)

func init() { register(newExportCmd) }

func newExportCmd() *cobra.Command {
	var o apiclient.ExportOptions
	var statuses string
	cmd := &cobra.Command{
		Use:   "export",
		Short: "One CSV row per device on stdout; cloud passwords only with --secrets",
		Long: `export streams the server's device table to stdout unchanged, one CSV row per device:
device_id,action,status,cloud_address,cloud_password,groups,allow_groups,allow_devices,vnc_url,last_error

Every fleet unless --fleet, every status unless --status (a comma-separated list, e.g.
ready,failed: deleted devices stay in the table, and --status leaves them out).
--metadata adds the manifests' metadata columns (a serial number, a location...) after those,
named as in the manifests, in name order; a device without one has it empty.
cloud_password and vnc_url (a Zenlayer console URL, which opens the console by itself) are
empty unless --secrets, which needs a token with the secrets role; each such export is written
to the server's audit log, with the number of devices revealed. Cells that a spreadsheet would read as
a formula (groups, errors, metadata beginning with = + - @) are prefixed with '.

If the server fails midway (a password it cannot decrypt, its database gone), the answer is
broken off: export says the output is incomplete and exits 3. Do not use that output.`,
		Example: `  vncfleet export --fleet factory --status ready,failed > factory.csv
  vncfleet export --fleet factory --metadata --secrets > credentials.csv`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if statuses != "" {
				for _, s := range strings.Split(statuses, ",") {
					st, err := fleet.ParseStatus(strings.TrimSpace(s))
					if err != nil {
						return withExit(exitBadInput, fmt.Errorf("--status: %w (the statuses: %s)", err, strings.Join(statusOrder(), ", ")))
					}
					o.Statuses = append(o.Statuses, string(st))
				}
			}
			client, err := apiClient(cmd)
			if err != nil {
				return err
			}
			return apiExit(client.ExportWith(cmd.Context(), o, cmd.OutOrStdout()))
		},
	}
	cmd.Flags().StringVar(&o.Fleet, "fleet", "", "only this fleet (default: every fleet)")
	cmd.Flags().StringVar(&statuses, "status", "", "only devices in these statuses, comma-separated, e.g. ready,failed (default: every status)")
	cmd.Flags().BoolVar(&o.Metadata, "metadata", false, "add the manifests' metadata columns after the contract's")
	cmd.Flags().BoolVar(&o.Secrets, "secrets", false, "include the cloud passwords and console URLs (needs the secrets role; audited)")
	return cmd
}
