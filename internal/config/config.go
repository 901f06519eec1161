// Package config loads vncfleet's settings in three layers: the defaults, then an
// optional YAML file (`--config FILE`, every key shown in configs/vncfleet.example.yaml),
// then the environment, which wins. Every secret may also come from a file, named by
// the variable with a _FILE suffix (or by the YAML key with a _file suffix), so that no
// secret needs to be on a command line or in a config file checked into a repository.
//
// All checks are in Validate; its errors name the YAML key and the environment
// variable. No error, String, Format or LogValue of this package shows a secret.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/robfig/cron/v3"
	"gopkg.in/yaml.v3"

	"github.com/vncfleet/vncfleet/fleet"
	"github.com/vncfleet/vncfleet/internal/lifecycle"
	"github.com/vncfleet/vncfleet/internal/metrics"
	"github.com/vncfleet/vncfleet/internal/secretbox"
	"github.com/vncfleet/vncfleet/internal/server"
	"github.com/vncfleet/vncfleet/internal/store"
	"github.com/vncfleet/vncfleet/internal/webhook"
	"github.com/vncfleet/vncfleet/jobs"
	"github.com/vncfleet/vncfleet/ratelimit"
	"github.com/vncfleet/vncfleet/vnccloud"
	"github.com/vncfleet/vncfleet/zenlayer"
)

// Config is every setting. The YAML key of each field is in its tag; the environment
// variable, when there is one, in its comment. An environment variable set to the
// empty string counts as unset.
type Config struct {
	// DatabaseURL is PostgreSQL, a pgx URL or key=value DSN (DATABASE_URL, or
	// DATABASE_URL_FILE since it may hold a password). Default
	// postgres:///vncfleet?host=/var/run/postgresql: the local server over its Unix
	// socket, as the contract says.
	DatabaseURL     string `yaml:"database_url"`
	DatabaseURLFile string `yaml:"database_url_file"`
	// Listen is where `serve` listens (VNCFLEET_LISTEN). Default 127.0.0.1:8080:
	// loopback, so nothing is exposed until asked.
	Listen string `yaml:"listen"`
	// URL is where the CLI finds the server (VNCFLEET_URL). Default
	// http://127.0.0.1:8080, the default Listen.
	URL string `yaml:"url"`
	// Token is the bearer token the CLI sends and `serve` accepts as an administrator
	// (VNCFLEET_TOKEN or _FILE). None by default: without it and without Tokens, the API
	// refuses every request.
	Token     string `yaml:"token"`
	TokenFile string `yaml:"token_file"`
	// SecretKey encrypts cloud passwords at rest: 32 bytes, base64
	// (VNCFLEET_SECRET_KEY or _FILE). None by default: `serve` refuses to store
	// passwords without it, rather than store them in clear.
	SecretKey     string `yaml:"secret_key"`
	SecretKeyFile string `yaml:"secret_key_file"`
	// OldSecretKeys still decrypt what they encrypted, for key rotation
	// (VNCFLEET_OLD_SECRET_KEYS, comma-separated, or _FILE, one per line or
	// comma-separated). None by default.
	OldSecretKeys     []string `yaml:"old_secret_keys"`
	OldSecretKeysFile string   `yaml:"old_secret_keys_file"`
	// SimListen is where `vncfleet sim` listens (VNCFLEET_SIM_LISTEN). Default
	// 127.0.0.1:8090, next to Listen.
	SimListen string `yaml:"sim_listen"`
	// Tokens are the API's bearer tokens and their roles (file only: a list does not
	// fit an environment variable). None by default.
	Tokens []Token `yaml:"tokens"`
	// MaxUploadBytes bounds one manifest upload (VNCFLEET_MAX_UPLOAD_BYTES). Default
	// 256 MiB: about 3 million rows, more than any fleet, less than hurts the server.
	MaxUploadBytes int64 `yaml:"max_upload_bytes"`
	// MaxCellBytes and MaxColumns bound one manifest cell and the manifest's header
	// (file only): a longer cell or a wider header is a problem of its line and
	// column, found without buffering it. Defaults fleet.DefaultMaxCellBytes (64 KiB)
	// and fleet.DefaultMaxColumns (256).
	MaxCellBytes int `yaml:"max_cell_bytes"`
	MaxColumns   int `yaml:"max_columns"`
	// MaxDeletionsPercent and MaxDeletionsMin give the replace guard's default limit
	// (--max-deletions overrides it): that share of the fleet's present devices, and
	// at least that many. Defaults 10 and 1, the contract's: a replace upload that
	// would delete more is most likely the wrong file.
	MaxDeletionsPercent float64 `yaml:"max_deletions_percent"`
	MaxDeletionsMin     int     `yaml:"max_deletions_min"`
	// InlineApplyRows: a manifest of up to this many rows reaches its devices inside
	// its upload's transaction; a larger one is applied afterwards by the
	// apply_manifest job, in batches. Default 10,000: under a second of the upload.
	InlineApplyRows int `yaml:"inline_apply_rows"`

	// TrustedProxies are addresses or CIDR prefixes of reverse proxies whose
	// X-Forwarded-For names the client in the audit log and the failed-login limit
	// (VNCFLEET_TRUSTED_PROXIES, comma-separated). None by default: the connection's
	// peer is the client, and X-Forwarded-For is ignored, since anyone can send it.
	TrustedProxies []string `yaml:"trusted_proxies"`
	// ClaimTTL is how long a single-use credential claim token may be redeemed.
	// Default 15m: long enough to carry to a flashing station, short enough that a
	// lost one is soon worthless. A request may ask for up to 24h.
	ClaimTTL time.Duration `yaml:"claim_ttl"`

	VNCCloud  VNCCloud  `yaml:"vnccloud"`
	Zenlayer  Zenlayer  `yaml:"zenlayer"`
	Workers   Workers   `yaml:"workers"`
	Readiness Readiness `yaml:"readiness"`
	Rotation  Rotation  `yaml:"rotation"`
	Reconcile Reconcile `yaml:"reconcile"`
	Webhook   Webhook   `yaml:"webhook"`
	HTTP      HTTP      `yaml:"http"`

	// CAFile names PEM CA certificates the CLI trusts for URL besides the system's
	// (VNCFLEET_CA_FILE), for a server whose certificate a private CA signed. None by
	// default.
	CAFile string `yaml:"ca_file"`

	// MetricsInterval is how often the fleet-wide gauges of /metrics (devices by
	// status, River's queue...) are read from the database, by one process of the
	// cluster. Default 20s: fresh enough for minute-long alert windows, rare enough
	// that the reads cost the database little.
	MetricsInterval time.Duration `yaml:"metrics_interval"`

	// LogLevel is debug, info, warn or error (VNCFLEET_LOG_LEVEL). Default info.
	LogLevel string `yaml:"log_level"`
	// LogFormat is text, for people, or json, for log collectors
	// (VNCFLEET_LOG_FORMAT). Default text.
	LogFormat string `yaml:"log_format"`
}

