// Package apiclient is the CLI's typed client of the vncfleet HTTP API that
// `vncfleet serve` answers (docs/http-api.md).
//
// Errors are typed so that callers can branch on them: an answer of the server with
// a non-2xx status is an *Error (carrying the status, the message, and for 422 the
// problems, for 409 the refused plan); a server that cannot be reached, or answers
// that it cannot serve (502/503/504), is an *UnreachableError, which wraps the *Error
// when there was an answer. Neither ever contains the bearer token.
package apiclient

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
)

// DefaultURL is where the server listens unless VNCFLEET_URL says otherwise.
const DefaultURL = "http://127.0.0.1:8080"

// maxErrorBody bounds how much of an error answer is read. A 409 lists every
// deletion of the refused plan, so this is generous (a million ids of 64 bytes).
const maxErrorBody = 64 << 20

// Config configures a Client.
type Config struct {
	// BaseURL is the server's root, e.g. http://127.0.0.1:8080. Default DefaultURL,
	// the contract's default for VNCFLEET_URL.
	BaseURL string
	// Token is the bearer token sent with every /v1 request. Default none: the server
	// then answers 401, which is the honest outcome of a missing token.
	Token string
	// HTTPClient sends the requests. Default a client without an overall timeout,
	// because an upload streams an arbitrarily large body and export an arbitrarily
	// large answer; callers bound calls with their context instead. It trusts the
	// system's CAs and those of CAFile.
	HTTPClient *http.Client
	// CAFile names PEM CA certificates trusted for the server besides the system's
	// (VNCFLEET_CA_FILE). Only for the default HTTPClient.
	CAFile string
	// Insecure allows sending Token over plain HTTP to a host that is not loopback,
	// where anyone on the path can read it. Default false: NewWithConfig refuses.
	Insecure bool
}

// ErrPlainHTTP refuses to send a token in clear across a network.
var ErrPlainHTTP = errors.New("refusing to send the bearer token over plain HTTP to a host that is not loopback: use an https:// URL, or pass --insecure")

// Client talks to one vncfleet server. It is safe for concurrent use.
type Client struct {
	base  *url.URL
	token string
	http  *http.Client
}

// New builds a client of the server at baseURL sending token (never taken from a
// command line). An empty baseURL means DefaultURL.
func New(baseURL, token string) (*Client, error) {
	return NewWithConfig(Config{BaseURL: baseURL, Token: token})
}

// NewWithConfig builds a client from cfg; see Config for the defaults.
func NewWithConfig(cfg Config) (*Client, error) {
	raw := cfg.BaseURL
	if raw == "" {
		raw = DefaultURL
	}
	u, err := url.Parse(strings.TrimRight(raw, "/"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("server URL %q is not an http(s) URL", raw)
	}
	u.RawQuery, u.Fragment = "", ""
	if u.Scheme == "http" && cfg.Token != "" && !cfg.Insecure && !isLoopback(u.Hostname()) {
		return nil, fmt.Errorf("%s: %w", u.Redacted(), ErrPlainHTTP)
	}
	hc := cfg.HTTPClient
	if hc == nil {
		tlsCfg := &tls.Config{MinVersion: tls.VersionTLS12}
		if cfg.CAFile != "" {
			var err error
			if tlsCfg.RootCAs, err = rootsWith(cfg.CAFile); err != nil {
				return nil, err
			}
		}
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.TLSClientConfig = tlsCfg
		hc = &http.Client{Transport: tr}
	}
	return &Client{base: u, token: cfg.Token, http: hc}, nil
}

// isLoopback reports whether host is this machine for certain: localhost or a
// loopback address (a name that merely resolves to one might not, elsewhere).
func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// rootsWith is the system's CA pool plus the certificates of the PEM file path.
func rootsWith(path string) (*x509.CertPool, error) {
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool() // no system pool (some platforms): the file's alone
	}
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("CA file: %w", err)
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("CA file %s: no PEM certificate in it", path)
	}
	return pool, nil
}

