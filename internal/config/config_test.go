package config

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"
)

const examplePath = "../../configs/vncfleet.example.yaml"

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func key(b byte) string { return base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{b}, 32)) }

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	require.NoError(t, os.WriteFile(p, []byte(content), 0o600))
	return p
}

// The example file shows every setting with its default: loading it must give
// exactly the defaults, or the example has rotted.
func TestExampleFileIsTheDefaults(t *testing.T) {
	t.Parallel()
	cfg, err := Load(examplePath, env(nil))
	require.NoError(t, err)
	require.Empty(t, cfg.Tokens)
	require.Empty(t, cfg.OldSecretKeys)
	require.Empty(t, cfg.TrustedProxies)
	cfg.Tokens, cfg.OldSecretKeys, cfg.TrustedProxies = nil, nil, nil // [] in the file, nil in Defaults
	require.Equal(t, Defaults(), cfg)
}

// yamlKeys lists the dotted YAML keys of a settings struct.
func yamlKeys(t reflect.Type, prefix string) []string {
	var keys []string
	for i := 0; i < t.NumField(); i++ {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
		if name == "" || name == "-" {
			continue
		}
		keys = append(keys, prefix+name)
		if ft := t.Field(i).Type; ft.Kind() == reflect.Struct && ft != reflect.TypeOf(time.Duration(0)) {
			keys = append(keys, yamlKeys(ft, prefix+name+".")...)
		}
	}
	return keys
}

func mapKeys(m map[string]any, prefix string) []string {
	var keys []string
	for k, v := range m {
		keys = append(keys, prefix+k)
		if sub, ok := v.(map[string]any); ok {
			keys = append(keys, mapKeys(sub, prefix+k+".")...)
		}
	}
	return keys
}

// Every setting of Config is in the example, and the example's comments name every
// environment variable Load reads, and none it does not.
func TestExampleShowsEverySetting(t *testing.T) {
	t.Parallel()
	body, err := os.ReadFile(examplePath)
	require.NoError(t, err)
	var doc map[string]any
	require.NoError(t, yaml.Unmarshal(body, &doc))

	want := yamlKeys(reflect.TypeOf(Config{}), "")
	got := mapKeys(doc, "")
	slices.Sort(want)
	slices.Sort(got)
	require.Equal(t, want, got, "the example shows exactly the settings of Config")
	for _, k := range yamlKeys(reflect.TypeOf(Token{}), "") {
		shown := regexp.MustCompile(`(?m)^#\s+(- )?` + k + `:`).Match(body)
		require.True(t, shown, "the tokens example shows %s", k)
	}

	var mu sync.Mutex
	read := map[string]bool{}
	_, err = Load("", func(k string) string {
		mu.Lock()
		defer mu.Unlock()
		read[k] = true
		return ""
	})
	require.NoError(t, err)
	mentioned := map[string]bool{}
	for _, v := range regexp.MustCompile(`\b[A-Z][A-Z0-9]*_[A-Z0-9_]+\b`).FindAllString(string(body), -1) {
		mentioned[v] = true
	}
	delete(mentioned, "VAR_FILE") // the generic explanation
	for v := range read {
		require.True(t, mentioned[v], "the example does not mention %s", v)
	}
	for v := range mentioned {
		require.True(t, read[v], "the example mentions %s, which Load does not read", v)
	}
}

