package store

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/vncfleet/vncfleet/fleet"
)

// A streamed answer holds no database connection while its consumer (a slow HTTP
// client) takes its rows: pages are read whole, then handed out; the next page is
// read meanwhile, and its connection given back as soon as it is read.
func TestStreamedAnswersHoldNoConnectionBetweenPages(t *testing.T) {
	e := newStagedEnv(t)
	ctx := context.Background()
	n := 2*pageRows + 345
	var b strings.Builder
	b.WriteString("device_id,action\n")
	for i := n - 1; i >= 0; i-- { // lines in the reverse of device_id order
		fmt.Fprintf(&b, "dev-%05d,connect\n", i)
	}
	res, err := e.upload(t, fleet.ModeMerge, b.String())
	require.NoError(t, err)
	_, err = e.upload(t, fleet.ModeMerge, "device_id,action\nzz-other,connect\n") // a second manifest of the fleet
	require.NoError(t, err)

	var exported []string
	for row, err := range e.st.Export(ctx, ExportQuery{}) {
		require.NoError(t, err)
		if len(exported)%100 == 0 {
			requireNoConnectionHeld(t, e)
		}
		exported = append(exported, row.DeviceID)
	}
	require.Len(t, exported, n+1)
	for i := range n {
		require.Equal(t, fmt.Sprintf("dev-%05d", i), exported[i])
	}
	require.Equal(t, "zz-other", exported[n])

	var reported []string
	for row, err := range e.st.Report(ctx, res.Manifest.ID, false) {
		require.NoError(t, err)
		if len(reported)%100 == 0 {
			requireNoConnectionHeld(t, e)
		}
		reported = append(reported, row.DeviceID)
	}
	require.Len(t, reported, n)
	for i, id := range reported {
		require.Equal(t, fmt.Sprintf("dev-%05d", n-1-i), id, "in manifest line order")
	}
}

// requireNoConnectionHeld waits until the page read ahead (if any) has given its
// connection back: while the consumer takes its time, none stays held.
func requireNoConnectionHeld(t *testing.T, e *stagedEnv) {
	t.Helper()
	require.Eventually(t, func() bool { return e.pool.Stat().AcquiredConns() == 0 }, time.Minute, time.Millisecond,
		"a connection is held while a row is consumed")
}