// Roles a Token may hold.
var Roles = []string{"upload", "read", "secrets", "admin"}

// Token is one API bearer token. Its value comes from Token or from the file
// TokenFile (relative to the config file's directory).
type Token struct {
	// Name identifies the token in logs and the audit trail.
	Name      string `yaml:"name"`
	Token     string `yaml:"token"`
	TokenFile string `yaml:"token_file"`
	// Roles among upload, read, secrets (read cloud passwords) and admin (everything).
	Roles []string `yaml:"roles"`
	// Fleets limits the token to these fleets. None (the default): every fleet.
	Fleets []string `yaml:"fleets"`
}

// String shows the token's name and roles, never its value.
func (t Token) String() string {
	return fmt.Sprintf("config.Token{Name: %s, Roles: %v, Fleets: %v, Token: %s}", t.Name, t.Roles, t.Fleets, mask(t.Token))
}

// Format prints String for every verb, so the value shows in no format either.
func (t Token) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, t.String()) }

// VNCCloud is the VNC Cloud API account.
type VNCCloud struct {
	// APIURL is the API's base URL (VNCCLOUD_API_URL). Default
	// https://api.vnc.com/cloud/1.1; the simulator serves the same path.
	APIURL string `yaml:"api_url"`
	// APIKey and APISecret are the account's credentials, sent as Basic auth
	// (VNCCLOUD_API_KEY, VNCCLOUD_API_SECRET or _FILE). None by default.
	APIKey        string `yaml:"api_key"`
	APISecret     string `yaml:"api_secret"`
	APISecretFile string `yaml:"api_secret_file"`
	// Rate is the most requests per second, all `serve` processes together
	// (VNCCLOUD_RATE). Default 10, the contract's. 0 means no limit (benchmarks
	// against the simulator only).
	Rate float64 `yaml:"rate"`
	// OnboardingShare is the share of the rate that onboarding (manifests' creates,
	// updates and deletes, readiness polls of new devices) gets while a rotation also
	// waits for it (VNCCLOUD_ONBOARDING_SHARE); rotation gets the rest, and either gets
	// all of it while the other has nothing to send. Default 0.9: onboarding first,
	// and a rotation still advances during a long onboarding. 1 puts onboarding
	// strictly first. Within (0, 1].
	OnboardingShare float64 `yaml:"onboarding_share"`
	// RateMargin spaces requests (1+RateMargin)/Rate apart (VNCCLOUD_RATE_MARGIN):
	// RateMargin seconds in every second are the room for the jitter between a send
	// slot and the request's arrival at the API, and the share of the rate left unspent.
	// Default ratelimit.DefaultMargin, 0.05 (50ms; 0.02 spends more of the rate where
	// the machine is not starved and the API is near); raise it (0.08) when the path to
	// the API jitters more, over a WAN. Within (0, 0.5].
	RateMargin float64 `yaml:"rate_margin"`
	// Timeout bounds one HTTP request. Default 30s: long enough for a slow answer,
	// short enough that a hung connection does not hold a device.
	Timeout time.Duration `yaml:"timeout"`
}

// Zenlayer is the Zenlayer Cloud account that VNC console URLs are fetched with.
type Zenlayer struct {
	// APIURL is the API's base URL (ZENLAYER_API_URL). Default
	// https://console.zenlayer.com/api/v2.
	APIURL string `yaml:"api_url"`
	// AccessKeyID and AccessKeyPassword sign the requests (ZENLAYER_ACCESS_KEY_ID,
	// ZENLAYER_ACCESS_KEY_PASSWORD or _FILE). None by default.
	AccessKeyID           string `yaml:"access_key_id"`
	AccessKeyPassword     string `yaml:"access_key_password"`
	AccessKeyPasswordFile string `yaml:"access_key_password_file"`
	// Rate of DescribeVncUrl calls per second, all processes together. Default 5: a
	// console URL is a convenience, it should not eat Zenlayer's API quota.
	Rate float64 `yaml:"rate"`
}

// Workers tunes the River workers (package jobs gives the reasoning of each).
type Workers struct {
	// Concurrency is River jobs at once per process. Default 20, matching the
	// database pool of 20 connections each job may need.
	Concurrency int `yaml:"concurrency"`
	// BatchSize is devices one work job claims at a time. Default 250: large enough
	// to amortise a job, small enough that a dead process delays few devices. Under a
	// rate limit, batches are cut to what the rate sends in a third of claim_lease.
	BatchSize int `yaml:"batch_size"`
	// Chains is work jobs per manifest at once. Default 4.
	Chains int `yaml:"chains"`
	// Fanout is API calls at once within a batch. Default 64: with the rate limit as
	// the real bound, enough to keep it busy through a slow API.
	Fanout int `yaml:"fanout"`
	// ClaimLease bounds how long a dead process delays the devices it held. Default
	// 2m; at least twice CallTimeout, so a live call never outlives its claim.
	ClaimLease time.Duration `yaml:"claim_lease"`
	// CallTimeout bounds one API call inside a job, retries of that call included.
	// Default 30s.
	CallTimeout time.Duration `yaml:"call_timeout"`
	// MaxAttempts is transient failures in a row before a device is failed. Default 10.
	MaxAttempts int `yaml:"max_attempts"`
	// ShutdownTimeout is how long SIGTERM waits for in-flight work before cancelling
	// it. Default 30s, within the usual 60s a supervisor waits before SIGKILL.
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout"`
}