func TestLayers(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := writeFile(t, dir, "c.yaml", `
listen: 0.0.0.0:9000
sim_listen: 0.0.0.0:9001
vnccloud:
  rate: 3
  api_key: file-key
workers:
  claim_lease: 8s
  call_timeout: 2s
reconcile:
  foreign_policy: report
rotation:
  schedule: ""
log_level: debug
`)
	cfg, err := Load(path, env(map[string]string{
		"VNCFLEET_LISTEN":           "127.0.0.1:7000",
		"VNCFLEET_OLD_SECRET_KEYS":  key(1) + " , " + key(2),
		"VNCFLEET_SECRET_KEY":       key(3),
		"VNCCLOUD_API_KEY":          "env-key",
		"VNCFLEET_MAX_UPLOAD_BYTES": "1024",
		"VNCFLEET_LOG_FORMAT":       "json",
	}))
	require.NoError(t, err)
	require.Equal(t, "127.0.0.1:7000", cfg.Listen, "environment wins over the file")
	require.Equal(t, "0.0.0.0:9001", cfg.SimListen, "the file wins over the default")
	require.Equal(t, "env-key", cfg.VNCCloud.APIKey)
	require.Equal(t, 3.0, cfg.VNCCloud.Rate)
	require.Equal(t, 8*time.Second, cfg.Workers.ClaimLease, "durations as Go durations")
	require.Equal(t, "", cfg.Rotation.Schedule, "an explicit empty schedule disables rotation")
	require.Equal(t, "*/15 * * * *", cfg.Reconcile.Schedule, "unset keys keep their default")
	require.Equal(t, []string{key(1), key(2)}, cfg.OldSecretKeys)
	require.Equal(t, int64(1024), cfg.MaxUploadBytes)
	require.Equal(t, "debug", cfg.LogLevel)
	require.Equal(t, "json", cfg.LogFormat)
}

// longHookSecret is a webhook secret of the required length.
const longHookSecret = "hs-0123456789abcdef0123456789abcdef"

func TestEveryVariable(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for _, tc := range []struct {
		env, value string
		get        func(*Config) any
		want       any
	}{
		{"DATABASE_URL", "postgres://db/x", func(c *Config) any { return c.DatabaseURL }, "postgres://db/x"},
		{"VNCFLEET_LISTEN", ":1", func(c *Config) any { return c.Listen }, ":1"},
		{"VNCFLEET_URL", "https://fleet.example", func(c *Config) any { return c.URL }, "https://fleet.example"},
		{"VNCFLEET_TOKEN", "tok", func(c *Config) any { return c.Token }, "tok"},
		{"VNCFLEET_SECRET_KEY", key(9), func(c *Config) any { return c.SecretKey }, key(9)},
		{"VNCCLOUD_API_URL", "http://sim:8090/cloud/1.1", func(c *Config) any { return c.VNCCloud.APIURL }, "http://sim:8090/cloud/1.1"},
		{"VNCCLOUD_API_KEY", "k", func(c *Config) any { return c.VNCCloud.APIKey }, "k"},
		{"VNCCLOUD_API_SECRET", "s", func(c *Config) any { return c.VNCCloud.APISecret }, "s"},
		{"VNCCLOUD_RATE", "0", func(c *Config) any { return c.VNCCloud.Rate }, 0.0},
		{"VNCCLOUD_RATE", "2.5", func(c *Config) any { return c.VNCCloud.Rate }, 2.5},
		{"ZENLAYER_API_URL", "http://zl", func(c *Config) any { return c.Zenlayer.APIURL }, "http://zl"},
		{"ZENLAYER_ACCESS_KEY_ID", "id", func(c *Config) any { return c.Zenlayer.AccessKeyID }, "id"},
		{"ZENLAYER_ACCESS_KEY_PASSWORD", "pw", func(c *Config) any { return c.Zenlayer.AccessKeyPassword }, "pw"},
		{"VNCFLEET_SIM_LISTEN", "0.0.0.0:1", func(c *Config) any { return c.SimListen }, "0.0.0.0:1"},
		{"VNCFLEET_MAX_UPLOAD_BYTES", "10", func(c *Config) any { return c.MaxUploadBytes }, int64(10)},
		{"VNCFLEET_WEBHOOK_URL", "https://hook", func(c *Config) any { return c.Webhook.URL }, "https://hook"},
		{"VNCFLEET_WEBHOOK_SECRET", longHookSecret, func(c *Config) any { return c.Webhook.Secret }, longHookSecret},
		{"VNCFLEET_WEBHOOK_PREVIOUS_SECRET", longHookSecret, func(c *Config) any { return c.Webhook.PreviousSecret }, longHookSecret},
		{"VNCFLEET_TRUSTED_PROXIES", "10.0.0.0/8, 192.0.2.1", func(c *Config) any { return c.TrustedProxies }, []string{"10.0.0.0/8", "192.0.2.1"}},
		{"VNCFLEET_LOG_LEVEL", "warn", func(c *Config) any { return c.LogLevel }, "warn"},
		{"VNCFLEET_LOG_FORMAT", "json", func(c *Config) any { return c.LogFormat }, "json"},
		{"VNCFLEET_UPLOAD_IDLE_TIMEOUT", "5s", func(c *Config) any { return c.HTTP.UploadIdleTimeout }, 5 * time.Second},
		{"VNCFLEET_CA_FILE", "/etc/ca.pem", func(c *Config) any { return c.CAFile }, "/etc/ca.pem"},
	} {
		t.Run(tc.env+"="+tc.value, func(t *testing.T) {
			t.Parallel()
			vars := map[string]string{tc.env: tc.value}
			if tc.env == "VNCFLEET_WEBHOOK_URL" {
				vars["VNCFLEET_WEBHOOK_SECRET"] = "x-webhook-secret-of-32-characters"
			}
			cfg, err := Load("", env(vars))
			require.NoError(t, err)
			require.Equal(t, tc.want, tc.get(cfg))
			require.NotEqual(t, tc.want, tc.get(Defaults()), "the test changes something")
		})
	}
	// Each secret also from NAME_FILE, trimmed.
	for _, s := range Defaults().secrets() {
		t.Run(s.env+"_FILE", func(t *testing.T) {
			t.Parallel()
			value := "from-file-" + strings.ToLower(s.env)
			if s.env == "VNCFLEET_SECRET_KEY" {
				value = key(5)
			}
			if s.env == "DATABASE_URL" {
				value = "postgres://u:pw@db/x"
			}
			f := writeFile(t, dir, s.env, "\n  "+value+"\n")
			vars := map[string]string{s.env + "_FILE": f, "VNCFLEET_WEBHOOK_URL": "http://hook"}
			if s.env != "VNCFLEET_WEBHOOK_SECRET" {
				vars["VNCFLEET_WEBHOOK_SECRET"] = "x-webhook-secret-of-32-characters"
			}
			cfg, err := Load("", env(vars))
			require.NoError(t, err)
			var got string
			for _, cs := range cfg.secrets() {
				if cs.env == s.env {
					got = *cs.value
				}
			}
			require.Equal(t, value, got)
		})
	}
}

func TestSecretsFromTheConfigFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	writeFile(t, dir, "api-secret", "file-api-secret\n")
	writeFile(t, dir, "old-keys", key(1)+"\n"+key(2)+"\n")
	writeFile(t, dir, "pipeline-token", "  pipeline-token-value \n")
	path := writeFile(t, dir, "c.yaml", `
secret_key: `+key(3)+`
old_secret_keys_file: old-keys
vnccloud:
  api_secret_file: api-secret
zenlayer:
  access_key_password: inline-zl
tokens:
  - name: pipeline
    token_file: pipeline-token
    roles: [upload, read]
  - name: support
    token: support-token-value
    roles: [read, secrets]
`)
	cfg, err := Load(path, env(nil))
	require.NoError(t, err)
	require.Equal(t, key(3), cfg.SecretKey)
	require.Equal(t, []string{key(1), key(2)}, cfg.OldSecretKeys, "one key per line")
	require.Equal(t, "file-api-secret", cfg.VNCCloud.APISecret, "_file relative to the config file, trimmed")
	require.Equal(t, "inline-zl", cfg.Zenlayer.AccessKeyPassword)
	require.Equal(t, "pipeline-token-value", cfg.Tokens[0].Token)
	require.Equal(t, "support-token-value", cfg.Tokens[1].Token)

	// The environment wins over the file's secrets too.
	envFile := writeFile(t, dir, "env-secret", "env-api-secret")
	cfg, err = Load(path, env(map[string]string{"VNCCLOUD_API_SECRET_FILE": envFile, "ZENLAYER_ACCESS_KEY_PASSWORD": "env-zl"}))
	require.NoError(t, err)
	require.Equal(t, "env-api-secret", cfg.VNCCloud.APISecret)
	require.Equal(t, "env-zl", cfg.Zenlayer.AccessKeyPassword)

	// database_url has a default, and a file may still name database_url_file.
	writeFile(t, dir, "db-url", "postgres://u:pw@db/fleet")
	path = writeFile(t, dir, "db.yaml", "database_url_file: db-url\n")
	cfg, err = Load(path, env(nil))
	require.NoError(t, err)
	require.Equal(t, "postgres://u:pw@db/fleet", cfg.DatabaseURL)
}

