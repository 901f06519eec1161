// Package metrics is vncfleet's Prometheus instrumentation: the metrics that
// dashboards and alerts rely on (docs/contract.md and configs/), registered once, and the
// hooks that the measured packages call (vnccloud's Observe, the limiter, River's
// middleware, the lifecycle's Observer...). The measured packages know nothing of
// Prometheus; this is the one place that does.
//
// Labels never carry a secret, a device id or a cloud address: only operation names,
// HTTP codes, fleet names, statuses, job kinds and event types, all of bounded
// number.
package metrics

import (
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/vncfleet/vncfleet/internal/reconcile"
)

const namespace = "vncfleet"

// Buckets of durations, in seconds. API calls take tens of milliseconds and a limiter
// wait up to a few seconds; time to ready runs from seconds (the API's readiness
// delay) to hours (a million-device manifest under a rate cap).
var (
	callBuckets  = []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}
	waitBuckets  = []float64{.001, .005, .01, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}
	readyBuckets = []float64{1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 43200, 86400}
)

// Metrics holds every process-local metric and the registry that exports them.
type Metrics struct {
	registry *prometheus.Registry

	cloudRequests    *prometheus.CounterVec
	cloudDuration    *prometheus.HistogramVec
	zenlayerRequests *prometheus.CounterVec

	limiterWait      prometheus.Histogram
	limiterPauses    prometheus.Counter
	limiterPausedFor prometheus.Counter
	limiterOutcomes  *prometheus.CounterVec
	limiterPerSecond prometheus.Gauge

	readySeconds prometheus.Histogram
	manifestRows *prometheus.CounterVec
	workResults  *prometheus.CounterVec

	rotations         *prometheus.CounterVec
	rotationRunLast   prometheus.Gauge
	reconcileRuns     *prometheus.CounterVec
	reconcileLast     prometheus.Gauge
	reconcileFindings *prometheus.CounterVec

	webhookDeliveries *prometheus.CounterVec

	jobWait *prometheus.HistogramVec

	httpRequests *prometheus.CounterVec
	httpDuration *prometheus.HistogramVec
}

