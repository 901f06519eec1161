package lifecycle_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/vncfleet/vncfleet/internal/lifecycle"
	"github.com/vncfleet/vncfleet/vnccloud"
)

func TestLifecycleWithoutLoggerDiscardsItsLog(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	addrs := e.provision("a", header+"d1,connect,g,,,\nd2,connect,g,,,\n")
	e.age("a", "d1", 31*24*time.Hour)
	require.NoError(t, e.sim.ForceSpec(apiKey, addrs["d2"], vnccloud.Spec{Action: vnccloud.ActionConnect, Groups: []string{"intruders"}}))
	l, _ := e.lifecycle(e.pool, lifecycle.Config{}, nil)
	l.Logger, l.Reconciler.Logger = nil, nil

	// Both runs have something to log.
	require.NotPanics(t, func() { require.NoError(t, l.ScheduledRotation(e.ctx)) })
	require.Equal(t, "rotate", e.device("a", "d1").Op)
	require.NotPanics(t, func() { require.NoError(t, l.ScheduledReconcile(e.ctx)) })
	require.Equal(t, "update", e.device("a", "d2").Op)
	require.Len(t, e.enq.all(), 2)
}
