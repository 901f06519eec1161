package main

import (
	"github.com/spf13/cobra"
)

func init() { register(newExportCmd) }

func newExportCmd() *cobra.Command {
	var fleetName string
	var secrets bool
	cmd := &cobra.Command{
		Use:   "export",
		Short: "One CSV row per device on stdout; cloud passwords only with --secrets",
		Long: `export streams the server's device table to stdout unchanged, one CSV row per device:
device_id,action,status,cloud_address,cloud_password,groups,allow_groups,allow_devices,vnc_url,last_error

Every fleet unless --fleet. cloud_password and vnc_url (a Zenlayer console URL, which opens
the console by itself) are empty unless --secrets, which needs a token with the secrets role;
each such export is written to the server's audit log, with the number of devices revealed.

If the server fails midway (a password it cannot decrypt, its database gone), the answer is
broken off: export says the output is incomplete and exits 3. Do not use that output.`,
		Example: `  vncfleet export --fleet factory > factory.csv
  VNCFLEET_TOKEN_FILE=/run/secrets/vncfleet vncfleet export --secrets --fleet factory`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			client, err := apiClient(cmd)
			if err != nil {
				return err
			}
			return apiExit(client.Export(cmd.Context(), fleetName, secrets, cmd.OutOrStdout()))
		},
	}
	cmd.Flags().StringVar(&fleetName, "fleet", "", "only this fleet (default: every fleet)")
	cmd.Flags().BoolVar(&secrets, "secrets", false, "include the cloud passwords and console URLs (needs the secrets role; audited)")
	return cmd
}
