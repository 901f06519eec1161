package store

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/vncfleet/vncfleet/fleet"
)

// A manifest's failures are read from its failed devices alone, not by a pass over
// all of its devices: the console's manifest page reads them on every open, and a
// million-device manifest with none failed took 0.35 s.
func TestFailuresReadOnlyTheFailedDevices(t *testing.T) {
	e := newStagedEnv(t)
	ctx := context.Background()
	res, err := e.upload(t, fleet.ModeMerge, factory(5000, "device_id,action,groups,location\n", func(i int) string {
		return fmt.Sprintf("cam-%04d,connect,line-%d,hall\n", i, i/10)
	}))
	require.NoError(t, err)
	_, err = e.pool.Exec(ctx, `UPDATE devices SET status = 'failed', last_error = 'HTTP 503' WHERE device_id IN ('cam-4000', 'cam-0007', 'cam-2500')`)
	require.NoError(t, err)
	_, err = e.pool.Exec(ctx, `ANALYZE devices`)
	require.NoError(t, err)

	list, err := e.st.Failures(ctx, res.Manifest.ID, 1000)
	require.NoError(t, err)
	require.Len(t, list, 3)
	require.Equal(t, []string{"cam-0007", "cam-2500", "cam-4000"}, []string{list[0].DeviceID, list[1].DeviceID, list[2].DeviceID}, "in line order")

	var plan []struct {
		Plan map[string]any `json:"Plan"`
	}
	var raw []byte
	require.NoError(t, e.pool.QueryRow(ctx, `EXPLAIN (ANALYZE, FORMAT JSON) `+failuresSQL, res.Manifest.ID, 1000).Scan(&raw))
	require.NoError(t, json.Unmarshal(raw, &plan))
	var read, removed float64
	var walk func(node map[string]any)
	walk = func(node map[string]any) {
		if _, scan := node["Relation Name"]; scan {
			read += node["Actual Rows"].(float64)
		}
		for _, k := range []string{"Rows Removed by Filter", "Rows Removed by Index Recheck"} {
			if n, ok := node[k].(float64); ok {
				removed += n
			}
		}
		if kids, ok := node["Plans"].([]any); ok {
			for _, k := range kids {
				walk(k.(map[string]any))
			}
		}
	}
	walk(plan[0].Plan)
	require.Equal(t, float64(3), read, "the scan yields the failed devices")
	require.Zero(t, removed, "and reads no other device to find them: %s", raw)
}