func TestInvalidSettingsAreNamed(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for _, tc := range []struct {
		name string
		yaml string
		env  map[string]string
		want string
	}{
		{"rate not a number", "", map[string]string{"VNCCLOUD_RATE": "fast"}, "VNCCLOUD_RATE"},
		{"negative rate", "", map[string]string{"VNCCLOUD_RATE": "-1"}, "vnccloud.rate (VNCCLOUD_RATE): must be at least 0"},
		{"upload bytes", "", map[string]string{"VNCFLEET_MAX_UPLOAD_BYTES": "1MB"}, "VNCFLEET_MAX_UPLOAD_BYTES"},
		{"zero upload bytes", "max_upload_bytes: 0\n", nil, "max_upload_bytes (VNCFLEET_MAX_UPLOAD_BYTES)"},
		{"ftp url", "", map[string]string{"VNCCLOUD_API_URL": "ftp://x"}, "vnccloud.api_url (VNCCLOUD_API_URL)"},
		{"url without host", "url: http://\n", nil, "url (VNCFLEET_URL)"},
		{"listen without port", "", map[string]string{"VNCFLEET_LISTEN": "localhost"}, "listen (VNCFLEET_LISTEN)"},
		{"sim listen bad port", "sim_listen: 127.0.0.1:99999\n", nil, "sim_listen (VNCFLEET_SIM_LISTEN)"},
		{"bad database url", "", map[string]string{"DATABASE_URL": "postgres://db:port/x"}, "database_url (DATABASE_URL)"},
		{"unknown key", "lissen: x\n", nil, "lissen"},
		{"unknown nested key", "workers:\n  concurency: 3\n", nil, "concurency"},
		{"duration without unit", "vnccloud:\n  timeout: 30\n", nil, "line 2"},
		{"zero timeout", "vnccloud:\n  timeout: 0s\n", nil, "vnccloud.timeout"},
		{"lease too short", "workers:\n  claim_lease: 1s\n", nil, "workers.claim_lease"},
		{"zero concurrency", "workers:\n  concurrency: 0\n", nil, "workers.concurrency"},
		{"multiplier", "readiness:\n  multiplier: 0.5\n", nil, "readiness.multiplier"},
		{"max below initial", "readiness:\n  initial_interval: 1m\n  max_interval: 1s\n", nil, "readiness.max_interval"},
		{"floor above ceiling", "readiness:\n  floor: 20s\n  ceiling: 10s\n", nil, "readiness.floor"},
		{"pending target", "readiness:\n  pending_target: 0.9\n", nil, "readiness.pending_target"},
		{"pending target zero", "readiness:\n  pending_target: 0\n", nil, "readiness.pending_target"},
		{"bad cron", "rotation:\n  schedule: every night\n", nil, "rotation.schedule"},
		{"six-field cron", "reconcile:\n  schedule: \"0 */15 * * * *\"\n", nil, "reconcile.schedule"},
		{"foreign policy", "reconcile:\n  foreign_policy: ignore\n", nil, "reconcile.foreign_policy"},
		{"percent", "max_deletions_percent: 120\n", nil, "max_deletions_percent"},
		{"min", "max_deletions_min: -1\n", nil, "max_deletions_min"},
		{"log level", "", map[string]string{"VNCFLEET_LOG_LEVEL": "loud"}, "log_level (VNCFLEET_LOG_LEVEL)"},
		{"log format", "log_format: xml\n", nil, "log_format (VNCFLEET_LOG_FORMAT)"},
		{"bad role", "tokens:\n  - name: a\n    token: t\n    roles: [god]\n", nil, "tokens[0].roles: unknown role \"god\""},
		{"no roles", "tokens:\n  - name: a\n    token: t\n", nil, "tokens[0].roles"},
		{"no token", "tokens:\n  - name: a\n    roles: [read]\n", nil, "tokens[0].token"},
		{"duplicate name", "tokens:\n  - {name: a, token: t1, roles: [read]}\n  - {name: a, token: t2, roles: [read]}\n", nil, "tokens[1].name"},
		{"shared token value", "tokens:\n  - {name: a, token: t1, roles: [read]}\n", map[string]string{"VNCFLEET_TOKEN": "t1"}, "tokens[0].token"},
		{"token and token_file", "tokens:\n  - {name: a, token: t1, token_file: f, roles: [read]}\n", nil, "tokens[0]: set only one of token and token_file"},
		{"webhook without secret", "webhook:\n  url: http://x\n", nil, "webhook.secret (VNCFLEET_WEBHOOK_SECRET)"},
		{"webhook bad url", "webhook:\n  url: x\n  secret: s\n", nil, "webhook.url"},
		{"short webhook secret", "webhook:\n  url: http://x\n  secret: only-31-characters-long-0123456\n", nil, "webhook.secret (VNCFLEET_WEBHOOK_SECRET): must be at least 32 characters"},
		{"short previous webhook secret", "", map[string]string{"VNCFLEET_WEBHOOK_PREVIOUS_SECRET": "short"}, "webhook.previous_secret (VNCFLEET_WEBHOOK_PREVIOUS_SECRET): must be at least 32"},
		{"previous webhook secret is the secret", "", map[string]string{"VNCFLEET_WEBHOOK_SECRET": longHookSecret, "VNCFLEET_WEBHOOK_PREVIOUS_SECRET": longHookSecret}, "webhook.previous_secret (VNCFLEET_WEBHOOK_PREVIOUS_SECRET): is the same"},
		{"bad trusted proxy", "trusted_proxies: [10.0.0.0/8, proxy.example]\n", nil, `trusted_proxies (VNCFLEET_TRUSTED_PROXIES): "proxy.example" is neither`},
		{"claim ttl", "claim_ttl: 48h\n", nil, "claim_ttl: must be from 1s to 24h"},
		{"empty token fleet", "tokens:\n  - {name: a, token: t1, roles: [read], fleets: [\"\"]}\n", nil, "tokens[0].fleets"},
		{"webhook attempts", "webhook:\n  max_attempts: 0\n", nil, "webhook.max_attempts"},
		{"short secret key", "", map[string]string{"VNCFLEET_SECRET_KEY": base64.StdEncoding.EncodeToString(make([]byte, 16))}, "secret_key (VNCFLEET_SECRET_KEY): secretbox: invalid key: decodes to 16 bytes"},
		{"bad old key", "", map[string]string{"VNCFLEET_SECRET_KEY": key(1), "VNCFLEET_OLD_SECRET_KEYS": key(2) + ",nope"}, "old_secret_keys (VNCFLEET_OLD_SECRET_KEYS): key 2"},
		{"old keys without a key", "", map[string]string{"VNCFLEET_OLD_SECRET_KEYS": key(2)}, "old_secret_keys"},
		{"missing secret file", "", map[string]string{"VNCFLEET_SECRET_KEY_FILE": "/nonexistent/key"}, "VNCFLEET_SECRET_KEY_FILE"},
		{"secret and its file", "", map[string]string{"VNCCLOUD_API_SECRET": "a", "VNCCLOUD_API_SECRET_FILE": "/f"}, "set only one of VNCCLOUD_API_SECRET and VNCCLOUD_API_SECRET_FILE"},
		{"secret and its file in yaml", "vnccloud:\n  api_secret: a\n  api_secret_file: f\n", nil, "set only one of vnccloud.api_secret and vnccloud.api_secret_file"},
		{"missing file in yaml", "secret_key_file: nothing-here\n", nil, "secret_key_file"},
		{"idle timeout not a duration", "", map[string]string{"VNCFLEET_UPLOAD_IDLE_TIMEOUT": "30"}, "VNCFLEET_UPLOAD_IDLE_TIMEOUT"},
		{"zero write timeout", "http:\n  write_timeout: 0s\n", nil, "http.write_timeout"},
		{"certificate without key", "", map[string]string{"VNCFLEET_TLS_CERT_FILE": "/c.pem"}, "http.tls_cert_file (VNCFLEET_TLS_CERT_FILE): needs http.tls_key_file"},
		{"key without certificate", "http:\n  tls_key_file: k.pem\n", nil, "needs http.tls_key_file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			path := ""
			if tc.yaml != "" {
				path = writeFile(t, dir, strings.ReplaceAll(tc.name, " ", "_")+".yaml", tc.yaml)
			}
			cfg, err := Load(path, env(tc.env))
			require.ErrorContains(t, err, tc.want)
			require.Nil(t, cfg)
		})
	}
}