// New registers every metric, with the Go runtime and process collectors, on a
// registry of its own (not the global one, so tests can build as many as they like).
func New() *Metrics {
	reg := prometheus.NewRegistry()
	f := factory{reg}
	m := &Metrics{
		registry: reg,
		cloudRequests: f.counterVec("vnccloud_requests_total",
			"Every HTTP request sent to VNC Cloud, retries and list pages included, by operation and HTTP status (\"error\": no answer).",
			"operation", "code"),
		cloudDuration: f.histogramVec("vnccloud_request_duration_seconds",
			"One VNC Cloud request, from sending to the answer's headers.", callBuckets, "operation"),
		zenlayerRequests: f.counterVec("zenlayer_requests_total",
			"Every DescribeVncUrl request sent to Zenlayer, by HTTP status (\"error\": no answer).", "code"),

		limiterWait: f.histogram("ratelimit_wait_seconds",
			"Asking the cluster-wide limiter for a VNC Cloud send slot, to being allowed to send.", waitBuckets),
		limiterPauses: f.counter("ratelimit_pauses_total",
			"Pauses of the whole cluster that this process asked for, on a Retry-After from VNC Cloud."),
		limiterPausedFor: f.counter("ratelimit_paused_seconds_total",
			"The Retry-After durations of those pauses, added up."),
		limiterOutcomes: f.counterVec("ratelimit_outcomes_total",
			"Answers fed back to the limiter's AIMD: ok, throttled (503/429: slow down), failed.", "outcome"),
		limiterPerSecond: f.gauge("ratelimit_limit_per_second",
			"VNCCLOUD_RATE: the most VNC Cloud requests per second, all processes together (0: no limit)."),

		readySeconds: f.histogram("device_ready_seconds",
			"Time from a manifest's upload to each of its devices becoming ready.", readyBuckets),
		manifestRows: f.counterVec("manifest_rows_total",
			"Rows of uploaded manifests by planned outcome (created, updated, deleted, unchanged) and the problems found in rejected uploads (invalid: a row may have several).",
			"outcome"),
		workResults: f.counterVec("work_results_total",
			"Device operations finished by work jobs: ok, retry (transient failure, tried again), failed (refused for good), not_sent.",
			"operation", "outcome"),

		rotations: f.counterVec("rotations_total",
			"Password rotations: scheduled (a reset owed), rotated (the new password promoted once ready).", "outcome"),
		rotationRunLast: f.gauge("rotation_last_run_success_timestamp_seconds",
			"When this process last ran rotation scheduling without error (Unix time)."),
		reconcileRuns: f.counterVec("reconcile_runs_total", "Reconciliation runs, by outcome (ok, error).", "outcome"),
		reconcileLast: f.gauge("reconcile_last_success_timestamp_seconds",
			"When this process last finished a reconciliation run without error (Unix time)."),
		reconcileFindings: f.counterVec("reconcile_findings_total",
			"What reconciliation found: vanished, drifted, adopted, orphans (deleted), foreign, ambiguous (maybe still in flight).",
			"kind"),

		webhookDeliveries: f.counterVec("webhook_deliveries_total",
			"Webhook delivery attempts by event type and outcome (delivered, failed, dead).", "event", "outcome"),

		jobWait: f.histogramVec("river_job_wait_seconds",
			"Time a River job waited from its scheduled time to starting work.", waitBuckets, "kind"),

		httpRequests: f.counterVec("http_requests_total",
			"Requests to vncfleet's HTTP API, by route pattern and status.", "route", "code"),
		httpDuration: f.histogramVec("http_request_duration_seconds",
			"Requests to vncfleet's HTTP API, received to answered, by route pattern.", callBuckets, "route"),
	}
	m.zeroKnownSeries()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Label values known in advance, exported at zero from the start so that a rate()
// sees the first event and a dashboard shows 0 rather than "no data".
var (
	operations      = []string{"create", "list", "ready", "get", "update", "reset", "delete"}
	workOperations  = []string{"create", "update", "delete", "rotate"}
	workOutcomes    = []string{"ok", "retry", "failed", "not_sent"}
	rowOutcomes     = []string{"created", "updated", "deleted", "unchanged", "invalid"}
	findingKinds    = []string{"vanished", "drifted", "adopted", "orphans", "foreign", "ambiguous"}
	webhookEvents   = []string{"device.ready", "device.rotated", "device.failed", "device.deleted"}
	webhookOutcomes = []string{"delivered", "failed", "dead"}
)

func (m *Metrics) zeroKnownSeries() {
	for _, op := range operations {
		m.cloudDuration.WithLabelValues(op)
	}
	for _, op := range workOperations {
		for _, o := range workOutcomes {
			m.workResults.WithLabelValues(op, o)
		}
	}
	for _, o := range rowOutcomes {
		m.manifestRows.WithLabelValues(o)
	}
	for _, k := range findingKinds {
		m.reconcileFindings.WithLabelValues(k)
	}
	for _, e := range webhookEvents {
		for _, o := range webhookOutcomes {
			m.webhookDeliveries.WithLabelValues(e, o)
		}
	}
	for _, o := range []string{"scheduled", "rotated"} {
		m.rotations.WithLabelValues(o)
	}
	for _, o := range []string{"ok", "error"} {
		m.reconcileRuns.WithLabelValues(o)
	}
	for _, o := range []string{"ok", "throttled", "failed"} {
		m.limiterOutcomes.WithLabelValues(o)
	}
}

// Handler serves the registry in the Prometheus text (or OpenMetrics) format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{})
}

// ObserveCloud is vnccloud.Config.Observe.
func (m *Metrics) ObserveCloud(op string, status int, elapsed time.Duration) {
	m.cloudRequests.WithLabelValues(op, code(status)).Inc()
	m.cloudDuration.WithLabelValues(op).Observe(elapsed.Seconds())
}

