package e2e

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestSimFaultFlags: `vncfleet sim --drop-rate` and `--garble-rate` reach the
// simulator, POST /sim/faults changes them, /sim/state counts what they did, and a
// rate out of range is bad usage.
func TestSimFaultFlags(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterOpts{simArgs: []string{"--drop-rate", "1", "--garble-rate", "1", "--ready-delay", "0s"}})
	api := func(method, path string) (*http.Response, error) {
		var body io.Reader
		if method == http.MethodPost && path == "" {
			body = strings.NewReader(`{"allowedActions":["connect"]}`)
		}
		req, err := http.NewRequest(method, c.simURL+"/cloud/1.1/static-address"+path, body)
		require.NoError(t, err)
		req.SetBasicAuth(apiKey, apiSecret)
		req.Header.Set("Accept", "application/json")
		req.Header.Set("Content-Type", "application/json")
		return http.DefaultClient.Do(req)
	}

	_, err := api(http.MethodPost, "")
	require.ErrorIs(t, err, io.EOF, "--drop-rate 1: the create's connection is closed with no answer")
	st := c.state()
	require.Len(t, st.Accounts[apiKey].Addresses, 1, "the dropped create was committed")
	require.EqualValues(t, 1, st.Injected.Dropped)

	c.simDo(http.MethodPost, "/sim/faults", map[string]any{"dropRate": 0})
	resp, err := api(http.MethodPost, "")
	require.NoError(t, err)
	var created struct{ CloudAddress, CloudPassword string }
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&created))
	_ = resp.Body.Close()
	require.Equal(t, http.StatusCreated, resp.StatusCode)

	resp, err = api(http.MethodPost, "/"+created.CloudAddress)
	require.NoError(t, err)
	body, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	require.NoError(t, err, "--garble-rate 1: the cut-off answer arrives whole")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Error(t, json.Unmarshal(body, &created), "but does not decode: %s", body)
	st = c.state()
	require.EqualValues(t, 1, st.Injected.Garbled)
	require.Equal(t, 2, c.addresses()[created.CloudAddress].Version, "the reset was committed")

	bad := start(t, "sim with a bad rate", []string{"VNCFLEET_SIM_LISTEN=" + freeAddr(t)},
		"sim", "--account", apiKey+":"+apiSecret, "--garble-rate", "1.5")
	select {
	case <-bad.done:
	case <-time.After(30 * time.Second):
		t.Fatal("sim with --garble-rate 1.5 did not exit")
	}
	require.Equal(t, 2, bad.exitCode(), "bad usage")
	require.Contains(t, bad.out.String(), "GarbleRate must be within 0..1")
}