// Readiness shapes the polling of an address's /ready after a create, change or
// reset: exponential backoff from InitialInterval to MaxInterval, for MaxElapsed.
type Readiness struct {
	// InitialInterval is the first wait. Default 1s: most addresses are ready in seconds.
	InitialInterval time.Duration `yaml:"initial_interval"`
	// MaxInterval caps the wait between polls. Default 30s.
	MaxInterval time.Duration `yaml:"max_interval"`
	// Multiplier grows the wait after each poll. Default 1.6.
	Multiplier float64 `yaml:"multiplier"`
	// MaxElapsed: still not ready after this long, the device is failed. Default 10m.
	MaxElapsed time.Duration `yaml:"max_elapsed"`
	// Floor and Ceiling bound the first-poll delay that serve learns from the
	// account's answers (InitialInterval is where it starts). Defaults 100ms and 15s;
	// they widen to admit InitialInterval. Floor = Ceiling = InitialInterval turns
	// the learning off.
	Floor   time.Duration `yaml:"floor"`
	Ceiling time.Duration `yaml:"ceiling"`
	// PendingTarget is the share of the scouts' first polls (one device in 16 is
	// polled at the learned delay, the others 5% later) that the learning lets find
	// the address still pending: the second polls it spends to keep the first poll as
	// early as will do. Default 0.01, within (0, 0.5].
	PendingTarget float64 `yaml:"pending_target"`
}

// Rotation schedules cloud password rotation.
type Rotation struct {
	// Schedule is a standard 5-field cron expression; "" disables scheduled rotation.
	// Default "0 3 * * *": nightly, off hours.
	Schedule string `yaml:"schedule"`
	// MaxAge: passwords older than this are due. Default 720h (30 days).
	MaxAge time.Duration `yaml:"max_age"`
	// Window spreads a scheduled run's resets over this long, so they do not take the
	// whole API rate at once. Default 1h.
	Window time.Duration `yaml:"window"`
}

// Reconcile schedules the comparison of the database with what VNC Cloud holds.
type Reconcile struct {
	// Schedule is a standard 5-field cron expression; "" disables it. Default
	// "*/15 * * * *".
	Schedule string `yaml:"schedule"`
	// ForeignPolicy is what to do with addresses vncfleet did not create: "report"
	// (default: someone else's addresses are not ours to delete) or "delete".
	ForeignPolicy string `yaml:"foreign_policy"`
}

// Webhook announces device events by signed POSTs.
type Webhook struct {
	// URL receives the events (VNCFLEET_WEBHOOK_URL). None by default: no webhook.
	URL string `yaml:"url"`
	// Secret is the HMAC key that signs each body (VNCFLEET_WEBHOOK_SECRET or
	// _FILE). Required with a URL: an unsigned webhook can be forged.
	Secret     string `yaml:"secret"`
	SecretFile string `yaml:"secret_file"`
	// PreviousSecret is the secret being rotated out (VNCFLEET_WEBHOOK_PREVIOUS_SECRET
	// or _FILE): while it is set, every delivery carries a signature by each secret, so
	// a receiver may switch to the new one whenever it likes. None by default.
	PreviousSecret     string `yaml:"previous_secret"`
	PreviousSecretFile string `yaml:"previous_secret_file"`
	// Rate is deliveries per second, all processes together. Default 5.
	Rate float64 `yaml:"rate"`
	// MaxAttempts before an event is given up. Default 10 (about a day of backoff).
	MaxAttempts int `yaml:"max_attempts"`
}

// HTTP is how `serve` answers: TLS and timeouts. The defaults of the timeouts are
// the server's (internal/server), so the two cannot disagree.
type HTTP struct {
	// TLSCertFile and TLSKeyFile are a PEM certificate (chain) and its key
	// (VNCFLEET_TLS_CERT_FILE, VNCFLEET_TLS_KEY_FILE): with both, `serve` answers
	// HTTPS only (TLS 1.2 or later), and reads the files again when they change, so
	// short-lived certificates need no restart. None by default: plain HTTP, fit for
	// loopback or behind a TLS-terminating proxy.
	TLSCertFile string `yaml:"tls_cert_file"`
	TLSKeyFile  string `yaml:"tls_key_file"`
	// ReadHeaderTimeout bounds reading a request's headers. Default 10s.
	ReadHeaderTimeout time.Duration `yaml:"read_header_timeout"`
	// UploadIdleTimeout: an upload whose body sends nothing for this long is answered
	// 408 and stores nothing (VNCFLEET_UPLOAD_IDLE_TIMEOUT). Default 30s.
	UploadIdleTimeout time.Duration `yaml:"upload_idle_timeout"`
	// WriteTimeout bounds each write of an answer (each chunk of an export), so a
	// client that stops reading is dropped. Default 30s.
	WriteTimeout time.Duration `yaml:"write_timeout"`
	// IdleTimeout closes a keep-alive connection idle this long. Default 2m.
	IdleTimeout time.Duration `yaml:"idle_timeout"`
	// MaxConcurrentUploads bounds the uploads a process streams at once (each holds a
	// database connection); one more waits up to UploadIdleTimeout, then gets 503.
	// Default 4.
	MaxConcurrentUploads int `yaml:"max_concurrent_uploads"`
}

