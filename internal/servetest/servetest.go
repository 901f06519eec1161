// Package servetest starts the whole `vncfleet serve` stack for a test: a database of
// its own (internal/dbtest), the River workers, the simulator over real HTTP, and the
// console in front of the API on a real listener. Settings are the defaults users
// get unless the test adjusts them (and says why).
package servetest

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"log/slog"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/vncfleet/vncfleet/internal/app"
	"github.com/vncfleet/vncfleet/internal/config"
	"github.com/vncfleet/vncfleet/internal/dbtest"
	"github.com/vncfleet/vncfleet/internal/sim"
	"github.com/vncfleet/vncfleet/internal/syncbuf"
)

// Tokens and the simulator account the stack is configured with.
const (
	AdminToken  = "servetest-admin-token"  // VNCFLEET_TOKEN: every role
	ReaderToken = "servetest-reader-token" // the read role only
	SimKey      = "servetest-key"
	simSecret   = "servetest-sim-secret-value"
)

// Stack is a running server.
type Stack struct {
	URL  string // the server's base URL
	Pool *pgxpool.Pool
	Sim  *sim.Server
	Logs *syncbuf.Buffer
}

// Start starts the stack; adjust (optional) changes the configuration first. On
// cleanup it stops everything and checks that no secret reached the logs.
func Start(t *testing.T, adjust func(*config.Config)) *Stack {
	t.Helper()
	pool, dbURL := dbtest.New(t)
	s, err := sim.New(sim.Config{Accounts: []sim.Account{{Key: SimKey, Secret: simSecret}}, ReadyDelay: 200 * time.Millisecond})
	require.NoError(t, err)
	simSrv := httptest.NewServer(s.Handler())
	t.Cleanup(simSrv.Close)
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	vars := map[string]string{
		"DATABASE_URL":        dbURL,
		"VNCFLEET_SECRET_KEY": base64.StdEncoding.EncodeToString(key),
		"VNCFLEET_TOKEN":      AdminToken,
		"VNCCLOUD_API_URL":    simSrv.URL + "/cloud/1.1",
		"VNCCLOUD_API_KEY":    SimKey,
		"VNCCLOUD_API_SECRET": simSecret,
	}
	cfg, err := config.Load("", func(k string) string { return vars[k] })
	require.NoError(t, err)
	cfg.Tokens = []config.Token{{Name: "reader", Token: ReaderToken, Roles: []string{"read"}}}
	if adjust != nil {
		adjust(cfg)
	}
	logs := &syncbuf.Buffer{}
	logger := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	w, err := app.NewWorker(context.Background(), pool, cfg, app.Options{Logger: logger})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	require.NoError(t, w.River.Start(ctx))
	srv := httptest.NewServer(w.Handler)
	t.Cleanup(func() {
		w.API.StopStreams() // as a shutdown does: streams never go idle by themselves
		srv.Close()
		stopCtx, stop := context.WithTimeout(context.Background(), 10*time.Second)
		defer stop()
		_ = w.River.Stop(stopCtx)
		cancel()
		for _, secret := range []string{simSecret, ReaderToken, AdminToken} {
			require.NotContains(t, logs.String(), secret, "a secret reached the logs")
		}
	})
	return &Stack{URL: srv.URL, Pool: pool, Sim: s, Logs: logs}
}