// String names the server, never the token.
func (c *Client) String() string { return "vncfleet server " + c.base.Redacted() }

// UnreachableError means the server could not be reached, or answered that it
// cannot serve now (502, 503, 504: e.g. its database is down). The CLI exits 3.
type UnreachableError struct {
	// URL is the server's base URL (credentials redacted).
	URL string
	// Err is the transport error, or the *Error of a 502/503/504 answer.
	Err error
}

func (e *UnreachableError) Error() string {
	return fmt.Sprintf("cannot reach the vncfleet server at %s: %v", e.URL, e.Err)
}
func (e *UnreachableError) Unwrap() error { return e.Err }

// Error is a non-2xx answer of the API.
type Error struct {
	// Status is the HTTP status code.
	Status int
	// Message is the answer's "error" field (the status text when the body had none).
	Message string
	// Problems lists the invalid rows of a 422 (at most 1000, the server's cap).
	Problems []string
	// Total counts every problem of a 422, listed or not.
	Total int
	// Plan is the refused plan of a 409 (replace deletion guard).
	Plan *Plan
	// MaxDeletions is the limit a 409 refusal broke.
	MaxDeletions int
	// foreign: the body is not the API's JSON error, so what answered may not be a
	// vncfleet server at all.
	foreign bool
}

// NotServerError means VNCFLEET_URL answers, but not as a vncfleet server does: the
// simulator, VNC Cloud itself, or another web server. The CLI exits 3.
type NotServerError struct {
	URL string
	// Simulator: it answers like `vncfleet sim`, the usual mix-up of two ports.
	Simulator bool
	// Answer is the error answer that gave it away.
	Answer *Error
}

func (e *NotServerError) Error() string {
	if e.Simulator {
		return fmt.Sprintf("VNCFLEET_URL (%s) answers like a VNC Cloud simulator, not a vncfleet server: "+
			"point it at `vncfleet serve` (VNCFLEET_LISTEN, default 127.0.0.1:8080)", e.URL)
	}
	return fmt.Sprintf("VNCFLEET_URL (%s) does not answer like a vncfleet server (HTTP %d: %s): check the address",
		e.URL, e.Answer.Status, e.Answer.Message)
}
func (e *NotServerError) Unwrap() error { return e.Answer }

// notServer explains an answer that is not the API's: one request tells the
// simulator from anything else.
func (c *Client) notServer(ctx context.Context, answer *Error) error {
	e := &NotServerError{URL: c.base.Redacted(), Answer: answer}
	u := *c.base
	u.Path = strings.TrimRight(u.Path, "/") + "/sim/state"
	if req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil); err == nil {
		if resp, err := c.http.Do(req); err == nil {
			e.Simulator = resp.StatusCode == http.StatusOK && strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json")
			resp.Body.Close() // the state lists passwords: not read
		}
	}
	return e
}

func (e *Error) Error() string { return fmt.Sprintf("HTTP %d: %s", e.Status, e.Message) }

// IsUnreachable reports whether err means the server cannot be reached or cannot serve.
func IsUnreachable(err error) bool {
	var u *UnreachableError
	return errors.As(err, &u)
}

// StatusOf is the HTTP status of an error answer in err's chain, or 0 if there is none.
func StatusOf(err error) int {
	var e *Error
	if errors.As(err, &e) {
		return e.Status
	}
	return 0
}

// Plan is what an upload changes (or would change).
type Plan struct {
	Creates   int `json:"creates"`
	Updates   int `json:"updates"`
	Deletes   int `json:"deletes"`
	Unchanged int `json:"unchanged"`
	// Resumes counts listed devices an earlier cancel stopped, whose work the upload takes up.
	Resumes int `json:"resumes"`
	// CreateIDs lists the created devices, capped at 1000 by the server (Creates is exact).
	CreateIDs []string `json:"createIds"`
	// UpdateList lists the changed devices and fields, capped at 1000 (Updates is exact).
	UpdateList []PlanUpdate `json:"updateList"`
	// DeleteIDs lists every deletion.
	DeleteIDs []string `json:"deleteIds"`
	// MaxDeletions is the replace guard's limit, when the server reports it.
	MaxDeletions int `json:"maxDeletions,omitempty"`
	// Warnings are what the upload may do but is likely not meant; never blocking.
	Warnings []string `json:"warnings,omitempty"`
}