func TestValidateReportsEveryProblem(t *testing.T) {
	t.Parallel()
	cfg := Defaults()
	cfg.Listen = "nope"
	cfg.LogFormat = "xml"
	cfg.Workers.BatchSize = 0
	err := cfg.Validate()
	var fields []string
	for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
		var fe *FieldError
		require.True(t, errors.As(e, &fe))
		fields = append(fields, fe.Key)
	}
	slices.Sort(fields)
	require.Equal(t, []string{"listen", "log_format", "workers.batch_size"}, fields)
	require.NoError(t, Defaults().Validate(), "the defaults are valid")
}

// allSecrets sets every secret to a recognisable value.
func allSecrets(t *testing.T) (*Config, []string) {
	t.Helper()
	cfg, err := Load("", env(map[string]string{
		"DATABASE_URL":                 "postgres://fleet:db-pw-1111@db/vncfleet",
		"VNCFLEET_TOKEN":               "admin-tok-2222",
		"VNCFLEET_SECRET_KEY":          key(0x33),
		"VNCFLEET_OLD_SECRET_KEYS":     key(0x44),
		"VNCCLOUD_API_SECRET":          "api-secret-5555",
		"ZENLAYER_ACCESS_KEY_PASSWORD": "zl-pw-6666",
		"VNCFLEET_WEBHOOK_URL":         "https://hook:hook-pw-7777@hooks.example/x?token=hook-tok-8888",
		"VNCFLEET_WEBHOOK_SECRET":      "hook-secret-9999-long-enough-for-an-hmac",
	}))
	require.NoError(t, err)
	cfg.Tokens = []Token{{Name: "pipeline", Token: "pipeline-tok-0000", Roles: []string{"upload"}}}
	return cfg, []string{"db-pw-1111", "admin-tok-2222", key(0x33), key(0x44), "api-secret-5555", "zl-pw-6666",
		"hook-pw-7777", "hook-tok-8888", "hook-secret-9999", "pipeline-tok-0000"}
}

