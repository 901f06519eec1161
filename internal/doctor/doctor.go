// Package doctor is vncfleet's self-check: whether this configuration can work —
// the database reachable and migrated, the secret key opening the stored passwords,
// the VNC Cloud and Zenlayer credentials accepted, the clocks agreeing, the webhook
// reachable. `vncfleet doctor` prints the checks; `serve` runs the same ones at start,
// logs one line each, and refuses to start when a fatal one fails.
package doctor

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/vncfleet/vncfleet/fleet"
	"github.com/vncfleet/vncfleet/internal/store"
	"github.com/vncfleet/vncfleet/migrations"
	"github.com/vncfleet/vncfleet/vnccloud"
	"github.com/vncfleet/vncfleet/zenlayer"
)

// Outcome is a check's result.
type Outcome string

const (
	OK   Outcome = "ok"
	Warn Outcome = "warn" // works, but worth a look
	Fail Outcome = "FAIL"
	Skip Outcome = "skip" // not configured, or depends on a check that failed
)

// Result is one check.
type Result struct {
	Name    string
	Outcome Outcome
	Detail  string
	// Fatal: serve cannot work at all when this check fails, and refuses to start.
	Fatal bool
}

func (r Result) String() string { return fmt.Sprintf("%-4s  %-10s %s", r.Outcome, r.Name, r.Detail) }

// Failed reports whether any result failed; fatal whether one of those is fatal.
func Failed(results []Result) (failed, fatal bool) {
	for _, r := range results {
		if r.Outcome == Fail {
			failed = true
			fatal = fatal || r.Fatal
		}
	}
	return failed, fatal
}

// Defaults of the checks.
const (
	// PasswordSample is how many stored passwords the key check tries to open.
	PasswordSample = 20
	// MaxClockSkew is the skew to the database's clock that fails the check: claim
	// leases, readiness polls and the rate limiter's schedule compare the two.
	MaxClockSkew = 5 * time.Second
	// Timeout bounds each check that calls out.
	Timeout = 10 * time.Second
	// probeInstance is the Zenlayer instance id asked for: it does not exist, so a
	// "not found" answer means the request was authenticated.
	probeInstance = "vncfleet-doctor-probe"
)

// Config is what the checks look at. A nil part is not configured.
type Config struct {
	// Pool is the database, nil when it could not be reached (DatabaseErr says why).
	Pool        *pgxpool.Pool
	DatabaseErr error
	// Store reads the database with the configured keyring; nil without a database.
	Store Store
	// KeyErr says why there is no usable VNCFLEET_SECRET_KEY; nil when there is one.
	KeyErr error
	// VNCCloud is the client built from VNCCLOUD_*; nil when no API key is set.
	VNCCloud Lister
	// Zenlayer is the client built from ZENLAYER_*; nil when not configured.
	Zenlayer *zenlayer.Client
	// WebhookURL is where events go; "" when not configured.
	WebhookURL string
}

// Run runs every check, in order, and returns their results.
func Run(ctx context.Context, c Config) []Result {
	db := checkDatabase(ctx, c)
	dbOK := db.Outcome == OK
	return []Result{
		db,
		checkSecretKey(ctx, c, dbOK),
		checkVNCCloud(ctx, c),
		checkZenlayer(ctx, c),
		checkClock(ctx, c, dbOK),
		checkWebhook(ctx, c),
	}
}

func checkDatabase(ctx context.Context, c Config) Result {
	r := Result{Name: "database", Fatal: true}
	if c.Pool == nil {
		r.Outcome, r.Detail = Fail, fmt.Sprintf("cannot reach it (%v): check DATABASE_URL and that PostgreSQL is running", c.DatabaseErr)
		return r
	}
	ctx, cancel := context.WithTimeout(ctx, Timeout)
	defer cancel()
	pending, riverMissing, err := migrations.Pending(ctx, c.Pool)
	switch {
	case err != nil:
		r.Outcome, r.Detail = Fail, fmt.Sprintf("cannot read its schema: %v", err)
	case riverMissing || len(pending) > 0:
		r.Outcome = Fail
		if n := len(pending); n > 0 {
			r.Detail = fmt.Sprintf("not migrated (%d of vncfleet's migrations missing, the first %s): run `vncfleet migrate`", n, pending[0])
		} else {
			r.Detail = "not migrated (River's tables are missing): run `vncfleet migrate`"
		}
	default:
		r.Outcome, r.Detail = OK, "reachable and migrated"
	}
	return r
}