// PlanUpdate is one device whose desired state changes.
type PlanUpdate struct {
	DeviceID string   `json:"deviceId"`
	Fields   []string `json:"fields"`
}

// Manifest is a stored upload.
type Manifest struct {
	ID         int64     `json:"id"`
	Fleet      string    `json:"fleet"`
	Mode       string    `json:"mode"`
	Rows       int       `json:"rows"`
	SHA256     string    `json:"sha256"`
	Uploader   string    `json:"uploader"`
	UploadedAt time.Time `json:"uploadedAt"`
}

// UploadResult is the answer to an upload: stored (201), unchanged (200,
// Unchanged), or a dry run (200, DryRun, no Manifest).
type UploadResult struct {
	Manifest  *Manifest `json:"manifest"`
	Plan      Plan      `json:"plan"`
	Unchanged bool      `json:"unchanged"`
	DryRun    bool      `json:"dryRun"`
}

// Progress is the progress of a manifest (GET /v1/manifests/{id}) or of a work
// key (GET /v1/work/{key}, where Manifest is absent).
type Progress struct {
	Manifest *Manifest      `json:"manifest,omitempty"`
	Total    int            `json:"total"`
	Settled  int            `json:"settled"`
	Failed   int            `json:"failed"`
	Done     bool           `json:"done"`
	Staged   int            `json:"staged,omitempty"` // rows not yet applied to devices
	ByStatus map[string]int `json:"byStatus"`
	// The page of the manifest's groups (GroupOptions); nil from ManifestTotals.
	*GroupPage
	// CallsOwed is the VNC Cloud calls the devices still owe at the least
	// (progress.CallsOwed): what the ETA divides by the rate.
	CallsOwed int `json:"callsOwed"`
	// Cloud is what the cloud answered lately, while the manifest is not done.
	Cloud *CloudState `json:"cloud,omitempty"`
}

// CloudState is the cloud behind a manifest's progress (GET /v1/manifests/{id}).
type CloudState struct {
	Calls            int            `json:"calls"`            // calls for the manifest's devices ended in the last minute
	ErrorsLastMinute map[string]int `json:"errorsLastMinute"` // of them, answered with this HTTP error status
	Unanswered       int            `json:"unanswered"`       // of them, no answer (a timeout, a lost connection)
	InBackoff        int            `json:"inBackoff"`        // devices waiting out a backoff
	NextRetryAt      *time.Time     `json:"nextRetryAt"`
	PausedUntil      *time.Time     `json:"pausedUntil"` // a Retry-After pauses every call until then
	// Limiter is the whole cluster's VNC Cloud limiter; nil when no process publishes it.
	Limiter *LimiterState `json:"limiter,omitempty"`
}

// LimiterState is the cluster's rate limiter as its processes last published it.
type LimiterState struct {
	Rate        float64    `json:"rate"`    // the cap, requests/s for the cluster (VNCCLOUD_RATE)
	Factor      float64    `json:"factor"`  // the lowest AIMD factor: 1 at full speed
	Sending     float64    `json:"sending"` // requests/s all processes sent over their last second
	Processes   int        `json:"processes"`
	Slowed      int        `json:"slowed"` // processes slowed down by the cloud's 503/429s
	SlowedSince *time.Time `json:"slowedSince,omitempty"`
}

// Status is the fleet-wide view (GET /v1/status): the totals and manifests, and a
// page of the groups.
type Status struct {
	Total      int              `json:"total"`
	ByStatus   map[string]int   `json:"byStatus"`
	ByManifest []ManifestCounts `json:"byManifest"`
	GroupPage
}