// ObserveZenlayer is zenlayer.Config.Observe.
func (m *Metrics) ObserveZenlayer(status int) { m.zenlayerRequests.WithLabelValues(code(status)).Inc() }

// ObserveWebhook is webhook.Config.Observe.
func (m *Metrics) ObserveWebhook(eventType, outcome string) {
	m.webhookDeliveries.WithLabelValues(eventType, outcome).Inc()
}

// ObserveUpload counts the rows of an upload: its plan when stored, or the problems
// found when rejected (the reader counts problems, not rows).
func (m *Metrics) ObserveUpload(creates, updates, deletes, unchanged, invalid int) {
	for i, n := range []int{creates, updates, deletes, unchanged, invalid} {
		m.manifestRows.WithLabelValues(rowOutcomes[i]).Add(float64(n))
	}
}

// ObserveWork counts one finished device operation.
func (m *Metrics) ObserveWork(op, outcome string) { m.workResults.WithLabelValues(op, outcome).Inc() }

// RotationRun implements lifecycle.Observer.
func (m *Metrics) RotationRun(scheduled int, err error) {
	if err != nil {
		return
	}
	m.rotations.WithLabelValues("scheduled").Add(float64(scheduled))
	m.rotationRunLast.SetToCurrentTime()
}

// ReconcileRun implements lifecycle.Observer.
func (m *Metrics) ReconcileRun(rep *reconcile.Report, err error) {
	if err != nil {
		m.reconcileRuns.WithLabelValues("error").Inc()
		return
	}
	m.reconcileRuns.WithLabelValues("ok").Inc()
	m.reconcileLast.SetToCurrentTime()
	found := []int{len(rep.Vanished), len(rep.Drifted), len(rep.Adopted), len(rep.DeletedOrphans), len(rep.Foreign), len(rep.InFlight)}
	for i, n := range found {
		m.reconcileFindings.WithLabelValues(findingKinds[i]).Add(float64(n))
	}
}

// ObserveHTTP records one request to the API.
func (m *Metrics) ObserveHTTP(route string, status int, elapsed time.Duration) {
	m.httpRequests.WithLabelValues(route, strconv.Itoa(status)).Inc()
	m.httpDuration.WithLabelValues(route).Observe(elapsed.Seconds())
}

// code is an HTTP status as a label, "error" when no answer arrived.
func code(status int) string {
	if status == 0 {
		return "error"
	}
	if status >= 100 && status < 100+len(statusLabels) {
		return statusLabels[status-100]
	}
	return strconv.Itoa(status)
}

// statusLabels are the labels of the statuses 100-599, made once: every call to the
// cloud is counted under one, and formatting it anew each time was a measurable
// share of a busy worker's allocations.
var statusLabels = func() (labels [500]string) {
	for i := range labels {
		labels[i] = strconv.Itoa(100 + i)
	}
	return labels
}()

// factory registers metrics under the namespace as it builds them.
type factory struct{ reg prometheus.Registerer }

func (f factory) counter(name, help string) prometheus.Counter {
	c := prometheus.NewCounter(prometheus.CounterOpts{Namespace: namespace, Name: name, Help: help})
	f.reg.MustRegister(c)
	return c
}

func (f factory) counterVec(name, help string, labels ...string) *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: name, Help: help}, labels)
	f.reg.MustRegister(c)
	return c
}

func (f factory) gauge(name, help string) prometheus.Gauge {
	g := prometheus.NewGauge(prometheus.GaugeOpts{Namespace: namespace, Name: name, Help: help})
	f.reg.MustRegister(g)
	return g
}

func (f factory) histogram(name, help string, buckets []float64) prometheus.Histogram {
	h := prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: namespace, Name: name, Help: help, Buckets: buckets})
	f.reg.MustRegister(h)
	return h
}

func (f factory) histogramVec(name, help string, buckets []float64, labels ...string) *prometheus.HistogramVec {
	h := prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: namespace, Name: name, Help: help, Buckets: buckets}, labels)
	f.reg.MustRegister(h)
	return h
}