// Defaults returns the configuration with nothing set.
func Defaults() *Config {
	return &Config{
		DatabaseURL:         "postgres:///vncfleet?host=/var/run/postgresql",
		Listen:              "127.0.0.1:8080",
		URL:                 "http://127.0.0.1:8080",
		SimListen:           "127.0.0.1:8090",
		MaxUploadBytes:      server.DefaultMaxUploadBytes,
		ClaimTTL:            server.DefaultClaimTTL,
		MaxCellBytes:        fleet.DefaultMaxCellBytes,
		MaxColumns:          fleet.DefaultMaxColumns,
		MaxDeletionsPercent: server.DefaultMaxDeletionsPercent,
		MaxDeletionsMin:     server.DefaultMaxDeletionsMin,
		InlineApplyRows:     store.DefaultInlineApplyRows,
		MetricsInterval:     metrics.DefaultDBInterval,
		VNCCloud:            VNCCloud{APIURL: vnccloud.DefaultBaseURL, Rate: 10, OnboardingShare: ratelimit.DefaultOnboardingShare, RateMargin: ratelimit.DefaultMargin, Timeout: vnccloud.DefaultTimeout},
		Zenlayer:            Zenlayer{APIURL: zenlayer.DefaultBaseURL, Rate: 5},
		Workers: Workers{Concurrency: jobs.DefaultMaxWorkers, BatchSize: jobs.DefaultBatchSize, Chains: jobs.DefaultChains,
			Fanout: jobs.DefaultFanout, ClaimLease: jobs.DefaultClaimLease, CallTimeout: jobs.DefaultCallTimeout,
			MaxAttempts: jobs.DefaultMaxAttempts, ShutdownTimeout: 30 * time.Second},
		Readiness: Readiness{InitialInterval: jobs.DefaultReadyInitial, MaxInterval: jobs.DefaultReadyMax,
			Multiplier: jobs.DefaultReadyMultiplier, MaxElapsed: jobs.DefaultReadyMaxElapsed,
			Floor: jobs.DefaultReadyFloor, Ceiling: jobs.DefaultReadyCeiling, PendingTarget: jobs.DefaultReadyPending},
		Rotation:  Rotation{Schedule: "0 3 * * *", MaxAge: lifecycle.DefaultMaxAge, Window: lifecycle.DefaultWindow},
		Reconcile: Reconcile{Schedule: "*/15 * * * *", ForeignPolicy: "report"},
		Webhook:   Webhook{Rate: webhook.DefaultRate, MaxAttempts: webhook.DefaultMaxAttempts},
		HTTP: HTTP{ReadHeaderTimeout: server.DefaultReadHeaderTimeout, UploadIdleTimeout: server.DefaultUploadIdleTimeout,
			WriteTimeout: server.DefaultWriteTimeout, IdleTimeout: server.DefaultIdleTimeout,
			MaxConcurrentUploads: server.DefaultMaxConcurrentUploads},
		LogLevel:  "info",
		LogFormat: "text",
	}
}

// Load reads the YAML file at path (none if "") over the defaults, then the
// environment over both, reads the secret files, and validates. getenv defaults to
// os.Getenv.
func Load(path string, getenv func(string) string) (*Config, error) {
	if getenv == nil {
		getenv = os.Getenv
	}
	cfg := Defaults()
	if path != "" {
		if err := cfg.loadFile(path); err != nil {
			return nil, err
		}
	}
	if err := cfg.applyEnv(getenv); err != nil {
		return nil, err
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return cfg, nil
}

// yamlValue matches the `value` yaml.v3 quotes in its type errors: redacted, since the
// value may be a secret in the wrong place.
var yamlValue = regexp.MustCompile("`[^`]*`")

func (c *Config) loadFile(path string) error {
	body, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	// Decoded twice: over the defaults, and alone, to tell what the file itself sets
	// (database_url has a default, yet the file may set database_url_file).
	var explicit Config
	for _, dst := range []*Config{c, &explicit} {
		if err := decodeStrict(body, dst); err != nil {
			return fmt.Errorf("config %s: %s", path, yamlValue.ReplaceAllString(err.Error(), "`…`"))
		}
	}
	explicitValue := map[string]bool{}
	for _, s := range explicit.secrets() {
		explicitValue[s.key] = *s.value != ""
	}
	// Secret files named in the file are relative to it.
	dir := filepath.Dir(path)
	for _, s := range c.secrets() {
		if s.file == nil || *s.file == "" {
			continue
		}
		if explicitValue[s.key] {
			return fmt.Errorf("config %s: set only one of %s and %s_file", path, s.key, s.key)
		}
		v, err := readSecretFile(resolve(dir, *s.file))
		if err != nil {
			return fmt.Errorf("config %s: %s_file: %w", path, s.key, err)
		}
		*s.value = v
	}
	if c.OldSecretKeysFile != "" {
		if len(c.OldSecretKeys) > 0 {
			return fmt.Errorf("config %s: set only one of old_secret_keys and old_secret_keys_file", path)
		}
		v, err := readSecretFile(resolve(dir, c.OldSecretKeysFile))
		if err != nil {
			return fmt.Errorf("config %s: old_secret_keys_file: %w", path, err)
		}
		c.OldSecretKeys = splitKeys(v)
	}
	for i := range c.Tokens {
		t := &c.Tokens[i]
		if t.TokenFile == "" {
			continue
		}
		if t.Token != "" {
			return fmt.Errorf("config %s: tokens[%d]: set only one of token and token_file", path, i)
		}
		if t.Token, err = readSecretFile(resolve(dir, t.TokenFile)); err != nil {
			return fmt.Errorf("config %s: tokens[%d].token_file: %w", path, i, err)
		}
	}
	return nil
}

// decodeStrict decodes YAML, refusing unknown keys: a misspelt key is an error, not a
// silently ignored setting. An empty file sets nothing.
func decodeStrict(body []byte, dst *Config) error {
	dec := yaml.NewDecoder(bytes.NewReader(body))
	dec.KnownFields(true)
	if err := dec.Decode(dst); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	return nil
}

func resolve(dir, p string) string {
	if filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(dir, p)
}

// readSecretFile reads a secret, trimmed of the white space editors and `echo` add.
// Errors name the file, never its content.
func readSecretFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}