func checkSecretKey(ctx context.Context, c Config, dbOK bool) Result {
	r := Result{Name: "secret key", Fatal: true}
	switch {
	case c.KeyErr != nil:
		r.Outcome, r.Detail = Fail, c.KeyErr.Error()
		return r
	case !dbOK || c.Store == nil:
		r.Outcome, r.Detail = Skip, "needs the database"
		return r
	}
	ctx, cancel := context.WithTimeout(ctx, Timeout)
	defer cancel()
	s, err := c.Store.SamplePasswords(ctx, PasswordSample)
	switch {
	case err != nil:
		r.Outcome, r.Detail = Fail, fmt.Sprintf("cannot read stored passwords: %v", err)
	case s.Sampled == 0:
		r.Outcome, r.Detail = OK, "set; no stored passwords to open yet"
	case s.Opened == 0:
		r.Outcome = Fail
		r.Detail = fmt.Sprintf("opens none of the %s sampled (sealed under key ids %s): "+
			"set VNCFLEET_SECRET_KEY to the key that sealed them, or list that key in VNCFLEET_OLD_SECRET_KEYS",
			fleet.Plural(s.Sampled, "stored password"), strings.Join(s.KeyIDs, ", "))
	case s.Opened < s.Sampled:
		// Some devices work: serve can start, but exports and rotations of the
		// others will fail.
		r.Outcome, r.Fatal = Fail, false
		r.Detail = fmt.Sprintf("opens %d of the %d stored passwords sampled; the others were sealed under key ids %s, "+
			"which VNCFLEET_OLD_SECRET_KEYS must still hold", s.Opened, s.Sampled, strings.Join(s.KeyIDs, ", "))
	default:
		r.Outcome, r.Detail = OK, fmt.Sprintf("opens the %s sampled", fleet.Plural(s.Sampled, "stored password"))
	}
	return r
}

// Store is what the secret key and clock checks read from the database.
// *store.Store provides it; a test gives a database clock as skewed as it likes
// without touching PostgreSQL's.
type Store interface {
	// SamplePasswords tries to open up to n stored passwords with the keyring.
	SamplePasswords(ctx context.Context, n int) (store.PasswordSample, error)
	// ClockSkew is the database's clock minus this process's.
	ClockSkew(ctx context.Context) (time.Duration, error)
}

// Lister is what the VNC Cloud check needs: one page of the account's addresses.
// *vnccloud.Client provides it; `serve` and `vncfleet doctor` give it through the
// cluster's rate limiter, so the check's call counts against VNCCLOUD_RATE too.
type Lister interface {
	ListPage(ctx context.Context, target string) (vnccloud.Page, error)
}

func checkVNCCloud(ctx context.Context, c Config) Result {
	r := Result{Name: "VNC Cloud"}
	if c.VNCCloud == nil {
		r.Outcome, r.Fatal = Fail, true
		r.Detail = "no credentials: set VNCCLOUD_API_KEY and VNCCLOUD_API_SECRET (or VNCCLOUD_API_SECRET_FILE)"
		return r
	}
	ctx, cancel := context.WithTimeout(ctx, Timeout)
	defer cancel()
	// One page of one address: the cheapest call that needs the credentials.
	_, err := c.VNCCloud.ListPage(ctx, "static-address?limit=1")
	var apiErr *vnccloud.APIError
	switch {
	case err == nil:
		r.Outcome, r.Detail = OK, "credentials accepted (one list call)"
	case errors.As(err, &apiErr) && (apiErr.StatusCode == http.StatusUnauthorized || apiErr.StatusCode == http.StatusForbidden):
		// Every device would fail with it: serve refuses to start.
		r.Outcome, r.Fatal = Fail, true
		r.Detail = fmt.Sprintf("credentials refused (HTTP %d): check VNCCLOUD_API_KEY and VNCCLOUD_API_SECRET", apiErr.StatusCode)
	case errors.As(err, &apiErr):
		r.Outcome, r.Detail = Fail, fmt.Sprintf("answered %v", err)
	default:
		r.Outcome, r.Detail = Fail, fmt.Sprintf("cannot reach it (%v): check VNCCLOUD_API_URL and the network", err)
	}
	return r
}

