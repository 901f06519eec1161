package main

import (
	"github.com/spf13/cobra"
)

func init() { register(newReportCmd) }

func newReportCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "report MANIFEST_ID",
		Short: "The manifest's per-row result CSV on stdout",
		Long: `report streams the per-row results of manifest MANIFEST_ID to stdout, in the manifest's
line order: device_id,status,cloud_address,error,vnc_url. An unknown manifest is "not
found" (exit 2). Error cells that a spreadsheet would read as a formula are prefixed with '.`,
		Example: `  vncfleet report 12 > manifest-12.csv`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := parseManifestID(args[0])
			if err != nil {
				return err
			}
			client, err := apiClient(cmd)
			if err != nil {
				return err
			}
			return apiExit(client.Report(cmd.Context(), id, cmd.OutOrStdout()))
		},
	}
}