// splitKeys splits a list of keys on commas and newlines.
func splitKeys(s string) []string {
	var keys []string
	for _, k := range strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == '\n' || r == '\r' }) {
		if k = strings.TrimSpace(k); k != "" {
			keys = append(keys, k)
		}
	}
	return keys
}

// secret is one secret setting: its YAML key (dotted path), environment variable,
// value and, where the YAML may name a file, that field.
type secret struct {
	key, env string
	value    *string
	file     *string
}

func (c *Config) secrets() []secret {
	return []secret{
		{"database_url", "DATABASE_URL", &c.DatabaseURL, &c.DatabaseURLFile},
		{"token", "VNCFLEET_TOKEN", &c.Token, &c.TokenFile},
		{"secret_key", "VNCFLEET_SECRET_KEY", &c.SecretKey, &c.SecretKeyFile},
		{"vnccloud.api_secret", "VNCCLOUD_API_SECRET", &c.VNCCloud.APISecret, &c.VNCCloud.APISecretFile},
		{"zenlayer.access_key_password", "ZENLAYER_ACCESS_KEY_PASSWORD", &c.Zenlayer.AccessKeyPassword, &c.Zenlayer.AccessKeyPasswordFile},
		{"webhook.secret", "VNCFLEET_WEBHOOK_SECRET", &c.Webhook.Secret, &c.Webhook.SecretFile},
		{"webhook.previous_secret", "VNCFLEET_WEBHOOK_PREVIOUS_SECRET", &c.Webhook.PreviousSecret, &c.Webhook.PreviousSecretFile},
	}
}

// envSecret reads NAME, or the file named by NAME_FILE; ok is false when neither is set.
func envSecret(getenv func(string) string, name string) (value string, ok bool, err error) {
	v, f := getenv(name), getenv(name+"_FILE")
	switch {
	case v != "" && f != "":
		return "", false, fmt.Errorf("config: set only one of %s and %s_FILE", name, name)
	case v != "":
		return v, true, nil
	case f != "":
		v, err := readSecretFile(f)
		if err != nil {
			return "", false, fmt.Errorf("config: %s_FILE: %w", name, err)
		}
		return v, true, nil
	}
	return "", false, nil
}

func (c *Config) applyEnv(getenv func(string) string) error {
	for _, s := range c.secrets() {
		v, ok, err := envSecret(getenv, s.env)
		if err != nil {
			return err
		}
		if ok {
			*s.value = v
		}
	}
	if v, ok, err := envSecret(getenv, "VNCFLEET_OLD_SECRET_KEYS"); err != nil {
		return err
	} else if ok {
		c.OldSecretKeys = splitKeys(v)
	}
	for name, dst := range map[string]*string{
		"VNCFLEET_LISTEN":        &c.Listen,
		"VNCFLEET_URL":           &c.URL,
		"VNCFLEET_SIM_LISTEN":    &c.SimListen,
		"VNCCLOUD_API_URL":       &c.VNCCloud.APIURL,
		"VNCCLOUD_API_KEY":       &c.VNCCloud.APIKey,
		"ZENLAYER_API_URL":       &c.Zenlayer.APIURL,
		"ZENLAYER_ACCESS_KEY_ID": &c.Zenlayer.AccessKeyID,
		"VNCFLEET_WEBHOOK_URL":   &c.Webhook.URL,
		"VNCFLEET_LOG_LEVEL":     &c.LogLevel,
		"VNCFLEET_LOG_FORMAT":    &c.LogFormat,
		"VNCFLEET_TLS_CERT_FILE": &c.HTTP.TLSCertFile,
		"VNCFLEET_TLS_KEY_FILE":  &c.HTTP.TLSKeyFile,
		"VNCFLEET_CA_FILE":       &c.CAFile,
	} {
		if v := getenv(name); v != "" {
			*dst = v
		}
	}
	if v := getenv("VNCFLEET_TRUSTED_PROXIES"); v != "" {
		c.TrustedProxies = splitKeys(v)
	}
	if v := getenv("VNCCLOUD_RATE"); v != "" {
		f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if err != nil {
			return fmt.Errorf("config: VNCCLOUD_RATE: %q is not a number", v)
		}
		c.VNCCloud.Rate = f
	}
	if v := getenv("VNCCLOUD_ONBOARDING_SHARE"); v != "" {
		f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if err != nil {
			return fmt.Errorf("config: VNCCLOUD_ONBOARDING_SHARE: %q is not a number", v)
		}
		c.VNCCloud.OnboardingShare = f
	}
	if v := getenv("VNCCLOUD_RATE_MARGIN"); v != "" {
		f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if err != nil {
			return fmt.Errorf("config: VNCCLOUD_RATE_MARGIN: %q is not a number", v)
		}
		c.VNCCloud.RateMargin = f
	}
	if v := getenv("VNCFLEET_UPLOAD_IDLE_TIMEOUT"); v != "" {
		d, err := time.ParseDuration(strings.TrimSpace(v))
		if err != nil {
			return fmt.Errorf("config: VNCFLEET_UPLOAD_IDLE_TIMEOUT: %q is not a duration, like \"30s\"", v)
		}
		c.HTTP.UploadIdleTimeout = d
	}
	if v := getenv("VNCFLEET_MAX_UPLOAD_BYTES"); v != "" {
		n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		if err != nil {
			return fmt.Errorf("config: VNCFLEET_MAX_UPLOAD_BYTES: %q is not a whole number of bytes", v)
		}
		c.MaxUploadBytes = n
	}
	return nil
}

