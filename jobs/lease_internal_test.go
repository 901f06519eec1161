package jobs

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/vncfleet/vncfleet/fleet"
	"github.com/vncfleet/vncfleet/internal/store"
	"github.com/vncfleet/vncfleet/ratelimit"
	"github.com/vncfleet/vncfleet/vnccloud"
)

// deadlineCloud records the deadline of the context each call gets.
type deadlineCloud struct {
	Cloud
	deadlines []time.Time
}

func (c *deadlineCloud) Create(ctx context.Context, _ vnccloud.Spec) (vnccloud.Created, error) {
	d, _ := ctx.Deadline()
	c.deadlines = append(c.deadlines, d)
	return vnccloud.Created{CloudAddress: "a", CloudPassword: "p"}, nil
}

// A call may run only while the claim lasts by this process's clock: the item's
// LeaseEnds less a call's timeout. The database's claim_until is not looked at, so a
// local clock behind the database's by more than a call's timeout cannot make a call
// outlive the claim; and a claim whose remaining time is shorter than a call's
// timeout sends nothing.
func TestCallsEndBeforeTheLeaseByTheLocalClock(t *testing.T) {
	t.Parallel()
	cloud := &deadlineCloud{}
	d := &Deps{Cloud: cloud, Limiter: ratelimit.NewLocal(ratelimit.Config{}), Logger: slog.New(slog.DiscardHandler),
		Config: Config{CallTimeout: 30 * time.Second, ClaimLease: 2 * time.Minute}}
	d.Config.setDefaults()

	leaseEnds := time.Now().Add(d.Config.ClaimLease)
	res := d.runItem(context.Background(), context.Background(), store.WorkItem{Op: store.OpCreate, Action: vnccloud.ActionConnect, LeaseEnds: leaseEnds})
	require.Equal(t, fleet.Created, res.Report.Outcome)
	require.Len(t, cloud.deadlines, 1)
	require.False(t, cloud.deadlines[0].After(leaseEnds), "the call ends before the claim does")

	short := time.Now().Add(d.Config.CallTimeout / 2)
	res = d.runItem(context.Background(), context.Background(), store.WorkItem{Op: store.OpCreate, Action: vnccloud.ActionConnect, LeaseEnds: short})
	require.Equal(t, fleet.NotSent, res.Report.Outcome, "a claim ending within a call's timeout sends nothing")
	require.Len(t, cloud.deadlines, 1)
}