// GroupPage is a page of groups of a status or a manifest's progress.
type GroupPage struct {
	ByGroup map[string]map[string]int `json:"byGroup"`
	// Groups counts every group with devices; ByGroup may show only some.
	Groups int `json:"groups"`
	// GroupsCountedAt is set when Groups is a count kept by the server (fleets and
	// manifests of 10,000 groups or more), at most a minute old.
	GroupsCountedAt *time.Time `json:"groupsCountedAt,omitempty"`
	// NextGroupsAfter is the GroupsAfter of the next page of groups; nil on the last.
	NextGroupsAfter *string `json:"nextGroupsAfter,omitempty"`
}

// StatusOptions select the fleet of a status and the page of its groups.
type StatusOptions struct {
	Fleet string // "" for every fleet
	GroupOptions
}

// GroupOptions select a page of groups, of a status or of a manifest's progress.
type GroupOptions struct {
	// Groups is how many groups to show at most (the server's default, 100, when 0;
	// NoGroups for none).
	Groups int
	// GroupsAfter, when set, starts the page after this group (a NextGroupsAfter).
	GroupsAfter *string
	// Group, when set, shows this group alone ("" for the devices in no group).
	Group *string
}

// NoGroups as GroupOptions.Groups shows no group.
const NoGroups = -1

// set puts the page's query parameters in q.
func (o GroupOptions) set(q url.Values) {
	switch {
	case o.Group != nil:
		q.Set("group", *o.Group)
	case o.Groups < 0:
		q.Set("groups", "0")
	case o.Groups > 0:
		q.Set("groups", strconv.Itoa(o.Groups))
	}
	if o.GroupsAfter != nil && o.Group == nil {
		q.Set("groups_after", *o.GroupsAfter)
	}
}

// ManifestCounts is one manifest's line of Status.
type ManifestCounts struct {
	Manifest int64          `json:"manifest"`
	Fleet    string         `json:"fleet,omitempty"`
	ByStatus map[string]int `json:"byStatus"`
}

// CancelResult is the answer of POST /v1/manifests/{id}/cancel.
type CancelResult struct {
	Manifest int64 `json:"manifest"`
	// Cancelled counts the devices whose owed work this call dropped.
	Cancelled int `json:"cancelled"`
	// InFlight counts the devices whose call was being made: cancel again once it is 0.
	InFlight int            `json:"inFlight"`
	ByStatus map[string]int `json:"byStatus"`
}

// RetryResult is the answer of POST /v1/retry.
type RetryResult struct {
	Retried int `json:"retried"`
	// Key names the retry's work for WorkProgress, when the server gives one.
	Key string `json:"key,omitempty"`
}

// RotateResult is the answer of POST /v1/rotate.
type RotateResult struct {
	Scheduled int `json:"scheduled"`
	// Key names the rotation's work for WorkProgress.
	Key string `json:"key"`
}

// UploadOptions are the query of an upload.
type UploadOptions struct {
	// Fleet is the fleet the manifest describes; empty: the server's default ("default").
	Fleet string
	// Mode is "merge" or "replace"; empty: the server's default (merge).
	Mode string
	// DryRun asks for the plan only; nothing is stored.
	DryRun bool
	// MaxDeletions allows a replace upload up to N deletions; negative: the server's
	// default (a share of the fleet). Zero is a real limit: no deletion at all.
	MaxDeletions int
	// ContentLength is the body's size when known (a regular file), so that the
	// server can refuse an oversized manifest before it is sent; ≤ 0: unknown, the
	// body is sent chunked.
	ContentLength int64
	// Separator and Encoding describe the file when it is not the contract's
	// comma-separated UTF-8 (fleet.ParseSeparator, fleet.ParseEncoding); empty: the default.
	Separator, Encoding string
}

