package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/spf13/cobra"

	"github.com/vncfleet/vncfleet/configs"
	"github.com/vncfleet/vncfleet/fleet"
	"github.com/vncfleet/vncfleet/internal/apiclient"
	"github.com/vncfleet/vncfleet/internal/app"
	"github.com/vncfleet/vncfleet/internal/sim"
	"github.com/vncfleet/vncfleet/internal/sim/zenlayersim"
	"github.com/vncfleet/vncfleet/migrations"
)

func init() { register(newDemoCmd) }

const demoDatabase = "vncfleet_demo"

func newDemoCmd() *cobra.Command {
	var (
		manifestPath string
		readyDelay   time.Duration
		rate         float64
		verbose      bool
		keepConsole  bool
	)
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run the whole main job on embedded defaults and print a report",
		Long: `demo runs the main job end to end on this machine: the built-in simulator in-process,
the local PostgreSQL (a database of its own, vncfleet_demo, created afresh on every run), a
server with its workers, and the example manifest (configs/example-manifest.csv) uploaded
and waited for. It ends with a result table, and checks every stored password against the
simulator's. The database is DATABASE_URL's server.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig(cmd)
			if err != nil {
				return err
			}
			level := slog.LevelWarn
			if verbose {
				level = slog.LevelInfo
			}
			logger := slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: level}))
			manifest := configs.ExampleManifest
			if manifestPath != "" {
				if manifest, err = os.ReadFile(manifestPath); err != nil {
					return withExit(exitBadInput, err)
				}
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			out := cmd.OutOrStdout()

			// 1. A database of its own, created afresh so the demo starts clean.
			dbURL, err := freshDemoDatabase(ctx, cfg.DatabaseURL)
			if err != nil {
				return withExit(exitUnreachable, fmt.Errorf("%w\n(start PostgreSQL, or point DATABASE_URL at a server where you may create databases)", err))
			}
			pool, err := app.OpenPool(ctx, dbURL)
			if err != nil {
				return exitFor(err)
			}
			defer pool.Close()
			if _, err := migrations.Migrate(ctx, pool, logger); err != nil {
				return withExit(exitUnreachable, err)
			}
			fmt.Fprintf(out, "database  %s (migrated)\n", demoDatabase)

			// 2. The simulator, VNC Cloud and Zenlayer, in-process on loopback.
			simAcct := sim.Account{Key: "demo", Secret: randomToken()}
			zlPassword := randomToken()
			s, err := sim.New(sim.Config{Accounts: []sim.Account{simAcct}, ReadyDelay: readyDelay, Logger: logger,
				Zenlayer: zenlayersim.New(zenlayersim.Config{Credentials: map[string]string{"demo-zenlayer": zlPassword},
					Instances: map[string]string{"zli-demo-0001": zenlayersim.StatusRunning}})})
			if err != nil {
				return err
			}
			simURL, stopSim, err := serveLoopback(s.Handler())
			if err != nil {
				return err
			}
			defer stopSim()
			fmt.Fprintf(out, "simulator %s/cloud/1.1 (readiness delay %s)\n", simURL, readyDelay)

			// 3. A server with its workers, wired to the simulator.
			cfg.DatabaseURL = dbURL
			cfg.VNCCloud.APIURL, cfg.VNCCloud.APIKey, cfg.VNCCloud.APISecret = simURL+"/cloud/1.1", simAcct.Key, simAcct.Secret
			cfg.VNCCloud.Rate = rate
			cfg.Zenlayer.APIURL, cfg.Zenlayer.AccessKeyID, cfg.Zenlayer.AccessKeyPassword = simURL+"/api/v2", "demo-zenlayer", zlPassword
			cfg.SecretKey = base64.StdEncoding.EncodeToString(randomBytes(32))
			cfg.Token = randomToken()
			cfg.Rotation.Schedule, cfg.Reconcile.Schedule = "", ""
			worker, err := app.NewWorker(ctx, pool, cfg, app.Options{Logger: logger})
			if err != nil {
				return err
			}
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				return err
			}
			serveCtx, stopServe := context.WithCancel(ctx)
			served := make(chan error, 1)
			go func() { served <- worker.Serve(serveCtx, ln, 10*time.Second, logger) }()
			defer func() {
				stopServe()
				<-served
			}()
			apiURL := "http://" + ln.Addr().String()
			fmt.Fprintf(out, "server    %s (VNCCLOUD_RATE=%g)\n", apiURL, rate)
			if keepConsole {
				fmt.Fprintf(out, "console   %s/  sign in with the token %s\n", apiURL, cfg.Token)
			}
			fmt.Fprintln(out)
			client, err := apiclient.New(apiURL, cfg.Token)
			if err != nil {
				return err
			}

			// 4. Upload the manifest and wait, as a factory pipeline would.
			res, err := client.Upload(ctx, bytes.NewReader(manifest), apiclient.UploadOptions{Fleet: "demo", MaxDeletions: -1})
			if err != nil {
				var apiErr *apiclient.Error
				if errors.As(err, &apiErr) && len(apiErr.Problems) > 0 {
					fmt.Fprintln(cmd.ErrOrStderr(), strings.Join(apiErr.Problems, "\n"))
				}
				return apiExit(err)
			}
			fmt.Fprintf(out, "uploaded  manifest #%d: %s, %d to create\n", res.Manifest.ID, fleet.Plural(res.Manifest.Rows, "row"), res.Plan.Creates)
			waitErr := waitManifest(ctx, cmd, client, res.Manifest.ID)
			var exitErr *exitError
			if waitErr != nil && !(errors.As(waitErr, &exitErr) && exitErr.code == exitSomeFailed) {
				return waitErr
			}
			waitConsoleURLs(ctx, client, manifest)

			// 5. The result, and the check against the simulator's truth.
			var table bytes.Buffer
			if err := client.Export(ctx, "demo", true, &table); err != nil {
				return apiExit(err)
			}
			if err := printDemoReport(out, table.Bytes(), s.State().Accounts[simAcct.Key]); err != nil {
				return err
			}
			fmt.Fprintf(out, "\nnext: `vncfleet sim` serves this simulator on its own; `vncfleet serve` with DATABASE_URL,\n"+
				"VNCFLEET_SECRET_KEY and VNCCLOUD_API_* runs the real thing; `vncfleet doctor` checks that setup first (README.md).\n")
			if keepConsole {
				fmt.Fprintf(out, "\nThe console stays open at %s/ (token %s) until Ctrl-C.\n", apiURL, cfg.Token)
				<-ctx.Done()
				return nil
			}
			return waitErr
		},
	}
	f := cmd.Flags()
	f.StringVar(&manifestPath, "manifest", "", "manifest to provision (default: the embedded configs/example-manifest.csv)")
	f.DurationVar(&readyDelay, "ready-delay", time.Second, "the simulator's readiness delay")
	f.Float64Var(&rate, "rate", 20, "VNCCLOUD_RATE for the demo")
	f.BoolVar(&verbose, "verbose", false, "show the server's logs")
	f.BoolVar(&keepConsole, "console", false, "keep the server running afterwards, with the operator's console, and print its URL and a token")
	return cmd
}

// freshDemoDatabase (re)creates the demo database on DATABASE_URL's server.
func freshDemoDatabase(ctx context.Context, databaseURL string) (string, error) {
	connCfg, err := pgx.ParseConfig(databaseURL)
	if err != nil {
		return "", fmt.Errorf("DATABASE_URL: %w", err)
	}
	connCfg.Database = "postgres"
	admin, err := pgx.ConnectConfig(ctx, connCfg)
	if err != nil {
		return "", fmt.Errorf("PostgreSQL is not reachable: %w", err)
	}
	defer admin.Close(ctx)
	ident := pgx.Identifier{demoDatabase}.Sanitize()
	if _, err := admin.Exec(ctx, "DROP DATABASE IF EXISTS "+ident+" WITH (FORCE)"); err != nil {
		return "", fmt.Errorf("drop %s: %w", demoDatabase, err)
	}
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+ident); err != nil {
		return "", fmt.Errorf("create %s: %w", demoDatabase, err)
	}
	host := connCfg.Host
	if strings.HasPrefix(host, "/") {
		return fmt.Sprintf("postgres:///%s?host=%s&port=%d&user=%s", demoDatabase, host, connCfg.Port, connCfg.User), nil
	}
	return fmt.Sprintf("postgres://%s@%s:%d/%s", connCfg.User, host, connCfg.Port, demoDatabase), nil
}

func serveLoopback(h http.Handler) (string, func(), error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	return "http://" + ln.Addr().String(), func() { _ = srv.Close() }, nil
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

func randomToken() string { return base64.RawURLEncoding.EncodeToString(randomBytes(18)) }

// waitConsoleURLs gives the Zenlayer console URL jobs a few seconds to finish for
// the devices whose rows name an instance.
func waitConsoleURLs(ctx context.Context, client *apiclient.Client, manifest []byte) {
	want := map[string]bool{}
	if r, err := fleet.NewReader(bytes.NewReader(manifest), fleet.ReaderOptions{}); err == nil {
		for d, err := r.Next(); err == nil; d, err = r.Next() {
			if d.ZenlayerInstanceID != "" {
				want[d.DeviceID] = true
			}
		}
	}
	for deadline := time.Now().Add(10 * time.Second); len(want) > 0 && time.Now().Before(deadline); {
		var buf bytes.Buffer
		if client.Export(ctx, "demo", false, &buf) != nil {
			return
		}
		rows, _ := csv.NewReader(&buf).ReadAll()
		for _, r := range rows[min(1, len(rows)):] {
			if r[8] != "" {
				delete(want, r[0])
			}
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// printDemoReport prints the result table and checks the passwords against the
// simulator, without printing them.
func printDemoReport(w io.Writer, export []byte, truth sim.AccountState) error {
	rows, err := csv.NewReader(bytes.NewReader(export)).ReadAll()
	if err != nil || len(rows) == 0 {
		return fmt.Errorf("export: %v", err)
	}
	cloud := map[string]string{}
	for _, a := range truth.Addresses {
		cloud[a.CloudAddress] = a.Password
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "DEVICE\tACTION\tSTATUS\tCLOUD ADDRESS\tGROUPS / ALLOWED\tPASSWORD\tCONSOLE")
	matched := 0
	for _, r := range rows[1:] {
		deviceID, action, status, addr, password := r[0], r[1], r[2], r[3], r[4]
		who := r[5]
		if action == "listen" {
			who = strings.Trim(r[6]+" "+r[7], " ")
			if who == "" {
				who = "(any connect address)"
			}
		}
		check := "—"
		if addr != "" {
			if cloud[addr] == password && password != "" {
				check = "= cloud"
				matched++
			} else {
				check = "MISMATCH"
			}
		}
		console := "—"
		if r[8] != "" {
			console = "yes"
		} else if r[9] != "" && status != "failed" {
			console = "error"
		}
		short := addr
		if len(short) > 24 {
			short = short[:20] + "…"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", deviceID, action, status, short, who, check, console)
	}
	_ = tw.Flush()
	fmt.Fprintf(w, "\n%d of %s %s the simulator's; %s in the account.\n", matched, fleet.Plural(len(rows)-1, "stored password"),
		fleet.Agree(matched, "equals", "equal"), fleet.PluralOf(len(truth.Addresses), "address", "addresses"))
	if matched != len(rows)-1 {
		return withExit(exitSomeFailed, errors.New("some stored passwords differ from the cloud's"))
	}
	return nil
}
