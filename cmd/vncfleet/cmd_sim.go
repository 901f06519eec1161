package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/vncfleet/vncfleet/internal/config"
	"github.com/vncfleet/vncfleet/internal/sim"
	"github.com/vncfleet/vncfleet/internal/sim/zenlayersim"
)

func init() { register(newSimCmd) }

func newSimCmd() *cobra.Command {
	var (
		accounts, zlAccounts, zlInstances []string
		zlFile, listen                    string
		readyDelay, latency               time.Duration
		failRate, lostRate, readyJitter   float64
		dropRate, garbleRate              float64
		rate, requestLog                  int
		seed                              int64
	)
	cmd := &cobra.Command{
		Use:   "sim",
		Short: "Run the built-in VNC Cloud (and Zenlayer) simulator",
		Long: `sim serves a faithful VNC Cloud API 1.1 under /cloud/1.1 on VNCFLEET_SIM_LISTEN, for
pipelines under development and tests. Accounts: VNCCLOUD_API_KEY/VNCCLOUD_API_SECRET
(or VNCCLOUD_API_SECRET_FILE) when set, and each --account KEY:SECRET.

Zenlayer's DescribeVncUrl is served at /api/v2/zec for the credentials in
ZENLAYER_ACCESS_KEY_ID/ZENLAYER_ACCESS_KEY_PASSWORD(_FILE) and each --zenlayer-account,
and the instances of --zenlayer-instance ID=STATUS and --zenlayer-instances FILE
(JSON: {"instances":[{"instanceId":"...","status":"RUNNING"}]}; only RUNNING allows a console).

Outside the API, unauthenticated (it is a simulator):
  GET  /sim/state                                  every address with its password, and counters
                                                   (requests per operation, faults injected)
  GET  /sim/faults, POST /sim/faults               e.g. {"failRate":0.1,"lostRate":0,"dropRate":0.02,
                                                   "garbleRate":0.02,"rate":50,"latency":"20ms"};
                                                   fields left out keep their value
  GET  /sim/requests[?since=RFC3339]               arrival time and operation of each API request
                                                   (the last --request-log of them)
  POST /sim/accounts/KEY/addresses/ADDR/force      body an API spec: change an address (drift)
  DELETE /sim/accounts/KEY/addresses/ADDR          delete an address behind vncfleet's back
  POST /sim/accounts/KEY/addresses                 body an API spec: a foreign address
  GET  /healthz`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig(cmd)
			if err != nil {
				return err
			}
			logger := newLogger(cfg)
			accts, err := simAccounts(cfg, accounts)
			if err != nil {
				return withExit(exitBadInput, err)
			}
			zl, err := zenlayerSim(cfg, logger, zlAccounts, zlInstances, zlFile)
			if err != nil {
				return withExit(exitBadInput, err)
			}
			if listen == "" {
				listen = cfg.SimListen
			}
			// sim.New checks the knobs' ranges and the keys' shape: one place for the rules.
			s, err := sim.New(sim.Config{Accounts: accts, ReadyDelay: readyDelay, ReadyJitter: readyJitter, FailRate: failRate, LostRate: lostRate,
				DropRate: dropRate, GarbleRate: garbleRate, Rate: rate, Latency: latency, Seed: seed, Zenlayer: zl, Logger: logger,
				RequestLog: requestLog})
			if err != nil {
				return withExit(exitBadInput, err)
			}
			ln, err := net.Listen("tcp", listen)
			if err != nil {
				return withExit(exitUnreachable, fmt.Errorf("listen on %s: %w", listen, err))
			}
			keys := make([]string, len(accts))
			for i, a := range accts {
				keys[i] = a.Key
			}
			logger.Info("VNC Cloud simulator listening", "listen", ln.Addr().String(),
				"url", "http://"+ln.Addr().String()+sim.APIPrefix, "api_keys", strings.Join(keys, ","),
				"ready_delay", readyDelay, "ready_jitter", readyJitter, "fail_rate", failRate, "lost_rate", lostRate, "drop_rate", dropRate, "garble_rate", garbleRate, "rate", rate,
				"latency", latency, "zenlayer", zl != nil)
			srv := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 10 * time.Second}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			stopped := make(chan error, 1)
			go func() {
				<-ctx.Done()
				logger.Info("VNC Cloud simulator stopping")
				shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				stopped <- srv.Shutdown(shutdown)
			}()
			if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			// Serve returns as soon as Shutdown starts: wait for in-flight answers.
			if err := <-stopped; err != nil {
				return fmt.Errorf("shutdown: %w", err)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringArrayVar(&accounts, "account", nil, "an account KEY:SECRET (repeatable)")
	f.StringVar(&listen, "listen", "", "listen address (default VNCFLEET_SIM_LISTEN or 127.0.0.1:8090)")
	f.DurationVar(&readyDelay, "ready-delay", 2*time.Second, "how long /ready answers pending after a create, change or reset")
	f.Float64Var(&readyJitter, "ready-jitter", 0, "spread of each address's readiness delay: drawn uniformly in ready-delay × [1-F, 1+F] (0..1; seeded by --seed)")
	f.Float64Var(&failRate, "fail-rate", 0, "share of requests answered 503 without effect (0..1)")
	f.Float64Var(&lostRate, "lost-rate", 0, "share of creates committed but answered 503 (0..1)")
	f.Float64Var(&dropRate, "drop-rate", 0, "share of creates committed, then the connection closed with no answer (0..1)")
	f.Float64Var(&garbleRate, "garble-rate", 0, "share of password resets committed, then answered 200 with a cut-off body (0..1)")
	f.IntVar(&rate, "rate", 0, "requests per second per account; over it 503 + Retry-After (0: no cap)")
	f.DurationVar(&latency, "latency", 0, "delay added to every API answer")
	f.Int64Var(&seed, "seed", 0, "seed of the fault dice (0: random)")
	f.IntVar(&requestLog, "request-log", 0, "keep the arrival time and operation of the last N API requests for GET /sim/requests (0: none)")
	f.StringArrayVar(&zlAccounts, "zenlayer-account", nil, "a Zenlayer access key ID:PASSWORD (repeatable)")
	f.StringArrayVar(&zlInstances, "zenlayer-instance", nil, "a Zenlayer instance ID=STATUS (repeatable)")
	f.StringVar(&zlFile, "zenlayer-instances", "", "JSON file of Zenlayer instances")
	return cmd
}

// simAccounts gathers the accounts: the configured VNC Cloud credentials and --account.
// Secrets on the command line are the simulator's own test accounts, never real ones.
func simAccounts(cfg *config.Config, flags []string) ([]sim.Account, error) {
	var out []sim.Account
	switch key, secret := cfg.VNCCloud.APIKey, cfg.VNCCloud.APISecret; {
	case key != "" && secret != "":
		out = append(out, sim.Account{Key: key, Secret: secret})
	case key != "":
		return nil, errors.New("VNCCLOUD_API_KEY is set without VNCCLOUD_API_SECRET (or VNCCLOUD_API_SECRET_FILE)")
	case secret != "":
		return nil, errors.New("VNCCLOUD_API_SECRET is set without VNCCLOUD_API_KEY")
	}
	for _, a := range flags {
		k, s, ok := strings.Cut(a, ":")
		if !ok || k == "" || s == "" {
			return nil, fmt.Errorf("--account must be KEY:SECRET")
		}
		out = append(out, sim.Account{Key: k, Secret: s})
	}
	if len(out) == 0 {
		return nil, errors.New("no account: set VNCCLOUD_API_KEY and VNCCLOUD_API_SECRET, or pass --account KEY:SECRET")
	}
	return out, nil
}

func zenlayerSim(cfg *config.Config, logger *slog.Logger, accounts, instances []string, file string) (http.Handler, error) {
	creds := map[string]string{}
	if cfg.Zenlayer.AccessKeyID != "" && cfg.Zenlayer.AccessKeyPassword != "" {
		creds[cfg.Zenlayer.AccessKeyID] = cfg.Zenlayer.AccessKeyPassword
	}
	for _, a := range accounts {
		id, pw, ok := strings.Cut(a, ":")
		if !ok || id == "" || pw == "" {
			return nil, errors.New("--zenlayer-account must be ID:PASSWORD")
		}
		creds[id] = pw
	}
	inst := map[string]string{}
	if file != "" {
		loaded, err := zenlayersim.LoadInstances(file)
		if err != nil {
			return nil, err
		}
		inst = loaded
	}
	for _, i := range instances {
		id, status, ok := strings.Cut(i, "=")
		if !ok || id == "" || status == "" {
			return nil, errors.New("--zenlayer-instance must be ID=STATUS")
		}
		inst[id] = strings.ToUpper(status)
	}
	if len(creds) == 0 {
		if len(inst) > 0 {
			logger.Warn("Zenlayer instances given without credentials: the Zenlayer endpoint is off (set ZENLAYER_ACCESS_KEY_ID and ZENLAYER_ACCESS_KEY_PASSWORD, or --zenlayer-account)")
		}
		return nil, nil
	}
	return zenlayersim.New(zenlayersim.Config{Credentials: creds, Instances: inst, Logger: logger}), nil
}