// do sends one request. A non-2xx answer is read and returned as an error, so a
// returned response is always a success whose body the caller must close.
func (c *Client) do(ctx context.Context, method, path string, query url.Values, body io.Reader, contentType string) (*http.Response, error) {
	u := *c.base
	u.Path = strings.TrimRight(u.Path, "/") + path
	u.RawQuery = query.Encode()
	req, err := http.NewRequestWithContext(ctx, method, u.String(), body)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	if sr, ok := body.(*sizedReader); ok {
		req.ContentLength = sr.n
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	req.Header.Set("Accept", "application/json, text/csv")
	resp, err := c.http.Do(req)
	if err != nil {
		// The caller's own cancellation or deadline is not the server's fault.
		if ctxErr := ctx.Err(); ctxErr != nil {
			return nil, fmt.Errorf("%s %s: %w", method, path, ctxErr)
		}
		return nil, &UnreachableError{URL: c.base.Redacted(), Err: stripURL(err)}
	}
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return resp, nil
	}
	defer resp.Body.Close()
	apiErr := readError(resp)
	switch resp.StatusCode {
	case http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		// The server (or a proxy before it) is up but cannot serve: readyz-style.
		return nil, &UnreachableError{URL: c.base.Redacted(), Err: apiErr}
	}
	if apiErr.foreign {
		return nil, c.notServer(ctx, apiErr)
	}
	return nil, apiErr
}

// stripURL drops the *url.Error wrapper, whose text repeats the whole request URL
// (query included); the UnreachableError names the server once.
func stripURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

func readError(resp *http.Response) *Error {
	data, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	e := &Error{Status: resp.StatusCode}
	var wire struct {
		Error        string   `json:"error"`
		Problems     []string `json:"problems"`
		Total        int      `json:"total"`
		Plan         *Plan    `json:"plan"`
		MaxDeletions int      `json:"maxDeletions"`
	}
	if json.Unmarshal(data, &wire) == nil && wire.Error != "" {
		e.Message, e.Problems, e.Total, e.Plan, e.MaxDeletions = wire.Error, wire.Problems, wire.Total, wire.Plan, wire.MaxDeletions
		if e.Total < len(e.Problems) {
			e.Total = len(e.Problems)
		}
		if e.Plan != nil && e.Plan.MaxDeletions == 0 {
			e.Plan.MaxDeletions = e.MaxDeletions
		}
	} else {
		e.foreign = true
		if s := strings.TrimSpace(string(data)); s != "" && len(s) < 500 {
			// Not our JSON (a proxy's page): its first words still help.
			e.Message = s
		}
	}
	if e.Message == "" {
		e.Message = http.StatusText(resp.StatusCode)
	}
	return e
}

func (c *Client) doJSON(ctx context.Context, method, path string, query url.Values, v any) error {
	resp, err := c.do(ctx, method, path, query, nil, "")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		return fmt.Errorf("%s %s: decoding the answer: %w", method, path, err)
	}
	return nil
}

// Upload streams body as a CSV manifest (POST /v1/manifests). The body is read
// once, as it is sent; it is never held in memory whole.
func (c *Client) Upload(ctx context.Context, body io.Reader, o UploadOptions) (*UploadResult, error) {
	q := url.Values{}
	if o.Fleet != "" {
		q.Set("fleet", o.Fleet)
	}
	if o.Mode != "" {
		q.Set("mode", o.Mode)
	}
	if o.DryRun {
		q.Set("dry_run", "true")
	}
	if o.MaxDeletions >= 0 {
		q.Set("max_deletions", strconv.Itoa(o.MaxDeletions))
	}
	if o.Separator != "" && o.Separator != "," {
		q.Set("separator", o.Separator)
	}
	if o.Encoding != "" && !strings.EqualFold(o.Encoding, "utf-8") {
		q.Set("encoding", o.Encoding)
	}
	if o.ContentLength > 0 {
		// NewRequest knows the length of in-memory readers only; a file's comes from here.
		body = &sizedReader{Reader: body, n: o.ContentLength}
	}
	resp, err := c.do(ctx, http.MethodPost, "/v1/manifests", q, body, "text/csv")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var res UploadResult
	if err := json.NewDecoder(resp.Body).Decode(&res); err != nil {
		return nil, fmt.Errorf("upload: decoding the answer: %w", err)
	}
	if !res.DryRun && res.Manifest == nil {
		return nil, fmt.Errorf("upload: the answer (HTTP %d) names no manifest", resp.StatusCode)
	}
	return &res, nil
}

