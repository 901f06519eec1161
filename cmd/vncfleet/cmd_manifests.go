package main

import (
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"
)

func init() { register(newManifestsCmd) }

func newManifestsCmd() *cobra.Command {
	var fleetName string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "manifests",
		Short: "The stored manifests, newest first",
		Long: `manifests lists the manifests the server stored, newest first (the last 100): id, fleet,
mode, rows, who uploaded it and when. Every fleet's unless --fleet; an unknown fleet is
"not found" (exit 2). Rejected, dry-run and unchanged uploads store no manifest.`,
		Example: `  vncfleet manifests --fleet factory
  vncfleet manifests --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			client, err := apiClient(cmd)
			if err != nil {
				return err
			}
			ms, err := client.Manifests(cmd.Context(), fleetName)
			if err != nil {
				return apiExit(err)
			}
			out := cmd.OutOrStdout()
			if asJSON {
				return writeJSON(out, ms)
			}
			if len(ms) == 0 {
				fmt.Fprintln(out, "no manifests stored yet")
				return nil
			}
			tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tFLEET\tMODE\tROWS\tUPLOADED\tBY")
			for _, m := range ms {
				fmt.Fprintf(tw, "#%d\t%s\t%s\t%d\t%s\t%s\n", m.ID, m.Fleet, m.Mode, m.Rows,
					m.UploadedAt.Local().Format("2006-01-02 15:04:05"), oneLine(m.Uploader))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().StringVar(&fleetName, "fleet", "", "only this fleet's manifests (default: every fleet)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the server's answer as JSON instead of a table")
	return cmd
}
