package store_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/vncfleet/vncfleet/internal/dbtest"
	"github.com/vncfleet/vncfleet/internal/store"
)

// appendEntries writes n audit entries from each of workers goroutines at once.
func appendEntries(t *testing.T, st *store.Store, workers, n int) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, workers*n)
	for w := range workers {
		wg.Go(func() {
			for i := range n {
				_, err := st.Audit(context.Background(), store.AuditRecord{Actor: fmt.Sprintf("token-%d", w), Action: "reveal_credentials",
					Remote: "192.0.2.1", Detail: map[string]any{"fleet": "f", "device": fmt.Sprintf("d%d", i)}})
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
}

// asOwner runs sql with the append-only trigger out of the way, as someone who owns
// the table (not the application) could: the tampering audit verify must find.
func asOwner(t *testing.T, st *store.Store, sql string) {
	t.Helper()
	ctx := context.Background()
	_, err := st.Pool().Exec(ctx, `ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only;`+sql+
		`;ALTER TABLE audit_log ENABLE TRIGGER audit_log_append_only`)
	require.NoError(t, err)
}

// Concurrent appends from many connections form one gapless chain, and the
// application cannot rewrite it.
func TestAuditChainIsAppendOnly(t *testing.T) {
	t.Parallel()
	pool, _ := dbtest.New(t)
	st := store.New(pool, nil)
	ctx := context.Background()
	appendEntries(t, st, 8, 10)

	n, head, brk, err := st.VerifyAudit(ctx)
	require.NoError(t, err)
	require.Nil(t, brk)
	require.Equal(t, int64(80), n)
	entries, err := st.AuditLog(ctx, time.Time{}, 0, 1000)
	require.NoError(t, err)
	require.Len(t, entries, 80)
	for i, e := range entries {
		require.Equal(t, int64(i+1), e.Seq)
		require.Equal(t, "192.0.2.1", e.Remote)
		require.Equal(t, store.OutcomeOK, e.Outcome)
	}
	require.Equal(t, entries[79].Hash, head)
	page, err := st.AuditLog(ctx, time.Time{}, 75, 3)
	require.NoError(t, err)
	require.Equal(t, []int64{76, 77, 78}, []int64{page[0].Seq, page[1].Seq, page[2].Seq})

	for _, sql := range []string{
		`UPDATE audit_log SET actor = 'someone-else' WHERE seq = 3`,
		`DELETE FROM audit_log WHERE seq = 3`,
		`TRUNCATE audit_log`,
	} {
		_, err := pool.Exec(ctx, sql)
		require.ErrorContains(t, err, "audit_log is append-only", sql)
	}
	n, _, brk, err = st.VerifyAudit(ctx)
	require.NoError(t, err)
	require.Nil(t, brk)
	require.Equal(t, int64(80), n)
}

// audit verify finds the first altered or removed entry, wherever it is.
func TestAuditVerifyFindsTampering(t *testing.T) {
	t.Parallel()
	for name, tc := range map[string]struct {
		sql     string
		seq     int64
		holding int64
		reason  string
	}{
		"edited detail":      {`UPDATE audit_log SET detail = '{"fleet": "f", "devices": 1}' WHERE seq = 4`, 4, 3, "altered"},
		"edited outcome":     {`UPDATE audit_log SET outcome = 'denied' WHERE seq = 7`, 7, 6, "altered"},
		"edited time":        {`UPDATE audit_log SET at = at - interval '1 day' WHERE seq = 2`, 2, 1, "altered"},
		"rehashed edit":      {`UPDATE audit_log SET actor = 'x', hash = audit_entry_hash(prev_hash, seq, at, 'x', action, detail, remote, outcome) WHERE seq = 5`, 6, 5, "removed or altered"},
		"deleted in between": {`DELETE FROM audit_log WHERE seq = 5`, 5, 4, "entry 5 is missing"},
		"deleted and renumbered": {`DELETE FROM audit_log WHERE seq = 5; UPDATE audit_log SET seq = seq - 1 WHERE seq > 5`,
			5, 4, "removed or altered"},
		"deleted at the end": {`DELETE FROM audit_log WHERE seq > 8`, 9, 8, "removed from the end"},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			pool, _ := dbtest.New(t)
			st := store.New(pool, nil)
			appendEntries(t, st, 1, 10)
			asOwner(t, st, tc.sql)
			n, _, brk, err := st.VerifyAudit(context.Background())
			require.NoError(t, err)
			require.NotNil(t, brk, "the tampering is found")
			require.Equal(t, tc.seq, brk.Seq, brk.Error())
			require.Equal(t, tc.holding, n)
			require.Contains(t, brk.Reason, tc.reason)
		})
	}
}