// sizedReader carries a known Content-Length from Upload to do.
type sizedReader struct {
	io.Reader
	n int64
}

// Manifest is the progress of manifest id (GET /v1/manifests/{id}) with the page of
// its groups o selects.
func (c *Client) Manifest(ctx context.Context, id int64, o GroupOptions) (*Progress, error) {
	q := url.Values{}
	o.set(q)
	return c.manifest(ctx, id, q)
}

// ManifestTotals is Manifest without the counts by group, which a large manifest
// makes costly: what a progress bar needs.
func (c *Client) ManifestTotals(ctx context.Context, id int64) (*Progress, error) {
	return c.manifest(ctx, id, url.Values{"no_groups": {"true"}})
}

func (c *Client) manifest(ctx context.Context, id int64, query url.Values) (*Progress, error) {
	var p Progress
	if err := c.doJSON(ctx, http.MethodGet, "/v1/manifests/"+strconv.FormatInt(id, 10), query, &p); err != nil {
		return nil, err
	}
	return &p, nil
}

// OpenReport opens manifest id's per-row CSV report (device_id,status,cloud_address,error);
// the caller reads and closes it.
func (c *Client) OpenReport(ctx context.Context, id int64) (io.ReadCloser, error) {
	resp, err := c.do(ctx, http.MethodGet, "/v1/manifests/"+strconv.FormatInt(id, 10)+"/report", nil, nil, "")
	if err != nil {
		return nil, err
	}
	return resp.Body, nil
}

// Report streams manifest id's per-row CSV report to w.
func (c *Client) Report(ctx context.Context, id int64, w io.Writer) error {
	rc, err := c.OpenReport(ctx, id)
	if err != nil {
		return err
	}
	defer rc.Close()
	if _, err := io.Copy(w, rc); err != nil {
		return fmt.Errorf("report of manifest %d: %w", id, cutOff(ctx, err))
	}
	return nil
}

// Status is the fleet-wide status (GET /v1/status); fleet "" means every fleet.
func (c *Client) Status(ctx context.Context, fleet string) (*Status, error) {
	return c.StatusWith(ctx, StatusOptions{Fleet: fleet})
}

// StatusWith reads the fleet-wide view with the page of groups o selects.
func (c *Client) StatusWith(ctx context.Context, o StatusOptions) (*Status, error) {
	q := url.Values{}
	if o.Fleet != "" {
		q.Set("fleet", o.Fleet)
	}
	o.set(q)
	var s Status
	if err := c.doJSON(ctx, http.MethodGet, "/v1/status", q, &s); err != nil {
		return nil, err
	}
	return &s, nil
}

// Export streams the export CSV (GET /v1/export) to w unchanged; fleet "" means
// every fleet, secrets includes the cloud passwords (secrets role, audited).
func (c *Client) Export(ctx context.Context, fleet string, secrets bool, w io.Writer) error {
	return c.ExportWith(ctx, ExportOptions{Fleet: fleet, Secrets: secrets}, w)
}

// ExportOptions select an export's devices and columns.
type ExportOptions struct {
	Fleet    string   // "" for every fleet
	Statuses []string // nil for every status
	Secrets  bool     // the cloud passwords (secrets role, audited)
	Metadata bool     // the manifests' metadata columns, after the contract's
}

// ExportWith streams the export CSV that o selects to w unchanged.
func (c *Client) ExportWith(ctx context.Context, o ExportOptions, w io.Writer) error {
	q := url.Values{}
	if o.Fleet != "" {
		q.Set("fleet", o.Fleet)
	}
	if len(o.Statuses) > 0 {
		q.Set("status", strings.Join(o.Statuses, ","))
	}
	if o.Secrets {
		q.Set("secrets", "true")
	}
	if o.Metadata {
		q.Set("metadata", "true")
	}
	resp, err := c.do(ctx, http.MethodGet, "/v1/export", q, nil, "")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(w, resp.Body); err != nil {
		return fmt.Errorf("export: %w", cutOff(ctx, err))
	}
	return nil
}

