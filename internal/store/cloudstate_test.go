package store_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/vncfleet/vncfleet/internal/provisiontest"
	"github.com/vncfleet/vncfleet/internal/sim"
	"github.com/vncfleet/vncfleet/internal/store"
)

// TestProgressCarriesTheETAInputs: a manifest's progress carries its calls owed and,
// while not done, the cluster's limiter from the rows of live processes (the lowest
// factor of those slowed and sending, the requests sent by all, how many are slowed); a work queue's progress
// carries the limiter too. Both lose the limiter once no process is live.
func TestProgressCarriesTheETAInputs(t *testing.T) {
	t.Parallel()
	e := newCountsEnv(t)
	m := e.someManifest()
	_, err := e.pool.Exec(e.ctx, `
		INSERT INTO devices (fleet_id, device_id, action, groups, spec_hash, manifest_id, status, op, work_key) VALUES
		($1, 'a', 'connect', '{g}', '\x00', $2, 'pending', 'create', 'retry-1'),
		($1, 'b', 'connect', '{g}', '\x00', $2, 'awaiting_ready', NULL, 'retry-1'),
		($1, 'c', 'connect', '{g}', '\x00', $2, 'ready', NULL, NULL)`, e.manifests[m], m)
	require.NoError(t, err)
	_, err = e.pool.Exec(e.ctx, `INSERT INTO rate_limit_processes (name, process, rate, factor, sending, slowed_at, sent_at, updated_at) VALUES
		('vnccloud', 'p1', 40, 0.25, 3, now(), now(), now()),
		('vnccloud', 'p2', 40, 1, 7, NULL, now(), now()),
		('vnccloud', 'idle', 40, 0.1, 0, now() - interval '2 minutes', now() - interval '1 minute', now()),
		('vnccloud', 'gone', 40, 0.1, 9, now(), now(), now() - interval '1 minute'),
		('zenlayer', 'p1', 5, 0.5, 1, now(), now(), now())`)
	require.NoError(t, err)

	p, err := e.st.ManifestProgress(e.ctx, m, nil)
	require.NoError(t, err)
	require.Equal(t, 2+1, p.CallsOwed, "a pending device owes a create and a poll, an awaiting one a poll")
	require.NotNil(t, p.Cloud)
	l := p.Cloud.Limiter
	require.NotNil(t, l)
	require.Equal(t, 3, l.Processes, "the gone process and the other limiter do not count")
	require.Equal(t, 1, l.Slowed, "a slowed process that sends nothing slows nothing down")
	require.InDelta(t, 40.0, l.Rate, 1e-9)
	require.InDelta(t, 0.25, l.Factor, 1e-9)
	require.InDelta(t, 10.0, l.Sending, 1e-9)
	require.NotNil(t, l.SlowedSince)

	w, err := e.st.WorkProgress(e.ctx, "retry-1")
	require.NoError(t, err)
	require.False(t, w.Done)
	require.Equal(t, 3, w.CallsOwed)
	require.NotNil(t, w.Cloud)
	require.Equal(t, l, w.Cloud.Limiter)

	_, err = e.pool.Exec(e.ctx, `UPDATE rate_limit_processes SET updated_at = now() - interval '1 minute'`)
	require.NoError(t, err)
	p, err = e.st.ManifestProgress(e.ctx, m, nil)
	require.NoError(t, err)
	require.Nil(t, p.Cloud.Limiter, "no live process: no limiter state")
}

// The cloud's answers are counted per manifest as they are recorded: a progress read
// says how many calls ended in the last minute and what the cloud answered, without
// reading the manifest's devices; old buckets do not count.
func TestCloudStateCountsTheAnswersAsTheyAreRecorded(t *testing.T) {
	t.Parallel()
	e := provisiontest.New(t)
	key := e.Ingest("f", provisiontest.Header+"a1,connect,a,,,\na2,connect,a,,,\na3,connect,a,,,\n")
	id, ok := store.ManifestOfWorkKey(key)
	require.True(t, ok)

	e.Sim.SetFaults(sim.Faults{FailRate: 1})
	require.Equal(t, 3, e.Step(key, 3, provisiontest.RetryNow), "three creates answered 503")
	p, err := e.Store.ManifestProgress(e.Ctx, id, nil)
	require.NoError(t, err)
	require.Equal(t, 3, p.Cloud.Calls)
	require.Equal(t, map[string]int{"503": 3}, p.Cloud.ErrorsLastMinute)

	e.Sim.SetFaults(sim.Faults{})
	require.Equal(t, 3, e.Step(key, 3, provisiontest.RetryNow), "three creates answered")
	require.Equal(t, 3, e.Poll(), "three polls answered")
	p, err = e.Store.ManifestProgress(e.Ctx, id, nil)
	require.NoError(t, err)
	require.True(t, p.Done)
	c, err := e.Store.ManifestCloudState(e.Ctx, id)
	require.NoError(t, err)
	require.Equal(t, 9, c.Calls, "creates and polls alike")
	require.Equal(t, map[string]int{"503": 3}, c.ErrorsLastMinute)

	_, err = e.Pool.Exec(e.Ctx, `UPDATE cloud_answers SET bucket = bucket - interval '2 minutes'`)
	require.NoError(t, err)
	c, err = e.Store.ManifestCloudState(e.Ctx, id)
	require.NoError(t, err)
	require.Zero(t, c.Calls, "answers older than a minute are not lately")
	require.Empty(t, c.ErrorsLastMinute)
}