// envOf names the environment variable of a YAML key, for error messages.
var envOf = map[string]string{
	"database_url":                 "DATABASE_URL",
	"listen":                       "VNCFLEET_LISTEN",
	"url":                          "VNCFLEET_URL",
	"token":                        "VNCFLEET_TOKEN",
	"secret_key":                   "VNCFLEET_SECRET_KEY",
	"old_secret_keys":              "VNCFLEET_OLD_SECRET_KEYS",
	"sim_listen":                   "VNCFLEET_SIM_LISTEN",
	"max_upload_bytes":             "VNCFLEET_MAX_UPLOAD_BYTES",
	"vnccloud.api_url":             "VNCCLOUD_API_URL",
	"vnccloud.api_key":             "VNCCLOUD_API_KEY",
	"vnccloud.api_secret":          "VNCCLOUD_API_SECRET",
	"vnccloud.rate":                "VNCCLOUD_RATE",
	"zenlayer.api_url":             "ZENLAYER_API_URL",
	"zenlayer.access_key_id":       "ZENLAYER_ACCESS_KEY_ID",
	"zenlayer.access_key_password": "ZENLAYER_ACCESS_KEY_PASSWORD",
	"webhook.url":                  "VNCFLEET_WEBHOOK_URL",
	"webhook.secret":               "VNCFLEET_WEBHOOK_SECRET",
	"webhook.previous_secret":      "VNCFLEET_WEBHOOK_PREVIOUS_SECRET",
	"trusted_proxies":              "VNCFLEET_TRUSTED_PROXIES",
	"log_level":                    "VNCFLEET_LOG_LEVEL",
	"log_format":                   "VNCFLEET_LOG_FORMAT",
	"http.tls_cert_file":           "VNCFLEET_TLS_CERT_FILE",
	"http.tls_key_file":            "VNCFLEET_TLS_KEY_FILE",
	"http.upload_idle_timeout":     "VNCFLEET_UPLOAD_IDLE_TIMEOUT",
	"ca_file":                      "VNCFLEET_CA_FILE",
}

// FieldError is one invalid setting. Validate joins them with errors.Join.
type FieldError struct {
	Key    string // YAML key, dotted: "vnccloud.api_url"
	Env    string // its environment variable, if it has one
	Reason string // never contains a secret
}

func (e *FieldError) Error() string {
	if e.Env != "" {
		return fmt.Sprintf("config: %s (%s): %s", e.Key, e.Env, e.Reason)
	}
	return fmt.Sprintf("config: %s: %s", e.Key, e.Reason)
}

