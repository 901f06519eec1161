package main

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/vncfleet/vncfleet/fleet"
	"github.com/vncfleet/vncfleet/internal/apiclient"
)

func init() { register(newClaimsCmd) }

func newClaimsCmd() *cobra.Command {
	var req apiclient.ClaimsRequest
	cmd := &cobra.Command{
		Use:   "claims [DEVICE_ID...]",
		Short: "Issue single-use credential claim tokens as CSV device_id,claim_token,expires_at",
		Long: `claims issues a single-use claim token for each device of a manifest (--manifest) or
each DEVICE_ID of --fleet, and writes them to stdout as CSV: device_id,claim_token,expires_at.
It needs the secrets role and is audited. Each token is redeemed once, without a bearer token,
for the device's cloud address and password:

  curl -d '{"token":"vfc_..."}' $VNCFLEET_URL/v1/claims/redeem

A second redemption is refused and audited as a security event; a token expires after --ttl
(default: the server's claim_ttl, 15m) and is void once the device's password is rotated.
Devices without a password yet are left out (counted on stderr).`,
		Example: `  vncfleet claims --fleet line-7 --manifest 42 > station-claims.csv
  vncfleet claims --fleet line-7 --ttl 1h dev-001 dev-002`,
		RunE: func(cmd *cobra.Command, args []string) error {
			req.DeviceIDs = args
			if (req.Manifest == 0) == (len(args) == 0) {
				return withExit(exitBadInput, errors.New("name either --manifest ID or device ids"))
			}
			client, err := apiClient(cmd)
			if err != nil {
				return err
			}
			skipped, err := client.Claims(cmd.Context(), req, cmd.OutOrStdout())
			if err != nil {
				return apiExit(err)
			}
			if skipped > 0 {
				fmt.Fprintf(cmd.ErrOrStderr(), "%s no cloud password yet and got no claim\n", fleet.PluralVerb(skipped, "device", "has", "have"))
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&req.Fleet, "fleet", "default", "the devices' fleet")
	cmd.Flags().Int64Var(&req.Manifest, "manifest", 0, "every present device of this manifest")
	cmd.Flags().DurationVar(&req.TTL, "ttl", 0, "how long each token may be redeemed (default: the server's claim_ttl)")
	return cmd
}
