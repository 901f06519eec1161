package e2e

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"

	"github.com/vncfleet/vncfleet/internal/promtext"
)

// scrapeText is GET /metrics of one serve process, unauthenticated as Prometheus
// scrapes it.
func scrapeText(t *testing.T, apiURL string) string {
	t.Helper()
	resp, err := http.Get(apiURL + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode, "%s", body)
	return string(body)
}

func parseScrape(t *testing.T, text string) promtext.Families {
	t.Helper()
	families, err := promtext.Parse(strings.NewReader(text))
	require.NoError(t, err)
	return families
}

// TestMetricsMatchWhatTheCloudReceived is issue 11's acceptance test: two serve
// processes, a simulator with 503s and a rate cap, a manifest provisioned with
// upload --wait; then the request counters scraped from both processes add up to the
// simulator's count, in total and per operation; the ready gauge equals the ready
// devices; the histograms are exported; no secret, device id or address is scraped.
// Everything runs with the default settings, metrics_interval included.
func TestMetricsMatchWhatTheCloudReceived(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterOpts{
		rate:    20,
		simArgs: []string{"--fail-rate", "0.05", "--rate", "25", "--ready-delay", "1s", "--seed", "11"},
	})
	c.startServe()
	c.startServe()
	devices := factoryManifest(20, 4, 6) // 80 connect, 120 listen
	path := writeFile(t, "fleet.csv", manifestCSV(devices))
	out, errOut, code := c.run("upload", "--wait", "--fleet", "factory", path)
	require.Equal(t, 0, code, "upload --wait: %s\n%s", out, errOut)

	// A request in flight is counted by the simulator before its answer reaches the
	// counter, so compare at a moment when the simulator's count stands still around
	// both scrapes.
	var scrapes [2]string
	var sim simState
	eventually(t, 60*time.Second, "a quiet moment to compare counts", func() bool {
		before := c.state()
		for i, u := range c.apiURLs {
			scrapes[i] = scrapeText(t, u)
		}
		sim = c.state()
		return before.Requests == sim.Requests
	})
	families := [2]promtext.Families{parseScrape(t, scrapes[0]), parseScrape(t, scrapes[1])}
	byOp := map[string]float64{}
	byCode := map[string]float64{}
	for _, f := range families {
		for op, n := range f.Sum("vncfleet_vnccloud_requests_total", "operation", nil) {
			byOp[op] += n
		}
		for code, n := range f.Sum("vncfleet_vnccloud_requests_total", "code", nil) {
			byCode[code] += n
		}
	}
	var total float64
	for _, n := range byOp {
		total += n
	}
	require.Equal(t, float64(sim.Requests), total, "every request the simulator received is counted exactly once")
	simOps := sim.Accounts[apiKey].Counts
	require.NotEmpty(t, simOps)
	for op, n := range simOps {
		require.Equal(t, float64(n), byOp[op], "requests of operation %s", op)
	}
	for op, n := range byOp {
		require.Equal(t, float64(simOps[op]), n, "requests of operation %s", op)
	}
	require.Positive(t, byCode["503"], "the simulator's 503s are counted under their code: %v", byCode)
	// The CLI talked to the first process: its request lines name the token, never
	// show it.
	require.Contains(t, c.serves[0].out.String(), `msg=request request_id=`)
	require.Contains(t, c.serves[0].out.String(), `route="GET /v1/manifests/{id}" status=200`)
	require.Contains(t, c.serves[0].out.String(), "token=admin")
	for _, s := range c.serves {
		require.NotContains(t, s.out.String(), adminTok, "a token in the logs")
	}

	// The fleet-wide gauges come from one process, refreshed every metrics_interval.
	eventually(t, 90*time.Second, "vncfleet_devices to show every device ready", func() bool {
		var ready, leaders float64
		for _, u := range c.apiURLs {
			f := parseScrape(t, scrapeText(t, u))
			ready += f.Sum("vncfleet_devices", "", map[string]string{"fleet": "factory", "status": "ready"})[""]
			leaders += f.Sum("vncfleet_metrics_db_leader", "", nil)[""]
		}
		return ready == float64(len(devices)) && leaders == 1
	})
	// The manifest's life in the logs: stored and applied by the upload, settled as
	// seen by the metrics leader.
	require.Contains(t, c.serves[0].out.String(), `msg="manifest stored" manifest=1 fleet=factory rows=200 creates=200`)
	require.Contains(t, c.serves[0].out.String(), `msg="manifest applied" manifest=1 fleet=factory batches=0`)
	eventually(t, 30*time.Second, "the manifest settled line", func() bool {
		return strings.Contains(c.serves[0].out.String()+c.serves[1].out.String(),
			`msg="manifest settled" manifest=1 fleet=factory rows=200 ready=200 deleted=0 failed=0 cancelled=0`)
	})
	readyNow := 0
	for _, row := range c.export("--fleet", "factory") {
		if row["status"] == "ready" {
			readyNow++
		}
	}
	require.Equal(t, len(devices), readyNow)

	for _, name := range []string{"vncfleet_vnccloud_request_duration_seconds", "vncfleet_ratelimit_wait_seconds",
		"vncfleet_device_ready_seconds", "vncfleet_river_job_wait_seconds"} {
		var samples float64
		for _, f := range families {
			require.Contains(t, f, name)
			require.Equal(t, dto.MetricType_HISTOGRAM, f[name].GetType(), name)
			samples += f.Sum(name, "", nil)[""]
		}
		require.Positive(t, samples, name)
	}
	var readySamples float64
	for _, f := range families {
		readySamples += f.Sum("vncfleet_device_ready_seconds", "", nil)[""]
	}
	require.Equal(t, float64(len(devices)), readySamples, "one upload-to-ready time per device")

	secrets := []string{apiSecret, adminTok}
	for _, e := range c.env {
		if v, ok := strings.CutPrefix(e, "VNCFLEET_SECRET_KEY="); ok {
			secrets = append(secrets, v)
		}
	}
	for _, a := range sim.Accounts[apiKey].Addresses {
		secrets = append(secrets, a.Password, a.CloudAddress)
	}
	for _, d := range devices {
		secrets = append(secrets, d.id)
	}
	for i, text := range scrapes {
		for _, s := range secrets {
			require.NotContains(t, text, s, "serve %d's scrape holds a secret, device id or address", i+1)
		}
	}
}

