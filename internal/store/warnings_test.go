package store

import (
	"context"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/vncfleet/vncfleet/fleet"
)

func TestPlanWarnings(t *testing.T) {
	t.Parallel()
	e := newStagedEnv(t)
	res, err := e.upload(t, fleet.ModeMerge, "device_id,action,groups,allow_groups\nold1,connect,g,\nold2,connect,g,\n")
	require.NoError(t, err)
	require.Empty(t, res.Plan.Warnings, "every device has a group, no listen device is open")

	// A manifest from long ago; the next merge upload leaves its devices out.
	_, err = e.pool.Exec(context.Background(), `UPDATE manifests SET uploaded_at = now() - interval '100 days'`)
	require.NoError(t, err)
	body := "device_id,action,groups,allow_groups\ns1,listen,,\ns2,listen,,\nv1,connect,,\ns3,listen,,g\n"
	for _, dryRun := range []bool{true, false} {
		res, err = e.st.Ingest(context.Background(), IngestRequest{Fleet: "f", DryRun: dryRun, Body: strings.NewReader(body)})
		require.NoError(t, err)
		require.Equal(t, []string{
			"2 listen devices accept every connect address of the account (no allow_groups or allow_devices): s1, s2",
			"1 connect device belongs to no group, so only listen devices that name it in allow_devices (or have no access list) accept it: v1",
			"2 devices of the fleet not mentioned by any manifest for over 90 days (still provisioned; a replace upload or state absent deletes them): old1, old2",
		}, res.Plan.Warnings, "dry run %v: warnings never block", dryRun)
	}

	// A replace upload deletes what it leaves out, and its plan says so instead.
	res, err = e.upload(t, fleet.ModeReplace, "device_id,action,groups\nv1,connect,g\n")
	require.NoError(t, err)
	require.Empty(t, res.Plan.Warnings)
}
