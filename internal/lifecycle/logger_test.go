package lifecycle_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/vncfleet/vncfleet/internal/lifecycle"
	"github.com/vncfleet/vncfleet/internal/provisiontest"
	"github.com/vncfleet/vncfleet/internal/reconcile"
	"github.com/vncfleet/vncfleet/vnccloud"
)

func TestLifecycleWithoutLoggerDiscardsItsLog(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	addrs := e.Provision("a", provisiontest.Header+"d1,connect,g,,,\nd2,connect,g,,,\n")
	e.age("a", "d1", 31*24*time.Hour)
	require.NoError(t, e.Sim.ForceSpec(provisiontest.APIKey, addrs["d2"], vnccloud.Spec{Action: vnccloud.ActionConnect, Groups: []string{"intruders"}}))
	l, _ := e.lifecycle(e.Pool, lifecycle.Config{}, nil)
	l.Logger, l.Reconciler.(*reconcile.Reconciler).Logger = nil, nil

	// Both runs have something to log.
	require.NotPanics(t, func() { require.NoError(t, l.ScheduledRotation(e.Ctx)) })
	require.Equal(t, "rotate", e.Device("a", "d1").Op)
	require.NotPanics(t, func() { require.NoError(t, l.ScheduledReconcile(e.Ctx)) })
	require.Equal(t, "update", e.Device("a", "d2").Op)
	require.Len(t, e.Enq.All(), 2)
}