func TestSecretsNeverShow(t *testing.T) {
	t.Parallel()
	cfg, secrets := allSecrets(t)
	before := fmt.Sprint(cfg.Tokens[0].Token, cfg.SecretKey)

	var text, js bytes.Buffer
	slog.New(slog.NewTextHandler(&text, nil)).Info("config", "cfg", cfg)
	slog.New(slog.NewJSONHandler(&js, nil)).Info("config", "cfg", *cfg)
	outputs := []string{text.String(), js.String()}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s"} {
		outputs = append(outputs, fmt.Sprintf(verb, cfg), fmt.Sprintf(verb, *cfg), fmt.Sprintf(verb, cfg.Tokens))
	}
	outputs = append(outputs, fmt.Sprintf("%+v", cfg.Redacted()))
	for _, out := range outputs {
		for _, s := range secrets {
			require.NotContains(t, out, s)
		}
	}
	require.Contains(t, text.String(), "cfg.vnccloud.timeout=30s", "logged by YAML key, durations readable")
	require.Contains(t, js.String(), `"listen":"127.0.0.1:8080"`)
	require.Contains(t, fmt.Sprintf("%+v", cfg), "Listen:127.0.0.1:8080", "non-secrets still show")

	r := cfg.Redacted()
	require.Equal(t, "[redacted]", r.VNCCloud.APISecret)
	require.Equal(t, "postgres://fleet:xxxxx@db/vncfleet", r.DatabaseURL)
	require.Equal(t, "https://hook:xxxxx@hooks.example/x?token=xxxxx", r.Webhook.URL)
	require.Equal(t, "pipeline", r.Tokens[0].Name)
	require.Empty(t, Defaults().Redacted().SecretKey, "an unset secret stays visibly unset")
	require.Equal(t, before, fmt.Sprint(cfg.Tokens[0].Token, cfg.SecretKey), "Redacted leaves the original alone")
}

func TestNoSecretInErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	secretFile := writeFile(t, dir, "secret", "file-content-secret-4242")
	for _, tc := range []struct {
		name   string
		yaml   string
		env    map[string]string
		secret string
	}{
		{"short key", "", map[string]string{"VNCFLEET_SECRET_KEY": base64.StdEncoding.EncodeToString([]byte("sixteen-byte-key"))}, base64.StdEncoding.EncodeToString([]byte("sixteen-byte-key"))},
		{"key not base64", "", map[string]string{"VNCFLEET_SECRET_KEY": "not*base64*secret-1234"}, "secret-1234"},
		{"bad old key", "", map[string]string{"VNCFLEET_SECRET_KEY": key(1), "VNCFLEET_OLD_SECRET_KEYS": "old*secret-5678"}, "secret-5678"},
		{"database url", "", map[string]string{"DATABASE_URL": "postgres://u:db-secret-9012@db:notaport/x"}, "db-secret-9012"},
		{"key file content", "", map[string]string{"VNCFLEET_SECRET_KEY_FILE": secretFile}, "file-content-secret-4242"},
		{"secret in a list-typed key", "old_secret_keys: yaml-secret-3456\n", nil, "yaml-secret-3456"},
		{"secret in a map-typed key", "vnccloud: yaml-secret-7890\n", nil, "yaml-secret-7890"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			path := ""
			if tc.yaml != "" {
				path = writeFile(t, dir, strings.ReplaceAll(tc.name, " ", "_")+".yaml", tc.yaml)
			}
			_, err := Load(path, env(tc.env))
			require.Error(t, err)
			require.NotContains(t, err.Error(), tc.secret)
		})
	}
}

// Not parallel: it sets the process environment.
func TestLoadReadsTheProcessEnvironment(t *testing.T) {
	t.Setenv("VNCFLEET_SIM_LISTEN", "127.0.0.1:18090")
	cfg, err := Load("", nil)
	require.NoError(t, err)
	require.Equal(t, "127.0.0.1:18090", cfg.SimListen)
}

func TestEmptyFileIsTheDefaults(t *testing.T) {
	t.Parallel()
	path := writeFile(t, t.TempDir(), "empty.yaml", "# nothing set\n")
	cfg, err := Load(path, env(nil))
	require.NoError(t, err)
	require.Equal(t, Defaults(), cfg)
	_, err = Load(filepath.Join(t.TempDir(), "missing.yaml"), env(nil))
	require.ErrorIs(t, err, os.ErrNotExist)
}

func TestRedactDSN(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"host=db user=u password=hunter2 dbname=x":                "host=db user=u password=[redacted] dbname=x",
		"host=db password='hunter 2\\' x' dbname=x":               "host=db password=[redacted] dbname=x",
		"postgres://u:hunter2@db/x?sslmode=disable":               "postgres://u:xxxxx@db/x?sslmode=disable",
		"postgres:///x?host=/var/run/postgresql&password=hunter2": "postgres:///x?host=%2Fvar%2Frun%2Fpostgresql&password=xxxxx",
		"postgres:///vncfleet?host=/var/run/postgresql":           "postgres:///vncfleet?host=/var/run/postgresql",
	} {
		require.Equal(t, want, redactDSN(in), in)
	}
}