// Validate checks every setting, in one place, and reports every problem at once.
func (c *Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, &FieldError{Key: key, Env: envOf[key], Reason: fmt.Sprintf(format, args...)})
	}

	if c.DatabaseURL == "" {
		bad("database_url", "must be set")
	} else if _, err := pgconn.ParseConfig(c.DatabaseURL); err != nil {
		// pgconn's message may quote the URL (with the password masked, but also the
		// rest); say only what kind of problem it is.
		bad("database_url", "not a valid PostgreSQL URL or key=value DSN")
	}
	for key, addr := range map[string]string{"listen": c.Listen, "sim_listen": c.SimListen} {
		if _, port, err := net.SplitHostPort(addr); err != nil || !validPort(port) {
			bad(key, "must be host:port, like 127.0.0.1:8080 (or :8080 for every interface)")
		}
	}
	for key, u := range map[string]string{"url": c.URL, "vnccloud.api_url": c.VNCCloud.APIURL, "zenlayer.api_url": c.Zenlayer.APIURL} {
		if !httpURL(u) {
			bad(key, "must be an http or https URL with a host")
		}
	}

	if c.SecretKey != "" {
		if _, err := secretbox.ParseKey(c.SecretKey); err != nil {
			bad("secret_key", "%v", err) // ParseKey's errors never include the key
		}
	} else if len(c.OldSecretKeys) > 0 {
		bad("old_secret_keys", "old keys need a new secret_key to rotate to")
	}
	for i, k := range c.OldSecretKeys {
		if _, err := secretbox.ParseKey(k); err != nil {
			bad("old_secret_keys", "key %d: %v", i+1, err)
		}
	}

	if (c.HTTP.TLSCertFile == "") != (c.HTTP.TLSKeyFile == "") {
		bad("http.tls_cert_file", "needs http.tls_key_file (VNCFLEET_TLS_KEY_FILE) with it: both or neither")
	}
	if c.MaxUploadBytes < 1 {
		bad("max_upload_bytes", "must be at least 1")
	}
	if c.MaxCellBytes < 1 {
		bad("max_cell_bytes", "must be at least 1")
	}
	if c.MaxColumns < 2 {
		bad("max_columns", "must be at least 2 (device_id and action)")
	}
	if c.MaxDeletionsPercent < 0 || c.MaxDeletionsPercent > 100 {
		bad("max_deletions_percent", "must be 0..100")
	}
	if c.MaxDeletionsMin < 0 {
		bad("max_deletions_min", "must be at least 0")
	}
	if c.InlineApplyRows < 1 {
		bad("inline_apply_rows", "must be at least 1")
	}

	for key, r := range map[string]float64{"vnccloud.rate": c.VNCCloud.Rate, "zenlayer.rate": c.Zenlayer.Rate, "webhook.rate": c.Webhook.Rate} {
		if r < 0 {
			bad(key, "must be at least 0 (0: no limit)")
		}
	}
	if m := c.VNCCloud.RateMargin; !(m > 0 && m <= 0.5) {
		bad("vnccloud.rate_margin", "must be within (0, 0.5]: the share of the rate left for jitter")
	}
	if s := c.VNCCloud.OnboardingShare; !(s > 0 && s <= 1) {
		bad("vnccloud.onboarding_share", "must be within (0, 1]: the share of the rate onboarding gets while a rotation waits too")
	}
	if s := c.VNCCloud.OnboardingShare; !(s > 0 && s <= 1) {
		bad("vnccloud.onboarding_share", "must be within (0, 1]: the share of the rate onboarding gets while a rotation waits too")
	}
	positive := map[string]time.Duration{
		"vnccloud.timeout":           c.VNCCloud.Timeout,
		"workers.claim_lease":        c.Workers.ClaimLease,
		"workers.call_timeout":       c.Workers.CallTimeout,
		"workers.shutdown_timeout":   c.Workers.ShutdownTimeout,
		"readiness.initial_interval": c.Readiness.InitialInterval,
		"readiness.max_interval":     c.Readiness.MaxInterval,
		"readiness.max_elapsed":      c.Readiness.MaxElapsed,
		"readiness.floor":            c.Readiness.Floor,
		"readiness.ceiling":          c.Readiness.Ceiling,
		"rotation.max_age":           c.Rotation.MaxAge,
		"http.read_header_timeout":   c.HTTP.ReadHeaderTimeout,
		"http.upload_idle_timeout":   c.HTTP.UploadIdleTimeout,
		"http.write_timeout":         c.HTTP.WriteTimeout,
		"http.idle_timeout":          c.HTTP.IdleTimeout,
		"metrics_interval":           c.MetricsInterval,
	}
	for key, d := range positive {
		if d <= 0 {
			bad(key, "must be a positive duration, like \"30s\"")
		}
	}
	if c.Rotation.Window < 0 {
		bad("rotation.window", "must not be negative")
	}
	for key, n := range map[string]int{
		"workers.concurrency":         c.Workers.Concurrency,
		"workers.batch_size":          c.Workers.BatchSize,
		"workers.chains":              c.Workers.Chains,
		"workers.fanout":              c.Workers.Fanout,
		"workers.max_attempts":        c.Workers.MaxAttempts,
		"webhook.max_attempts":        c.Webhook.MaxAttempts,
		"http.max_concurrent_uploads": c.HTTP.MaxConcurrentUploads,
	} {
		if n < 1 {
			bad(key, "must be at least 1")
		}
	}
	if c.Workers.CallTimeout > 0 && c.Workers.ClaimLease < 2*c.Workers.CallTimeout {
		bad("workers.claim_lease", "must be at least twice workers.call_timeout (%s), so a live call never outlives its claim", c.Workers.CallTimeout)
	}
	if c.Readiness.Multiplier < 1 {
		bad("readiness.multiplier", "must be at least 1")
	}
	if c.Readiness.Floor > c.Readiness.Ceiling {
		bad("readiness.floor", "must not be above readiness.ceiling")
	}
	if !(c.Readiness.PendingTarget > 0 && c.Readiness.PendingTarget <= 0.5) {
		bad("readiness.pending_target", "must be above 0 and at most 0.5")
	}
	if c.Readiness.MaxInterval > 0 && c.Readiness.MaxInterval < c.Readiness.InitialInterval {
		bad("readiness.max_interval", "must be at least readiness.initial_interval")
	}

	for key, spec := range map[string]string{"rotation.schedule": c.Rotation.Schedule, "reconcile.schedule": c.Reconcile.Schedule} {
		if spec == "" {
			continue
		}
		if _, err := cron.ParseStandard(spec); err != nil {
			bad(key, "not a cron expression (5 fields, like \"0 3 * * *\"; \"\" disables): %v", err)
		}
	}
	if c.Reconcile.ForeignPolicy != "report" && c.Reconcile.ForeignPolicy != "delete" {
		bad("reconcile.foreign_policy", "must be report or delete")
	}

	if c.Webhook.URL != "" {
		if !httpURL(c.Webhook.URL) {
			bad("webhook.url", "must be an http or https URL with a host")
		}
		if c.Webhook.Secret == "" {
			bad("webhook.secret", "a webhook needs a secret to sign its bodies (VNCFLEET_WEBHOOK_SECRET or _FILE)")
		}
	}
	for key, secret := range map[string]string{"webhook.secret": c.Webhook.Secret, "webhook.previous_secret": c.Webhook.PreviousSecret} {
		if secret != "" && len(secret) < MinWebhookSecretLength {
			bad(key, "must be at least %d characters (generate one with: openssl rand -base64 32)", MinWebhookSecretLength)
		}
	}
	if c.Webhook.PreviousSecret != "" && c.Webhook.PreviousSecret == c.Webhook.Secret {
		bad("webhook.previous_secret", "is the same as webhook.secret; during a rotation the new secret goes in webhook.secret")
	}
	if _, err := c.TrustedProxyPrefixes(); err != nil {
		bad("trusted_proxies", "%v", err)
	}
	if c.ClaimTTL < time.Second || c.ClaimTTL > server.DefaultMaxClaimTTL {
		bad("claim_ttl", "must be from 1s to %s", strings.TrimSuffix(server.DefaultMaxClaimTTL.String(), "0m0s"))
	}

	var level slog.Level
	if err := level.UnmarshalText([]byte(c.LogLevel)); err != nil {
		bad("log_level", "must be debug, info, warn or error")
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		bad("log_format", "must be text or json")
	}

	names := map[string]bool{}
	values := map[string]bool{}
	if c.Token != "" {
		values[c.Token] = true
	}
	for i, t := range c.Tokens {
		key := fmt.Sprintf("tokens[%d]", i)
		switch {
		case t.Name == "":
			bad(key+".name", "must be set")
		case names[t.Name]:
			bad(key+".name", "%q is used by another token", t.Name)
		}
		names[t.Name] = true
		switch {
		case t.Token == "":
			bad(key+".token", "token or token_file must be set")
		case values[t.Token]:
			bad(key+".token", "the same value as another token: each token needs its own")
		}
		values[t.Token] = true
		if len(t.Roles) == 0 {
			bad(key+".roles", "must list at least one of %s", strings.Join(Roles, ", "))
		}
		for _, f := range t.Fleets {
			if f == "" {
				bad(key+".fleets", "names an empty fleet")
			}
		}
		for _, r := range t.Roles {
			if !slices.Contains(Roles, r) {
				bad(key+".roles", "unknown role %q (%s)", r, strings.Join(Roles, ", "))
			}
		}
	}
	return errors.Join(errs...)
}