// metricNames finds the metric names in PromQL expressions: vncfleet's, and the Go
// and process collectors'.
var metricName = regexp.MustCompile(`\b(?:vncfleet|go|process)_[a-zA-Z0-9_]+`)

// TestDashboardAndAlertsUseExportedMetrics: every metric that
// configs/grafana-dashboard.json and configs/prometheus-alerts.yaml query is
// exported by a running serve that has provisioned a manifest.
func TestDashboardAndAlertsUseExportedMetrics(t *testing.T) {
	t.Parallel()
	var exprs []string
	raw, err := os.ReadFile("../configs/grafana-dashboard.json")
	require.NoError(t, err)
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	require.NoError(t, json.Unmarshal(raw, &dash))
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			require.NotEmpty(t, tg.Expr, p.Title)
			exprs = append(exprs, tg.Expr)
		}
	}
	dashboardExprs := len(exprs)
	require.Greater(t, dashboardExprs, 20)
	raw, err = os.ReadFile("../configs/prometheus-alerts.yaml")
	require.NoError(t, err)
	var rules struct {
		Groups []struct {
			Rules []struct {
				Alert string `yaml:"alert"`
				Expr  string `yaml:"expr"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	require.NoError(t, yaml.Unmarshal(raw, &rules))
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			require.NotEmpty(t, r.Alert)
			require.NotEmpty(t, r.Expr, r.Alert)
			exprs = append(exprs, r.Expr)
		}
	}
	require.Greater(t, len(exprs)-dashboardExprs, 7, "the alert rules")

	// Zenlayer too, so that its request counter has a series.
	c := newCluster(t, clusterOpts{simArgs: []string{"--zenlayer-account", "zl-key:zl-password", "--zenlayer-instance", "zec-1=RUNNING"}})
	c.env = append(c.env, "ZENLAYER_API_URL="+c.simURL+"/api/v2", "ZENLAYER_ACCESS_KEY_ID=zl-key", "ZENLAYER_ACCESS_KEY_PASSWORD=zl-password")
	c.startServe()
	path := writeFile(t, "fleet.csv", "device_id,action,groups,zenlayer_instance_id\nkiosk-1,connect,line-a,zec-1\nkiosk-2,connect,line-a,\n")
	out, errOut, code := c.run("upload", "--wait", path)
	require.Equal(t, 0, code, "upload --wait: %s\n%s", out, errOut)

	wanted := map[string]bool{}
	for _, e := range exprs {
		for _, name := range metricName.FindAllString(e, -1) {
			wanted[name] = true
		}
	}
	require.Contains(t, wanted, "vncfleet_vnccloud_requests_total")
	eventually(t, 90*time.Second, "every metric of the dashboard and the alerts exported", func() bool {
		families := parseScrape(t, scrapeText(t, c.apiURLs[0]))
		missing := []string{}
		for name := range wanted {
			if !exported(families, name) {
				missing = append(missing, name)
			}
		}
		if len(missing) > 0 {
			t.Logf("not exported yet: %v", missing)
		}
		return len(missing) == 0
	})
}

// exported: name is a family of the scrape, or a histogram's _bucket, _sum or _count.
func exported(families promtext.Families, name string) bool {
	if f, ok := families[name]; ok && len(f.Metric) > 0 {
		return true
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(name, suffix); ok {
			if f, ok := families[base]; ok && f.GetType() == dto.MetricType_HISTOGRAM && len(f.Metric) > 0 {
				return true
			}
		}
	}
	return false
}
