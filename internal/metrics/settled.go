package metrics

import (
	"context"
	"slices"
	"time"
)

// settledWatch finds the moment each manifest settles, for its "manifest settled" log
// line: no single job sees it (the last device may become ready in any process's
// poll), so the process that reads the fleet-wide gauges looks, at each reading.
// Manifests stored before it took the lead are not watched: a line is never
// repeated by a change of leader, at the cost of missing a manifest that settles
// during one.
type settledWatch struct {
	started  bool
	last     int64   // the newest manifest id seen
	watching []int64 // stored since, not yet settled
}

func (g *DBGauges) announceSettled(ctx context.Context) error {
	w := &g.watch
	st := g.cfg.Store
	if !w.started {
		last, err := st.LatestManifestID(ctx)
		if err != nil {
			return err
		}
		w.started, w.last = true, last
		return nil
	}
	fresh, err := st.ManifestsAfter(ctx, w.last)
	if err != nil {
		return err
	}
	if len(fresh) > 0 {
		w.watching = append(w.watching, fresh...)
		w.last = fresh[len(fresh)-1]
	}
	if len(w.watching) == 0 {
		return nil
	}
	settled, err := st.SettledAmong(ctx, w.watching)
	if err != nil {
		return err
	}
	for _, m := range settled {
		g.cfg.Logger.Info("manifest settled", "manifest", m.ID, "fleet", m.Fleet, "rows", m.Rows,
			"ready", m.ByStatus["ready"], "deleted", m.ByStatus["deleted"], "failed", m.ByStatus["failed"],
			"cancelled", m.ByStatus["cancelled"], "duration", m.Took.Round(time.Millisecond))
		w.watching = slices.DeleteFunc(w.watching, func(id int64) bool { return id == m.ID })
	}
	return nil
}