// MinWebhookSecretLength: a shorter HMAC key can be guessed offline from one signed
// delivery. 32 characters, the length of 24 random bytes in base64.
const MinWebhookSecretLength = 32

// TrustedProxyPrefixes parses TrustedProxies: each an address (a prefix of one) or a
// CIDR prefix.
func (c *Config) TrustedProxyPrefixes() ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, p := range c.TrustedProxies {
		if pfx, err := netip.ParsePrefix(p); err == nil {
			out = append(out, pfx.Masked())
			continue
		}
		a, err := netip.ParseAddr(p)
		if err != nil {
			return nil, fmt.Errorf("%q is neither an address nor a CIDR prefix", p)
		}
		out = append(out, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
	}
	return out, nil
}

func validPort(p string) bool {
	n, err := strconv.Atoi(p)
	return err == nil && n >= 0 && n <= 65535
}

func httpURL(s string) bool {
	u, err := url.Parse(s)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != ""
}

// Redacted returns a copy safe to print or log: every secret that is set is replaced
// by "[redacted]" (an unset one stays empty, which is worth seeing), and passwords and
// credential-like query parameters in URLs by "xxxxx".
func (c Config) Redacted() Config {
	r := c
	for _, s := range r.secrets() {
		*s.value = mask(*s.value)
	}
	r.DatabaseURL = redactDSN(c.DatabaseURL)
	if len(c.OldSecretKeys) > 0 {
		r.OldSecretKeys = make([]string, len(c.OldSecretKeys))
		for i := range r.OldSecretKeys {
			r.OldSecretKeys[i] = redacted
		}
	}
	if c.Tokens != nil {
		r.Tokens = make([]Token, len(c.Tokens))
		for i, t := range c.Tokens {
			t.Token = mask(t.Token)
			t.Roles = append([]string(nil), t.Roles...)
			r.Tokens[i] = t
		}
	}
	r.URL = redactURL(c.URL)
	r.VNCCloud.APIURL = redactURL(c.VNCCloud.APIURL)
	r.Zenlayer.APIURL = redactURL(c.Zenlayer.APIURL)
	r.Webhook.URL = redactURL(c.Webhook.URL)
	return r
}

const redacted = "[redacted]"

func mask(s string) string {
	if s == "" {
		return ""
	}
	return redacted
}

// urlMask replaces secrets inside URLs, where "[redacted]" would be percent-encoded
// (the same mask as net/url's URL.Redacted).
const urlMask = "xxxxx"

// redactURL masks a URL's password (user:password@) and any query parameter that
// looks like a credential.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil || u.Scheme == "" {
		if s == "" {
			return ""
		}
		return redacted // unparseable: may be anything
	}
	if u.User != nil {
		if _, has := u.User.Password(); has {
			u.User = url.UserPassword(u.User.Username(), urlMask)
		}
	}
	if q := u.Query(); len(q) > 0 {
		changed := false
		for k := range q {
			if sensitiveParam(k) {
				q.Set(k, urlMask)
				changed = true
			}
		}
		if changed {
			u.RawQuery = q.Encode()
		}
	}
	return u.String()
}

func sensitiveParam(k string) bool {
	k = strings.ToLower(k)
	for _, w := range []string{"password", "secret", "token", "key", "sig"} {
		if strings.Contains(k, w) {
			return true
		}
	}
	return false
}

// dsnPassword matches password=... in a key=value DSN, quoted or not.
var dsnPassword = regexp.MustCompile(`(?i)(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)`)

// redactDSN masks the password of a PostgreSQL URL or key=value DSN.
func redactDSN(s string) string {
	if strings.HasPrefix(s, "postgres://") || strings.HasPrefix(s, "postgresql://") {
		return redactURL(s)
	}
	return dsnPassword.ReplaceAllString(s, "${1}"+redacted)
}

// plain is Config without its methods, so that Format and LogValue can print the
// redacted copy without calling themselves.
type plain Config

// Format prints the redacted configuration for every verb, so that a Config printed
// by mistake (%v, %+v, %#v, %s) shows no secret.
func (c Config) Format(f fmt.State, verb rune) {
	fmt.Fprintf(f, fmt.FormatString(f, verb), plain(c.Redacted()))
}

// LogValue logs the redacted configuration as a group keyed like the YAML file.
func (c Config) LogValue() slog.Value {
	return groupOf(reflect.ValueOf(plain(c.Redacted())))
}

// groupOf turns a settings struct into a slog group keyed by the YAML tags; durations
// are logged as "30s", not nanoseconds.
func groupOf(v reflect.Value) slog.Value {
	var attrs []slog.Attr
	for i := 0; i < v.NumField(); i++ {
		key, _, _ := strings.Cut(v.Type().Field(i).Tag.Get("yaml"), ",")
		if key == "" || key == "-" {
			continue
		}
		f := v.Field(i)
		switch {
		case f.Type() == reflect.TypeOf(time.Duration(0)):
			attrs = append(attrs, slog.String(key, time.Duration(f.Int()).String()))
		case f.Kind() == reflect.Struct:
			attrs = append(attrs, slog.Attr{Key: key, Value: groupOf(f)})
		case f.Kind() == reflect.Slice:
			attrs = append(attrs, slog.String(key, fmt.Sprint(f.Interface())))
		default:
			attrs = append(attrs, slog.Any(key, f.Interface()))
		}
	}
	return slog.GroupValue(attrs...)
}