// ErrIncomplete means a streamed answer (export, report) broke off midway: the server
// aborts an answer that fails after it began, so that it never looks complete. What
// was written before is incomplete and must not be used.
var ErrIncomplete = errors.New("the answer broke off midway, so what was written is incomplete (the server's log says why)")

// cutOff names a read error of a streamed body as ErrIncomplete, unless the caller's
// own context ended it.
func cutOff(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return fmt.Errorf("%w: %w", ErrIncomplete, err)
}

// Manifests lists the stored manifests, newest first (GET /v1/manifests); fleet ""
// means every fleet.
func (c *Client) Manifests(ctx context.Context, fleet string) ([]Manifest, error) {
	q := url.Values{}
	if fleet != "" {
		q.Set("fleet", fleet)
	}
	var ms []Manifest
	if err := c.doJSON(ctx, http.MethodGet, "/v1/manifests", q, &ms); err != nil {
		return nil, err
	}
	return ms, nil
}

// Retry schedules the failed devices again (POST /v1/retry); fleet "" means every
// fleet, manifest ≤ 0 every manifest.
func (c *Client) Retry(ctx context.Context, fleet string, manifest int64) (*RetryResult, error) {
	return c.RetryWith(ctx, fleet, manifest, false)
}

// RetryWith is Retry; with now, devices waiting out a backoff are due at once too.
func (c *Client) RetryWith(ctx context.Context, fleet string, manifest int64, now bool) (*RetryResult, error) {
	q := url.Values{}
	if now {
		q.Set("now", "true")
	}
	if fleet != "" {
		q.Set("fleet", fleet)
	}
	if manifest > 0 {
		q.Set("manifest", strconv.FormatInt(manifest, 10))
	}
	var res RetryResult
	if err := c.doJSON(ctx, http.MethodPost, "/v1/retry", q, &res); err != nil {
		return nil, err
	}
	return &res, nil
}

// Rotate schedules password rotations now (POST /v1/rotate): the due ones, or all.
func (c *Client) Rotate(ctx context.Context, fleet string, all bool) (*RotateResult, error) {
	q := url.Values{}
	if fleet != "" {
		q.Set("fleet", fleet)
	}
	if all {
		q.Set("all", "true")
	}
	var res RotateResult
	if err := c.doJSON(ctx, http.MethodPost, "/v1/rotate", q, &res); err != nil {
		return nil, err
	}
	return &res, nil
}

// WorkProgress is the progress of the work named key (GET /v1/work/{key}).
func (c *Client) WorkProgress(ctx context.Context, key string) (*Progress, error) {
	var p Progress
	if err := c.doJSON(ctx, http.MethodGet, "/v1/work/"+url.PathEscape(key), nil, &p); err != nil {
		return nil, err
	}
	return &p, nil
}

// Reconcile runs reconciliation now (POST /v1/reconcile) and returns its report
// as the server wrote it: its shape belongs to the server.
func (c *Client) Reconcile(ctx context.Context, dryRun bool) (json.RawMessage, error) {
	q := url.Values{}
	if dryRun {
		q.Set("dry_run", "true")
	}
	var raw json.RawMessage
	if err := c.doJSON(ctx, http.MethodPost, "/v1/reconcile", q, &raw); err != nil {
		return nil, err
	}
	return raw, nil
}

// Cancel stops manifest id's owed work (POST /v1/manifests/{id}/cancel).
func (c *Client) Cancel(ctx context.Context, id int64) (*CancelResult, error) {
	var res CancelResult
	if err := c.doJSON(ctx, http.MethodPost, "/v1/manifests/"+strconv.FormatInt(id, 10)+"/cancel", nil, &res); err != nil {
		return nil, err
	}
	return &res, nil
}