func checkZenlayer(ctx context.Context, c Config) Result {
	r := Result{Name: "Zenlayer"}
	if c.Zenlayer == nil {
		r.Outcome, r.Detail = Skip, "not configured (ZENLAYER_ACCESS_KEY_ID and ZENLAYER_ACCESS_KEY_PASSWORD)"
		return r
	}
	ctx, cancel := context.WithTimeout(ctx, Timeout)
	defer cancel()
	_, err := c.Zenlayer.DescribeVncUrl(ctx, probeInstance)
	var apiErr *zenlayer.APIError
	switch {
	case err == nil, errors.Is(err, zenlayer.ErrInstanceNotFound):
		r.Outcome, r.Detail = OK, "credentials accepted (asked for an instance that does not exist)"
	case errors.As(err, &apiErr) && (apiErr.StatusCode == http.StatusUnauthorized || apiErr.StatusCode == http.StatusForbidden):
		r.Outcome = Fail
		r.Detail = fmt.Sprintf("credentials refused (HTTP %d %s): check ZENLAYER_ACCESS_KEY_ID and ZENLAYER_ACCESS_KEY_PASSWORD", apiErr.StatusCode, apiErr.Code)
	case errors.As(err, &apiErr):
		r.Outcome, r.Detail = Fail, fmt.Sprintf("answered %v", err)
	default:
		r.Outcome, r.Detail = Fail, fmt.Sprintf("cannot reach it (%v): check ZENLAYER_API_URL and the network", err)
	}
	return r
}

func checkClock(ctx context.Context, c Config, dbOK bool) Result {
	r := Result{Name: "clock"}
	if !dbOK || c.Store == nil {
		r.Outcome, r.Detail = Skip, "needs the database"
		return r
	}
	ctx, cancel := context.WithTimeout(ctx, Timeout)
	defer cancel()
	skew, err := c.Store.ClockSkew(ctx)
	switch {
	case err != nil:
		r.Outcome, r.Detail = Fail, err.Error()
	case skew > MaxClockSkew || -skew > MaxClockSkew:
		r.Outcome = Fail
		r.Detail = fmt.Sprintf("this machine's clock is %s from the database's (at most %s): run NTP on both", skew.Round(time.Millisecond), MaxClockSkew)
	default:
		r.Outcome, r.Detail = OK, fmt.Sprintf("within %s of the database's", max(skew, -skew).Round(time.Millisecond))
	}
	return r
}

func checkWebhook(ctx context.Context, c Config) Result {
	r := Result{Name: "webhook"}
	if c.WebhookURL == "" {
		r.Outcome, r.Detail = Skip, "not configured (VNCFLEET_WEBHOOK_URL)"
		return r
	}
	u, err := url.Parse(c.WebhookURL)
	if err != nil || u.Host == "" {
		r.Outcome, r.Detail = Fail, "VNCFLEET_WEBHOOK_URL is not a URL"
		return r
	}
	// A connection, not a request: the receiver sees no unsigned event, and a
	// receiver that refuses HEAD or GET is not taken for an absent one.
	port := u.Port()
	if port == "" {
		port = map[string]string{"https": "443"}[u.Scheme]
		if port == "" {
			port = "80"
		}
	}
	addr := net.JoinHostPort(u.Hostname(), port)
	ctx, cancel := context.WithTimeout(ctx, Timeout)
	defer cancel()
	conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
	if err != nil {
		r.Outcome, r.Detail = Fail, fmt.Sprintf("cannot connect to %s (%v)", addr, err)
		return r
	}
	conn.Close()
	r.Outcome, r.Detail = OK, fmt.Sprintf("%s accepts connections", addr)
	return r
}
