// Package vnccloud is a client of RealVNC's VNC Cloud REST API 1.1, the
// static-address resource: create, list, readiness, get, update, password reset and
// delete of cloud addresses. It validates requests with the server's own rules before
// sending them, reads answers tolerantly (the prose reference and the variants other
// renderings of the API show), turns every failure into a typed error that says
// whether repeating the call can help and whether the cloud may have acted anyway
// (ErrUnknownOutcome), and never prints the API secret or a cloud password.
package vnccloud

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"iter"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/trace"
)

// Version names the build in the User-Agent; set with -ldflags "-X ...vnccloud.Version=v1.2.3".
var Version = "dev"

// DefaultBaseURL is the production API.
const DefaultBaseURL = "https://api.vnc.com/cloud/1.1"

// DefaultTimeout bounds one call when Config.Timeout is zero.
const DefaultTimeout = 30 * time.Second

// Config configures a Client. Only APIKey and APISecret are required.
type Config struct {
	// BaseURL is the API root, up to and including the version. Defaults to
	// DefaultBaseURL; a trailing slash is tolerated. Tests point it at the simulator.
	BaseURL string
	// APIKey and APISecret authenticate every call with Basic auth. The secret never
	// appears in an error, String() or log line of this package.
	APIKey, APISecret string
	// HTTPClient sends the requests. Defaults to a client whose transport keeps up to
	// 128 idle connections to the API host (a fleet run makes many concurrent calls to
	// one host, and a new TLS handshake per call would cost more than the call), with
	// dial, TLS and response-header timeouts of 10, 10 and 30 seconds.
	HTTPClient *http.Client
	// Timeout bounds each call, reading the answer included. Defaults to 30 seconds:
	// the API answers in well under a second, so anything near that is a hung peer.
	Timeout time.Duration
	// UserAgent defaults to "vncfleet/<Version>", so RealVNC can tell our traffic apart.
	UserAgent string
	// Before, when set, is called before every HTTP request with the call's context and
	// operation name ("create", "list", ...); it is where the rate limiter waits. An
	// error aborts the call before anything is sent and is returned wrapped. Defaults
	// to nil: no wait.
	Before func(ctx context.Context, op string) error
	// After, when set, is called once after every HTTP request that was sent, with the
	// status (0 when no answer arrived) and the call's error (nil on success, else an
	// *APIError, *TransportError, *DecodeError or *UnknownOutcomeError): rate-limit
	// feedback such as a 503's Retry-After, and metrics. It is not called for calls
	// refused before sending.
	After func(op string, status int, err error)
	// Observe, when set, is told of every HTTP request at the transport (see
	// Observer): the hook for request counts and latencies. Defaults to nil.
	Observe Observer
	// Tracer, when set, makes an OpenTelemetry span of every HTTP request (named
	// vnccloud.<operation>, never by URL: a path holds a cloud address). Set it only
	// when spans are exported: a span of OpenTelemetry's global no-op provider still
	// costs its allocation on every call. Defaults to nil: no spans.
	Tracer trace.Tracer
}

// String shows the configuration with the secret redacted; Format and LogValue make
// every fmt verb and slog do the same.
func (c Config) String() string {
	return fmt.Sprintf("{BaseURL:%s APIKey:%s APISecret:%s Timeout:%s UserAgent:%s}",
		c.BaseURL, c.APIKey, redact(c.APISecret), c.Timeout, c.UserAgent)
}

// GoString keeps %#v from printing the secret.
func (c Config) GoString() string { return "vnccloud.Config" + c.String() }

// Format prints String() for every verb.
func (c Config) Format(f fmt.State, verb rune) { writeRedacted(f, verb, c.String(), c.GoString()) }

// LogValue logs the configuration without the secret.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(slog.String("baseURL", c.BaseURL), slog.String("apiKey", c.APIKey),
		slog.String("apiSecret", redact(c.APISecret)), slog.Duration("timeout", c.Timeout))
}

func redact(secret string) string {
	if secret == "" {
		return ""
	}
	return "<redacted>"
}

func writeRedacted(f fmt.State, verb rune, s, gs string) {
	if verb == 'v' && f.Flag('#') {
		s = gs
	}
	_, _ = io.WriteString(f, s)
}

// Client calls VNC Cloud. It is safe for concurrent use.
type Client struct {
	base    *url.URL // without a trailing slash
	baseDir *url.URL // with one, for resolving relative page URLs
	key     string
	secret  string
	http    *http.Client
	timeout time.Duration
	agent   string
	before  func(context.Context, string) error
	after   func(string, int, error)
}

// String names the client's endpoint and key, never its secret; Format makes every
// fmt verb (%+v and %#v included) use it instead of printing the struct.
func (c *Client) String() string {
	if c == nil {
		return "vnccloud.Client(nil)"
	}
	return fmt.Sprintf("vnccloud.Client{BaseURL:%s APIKey:%s}", c.base, c.key)
}

// Format prints String() for every verb.
func (c *Client) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, c.String()) }

// maxResponse bounds what is read of any answer: a real one is a few hundred bytes (a
// full list page of 99 addresses is under 10 KiB), and a broken server must not be
// able to exhaust memory.
const maxResponse = 1 << 20

// New validates the configuration and builds a client. It makes no request.
func New(cfg Config) (*Client, error) {
	raw := cfg.BaseURL
	if raw == "" {
		raw = DefaultBaseURL
	}
	base, err := url.Parse(strings.TrimRight(raw, "/"))
	if err != nil || (base.Scheme != "http" && base.Scheme != "https") || base.Host == "" {
		// Not %q of raw: a mistyped URL may carry credentials.
		return nil, errors.New("vnccloud: the base URL is not an absolute http(s) URL")
	}
	if base.User != nil {
		return nil, errors.New("vnccloud: the base URL carries credentials; they belong in APIKey/APISecret")
	}
	if base.RawQuery != "" || base.Fragment != "" || base.ForceQuery {
		return nil, errors.New("vnccloud: the base URL must not have a query or fragment")
	}
	baseDir := *base
	baseDir.Path += "/"
	if baseDir.RawPath != "" {
		baseDir.RawPath += "/"
	}
	c := &Client{
		base: base, baseDir: &baseDir,
		key: cfg.APIKey, secret: cfg.APISecret,
		http: cfg.HTTPClient, timeout: cfg.Timeout, agent: cfg.UserAgent,
		before: cfg.Before, after: cfg.After,
	}
	if c.http == nil {
		c.http = &http.Client{Transport: &http.Transport{
			Proxy:                 http.ProxyFromEnvironment,
			DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			MaxIdleConns:          1024,
			MaxIdleConnsPerHost:   512,
			IdleConnTimeout:       90 * time.Second,
			TLSHandshakeTimeout:   10 * time.Second,
			ResponseHeaderTimeout: 30 * time.Second,
			ExpectContinueTimeout: time.Second,
			ForceAttemptHTTP2:     true,
		}}
	}
	c.http = instrumented(c.http, cfg.Observe, cfg.Tracer)
	if c.timeout <= 0 {
		c.timeout = DefaultTimeout
	}
	if c.agent == "" {
		c.agent = "vncfleet/" + Version
	}
	return c, nil
}

// Created is a new address or a reset password. The password never prints: String,
// GoString, Format (every fmt verb) and LogValue redact it.
type Created struct {
	CloudAddress  string
	CloudPassword string
}

func (c Created) String() string {
	return fmt.Sprintf("{CloudAddress:%s CloudPassword:%s}", c.CloudAddress, redact(c.CloudPassword))
}

// GoString keeps %#v from printing the password.
func (c Created) GoString() string { return "vnccloud.Created" + c.String() }

// Format prints String() (GoString() for %#v) for every verb.
func (c Created) Format(f fmt.State, verb rune) { writeRedacted(f, verb, c.String(), c.GoString()) }

// LogValue logs the address and a redacted password.
func (c Created) LogValue() slog.Value {
	return slog.GroupValue(slog.String("cloudAddress", c.CloudAddress), slog.String("cloudPassword", redact(c.CloudPassword)))
}

// Details is what GET says of an address; it never includes the password.
type Details struct {
	CloudAddress string
	Spec         Spec
	ETag         string // as the server sent it, quotes included: pass it back as ifMatch
}

// ListOptions tunes List.
type ListOptions struct {
	// Limit is the page size, 1..99; 0 leaves the server's default (20).
	Limit int
	// PerRequest, when set, wraps each page's request: a listing spends one request per
	// page, so a rate limiter belongs here rather than around the whole iteration. Its
	// error ends the iteration like the request's own.
	PerRequest func(ctx context.Context, request func(ctx context.Context) error) error
}

// Page is one page of a listing.
type Page struct {
	Addresses []string
	// Next is the absolute URL of the next page, from the answer's Link rel="next"
	// (a relative one resolved against this page's URL); "" at the end.
	Next string
}

// call is one HTTP request to make.
type call struct {
	op, method, target string
	body               []byte      // nil: no body
	ifMatch            string      // "": no If-Match
	header             http.Header // test hook: overrides, an empty value deletes
}

// response is an answer read whole (bounded) with its headers.
type response struct {
	status  int
	header  http.Header
	body    []byte
	tooLong bool // the body exceeded maxResponse and was cut
}

// do sends one request, reads the whole answer and hands a 2xx to decode. Non-2xx
// answers become *APIError, failures to get a whole answer *TransportError, and a
// failure of a call that changes the account after its request may have reached the
// server *UnknownOutcomeError. The returned response is non-nil whenever an answer
// arrived.
func (c *Client) do(ctx context.Context, cl call, decode func(*response) error) (r *response, err error) {
	if c.before != nil {
		if err := c.before(ctx, cl.op); err != nil {
			return nil, fmt.Errorf("vnccloud %s: not sent: %w", cl.op, err)
		}
	}
	if c.after != nil {
		defer func() {
			status := 0
			if r != nil {
				status = r.status
			}
			c.after(cl.op, status, err)
		}()
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	var sent sendTrace
	ctx = sent.watch(ctx)
	var body io.Reader
	if cl.body != nil {
		body = bytes.NewReader(cl.body)
	}
	req, err := http.NewRequestWithContext(withOp(ctx, cl.op), cl.method, cl.target, body)
	if err != nil {
		return nil, fmt.Errorf("vnccloud %s: building the request: %w", cl.op, stripURL(err))
	}
	req.SetBasicAuth(c.key, c.secret)
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", c.agent)
	if cl.body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if cl.ifMatch != "" {
		req.Header.Set("If-Match", cl.ifMatch)
	}
	for k, vs := range cl.header {
		req.Header.Del(k)
		for _, v := range vs {
			if v != "" {
				req.Header.Add(k, v)
			}
		}
	}

	resp, err := c.http.Do(req)
	if err != nil {
		err = &TransportError{Op: cl.op, Err: stripURL(err)}
		if sent.maybe() {
			err = unknownOutcome(cl, 0, err)
		}
		return nil, err
	}
	r = &response{status: resp.StatusCode, header: resp.Header}
	r.body, err = io.ReadAll(io.LimitReader(resp.Body, maxResponse+1))
	if len(r.body) > maxResponse {
		// Closing without draining drops the connection, which is what a peer
		// sending megabytes deserves.
		r.body, r.tooLong = r.body[:maxResponse], true
	} else if err == nil {
		// Drain (nothing should be left) so the connection goes back to the pool.
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
	}
	_ = resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		// The status is the server's verdict even if its body was cut short.
		return r, decodeError(cl.op, r.status, r.header, r.body)
	}
	if decode == nil {
		// The status is the whole answer (update, delete): a body cut short changes
		// nothing.
		return r, nil
	}
	if err != nil {
		// A success cut short (reset, EOF mid-body, timeout): the server acted, but
		// what it answered (a password) is lost; to the caller that is no answer.
		err = &TransportError{Op: cl.op, Err: fmt.Errorf("reading the answer to HTTP %d: %w", resp.StatusCode, stripURL(err))}
		return r, unknownOutcome(cl, r.status, err)
	}
	if r.tooLong {
		return r, unknownOutcome(cl, r.status, decodeErr(cl.op, "the answer is larger than %d bytes", maxResponse))
	}
	if err := decode(r); err != nil {
		return r, unknownOutcome(cl, r.status, err)
	}
	return r, nil
}

// unknownOutcome wraps the failure of a call that changes the account, whose request
// may have acted, in an *UnknownOutcomeError; a read (GET) changes nothing, so its
// failure is returned as it is.
func unknownOutcome(cl call, status int, err error) error {
	if cl.method == http.MethodGet {
		return err
	}
	return &UnknownOutcomeError{Op: cl.op, Status: status, Err: err}
}

// sendTrace tells, after a failed round trip, whether the request may have reached the
// server, from net/http's client trace.
type sendTrace struct {
	connecting atomic.Bool // the transport reports its steps (net/http's does)
	written    atomic.Bool // a request was written out, in full or in part
}

func (s *sendTrace) watch(ctx context.Context) context.Context {
	return httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
		GetConn: func(string) { s.connecting.Store(true) },
		// Called after each attempt to write, failed ones included: a failed write may
		// still have delivered the whole request.
		WroteRequest: func(httptrace.WroteRequestInfo) { s.written.Store(true) },
	})
}

// maybe is false only when the request certainly never left: the transport reported
// its steps and none of them wrote it (a refused connection, a context done while
// dialling). A transport that reports nothing (a custom RoundTripper) may have sent it.
func (s *sendTrace) maybe() bool { return s.written.Load() || !s.connecting.Load() }

// stripURL drops the request URL that net/http puts in its errors: it repeats what the
// caller knows and only lengthens log lines.
func stripURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// addressURL checks the address shape before it goes into a URL, so no caller input
// can reach another path; it is escaped anyway.
func (c *Client) addressURL(address string, suffix ...string) (string, error) {
	if !IsWellFormedAddress(address) {
		return "", &ValidationError{Code: CodeMalformedAddress, Field: "cloudAddress", Message: fmt.Sprintf("cloud address %q is not well-formed", truncate(address, 100))}
	}
	return c.base.JoinPath(append([]string{"static-address", address}, suffix...)...).String(), nil
}

// Create obtains a new cloud address. The spec is checked with the server's rules first
// (a *ValidationError costs no call). ErrUnknownOutcome (errors.Is) means the address
// may exist, or certainly does when UnknownOutcomeError.Status is set, without its
// password; a 503 is the server's word that it did not act, but a gateway may give it
// after the server did. Callers record every attempt before sending it.
func (c *Client) Create(ctx context.Context, spec Spec) (Created, error) {
	if err := spec.Validate(); err != nil {
		return Created{}, err
	}
	var created Created
	_, err := c.do(ctx, call{op: "create", method: http.MethodPost, target: c.base.JoinPath("static-address").String(), body: wireBody(spec, "")},
		func(r *response) (err error) {
			created, err = decodeCreated("create", r.body, "")
			return err
		})
	return created, err
}

// List iterates over every address of the account, following each page's
// Link rel="next" verbatim until a 204 or a page without one. The first error ends the
// iteration (yielded with an empty address); a page already seen is not fetched again.
func (c *Client) List(ctx context.Context, opts ListOptions) iter.Seq2[string, error] {
	return func(yield func(string, error) bool) {
		if opts.Limit < 0 || opts.Limit > 99 {
			yield("", fmt.Errorf("vnccloud list: limit %d is outside 1..99", opts.Limit))
			return
		}
		first := c.base.JoinPath("static-address")
		if opts.Limit > 0 {
			first.RawQuery = "limit=" + strconv.Itoa(opts.Limit)
		}
		seen := map[string]bool{}
		for next := first.String(); next != ""; {
			if seen[next] {
				yield("", decodeErr("list", "the next page links back to a page already listed"))
				return
			}
			seen[next] = true
			var page Page
			fetch := func(ctx context.Context) (err error) {
				page, err = c.ListPage(ctx, next)
				return err
			}
			var err error
			if opts.PerRequest != nil {
				err = opts.PerRequest(ctx, fetch)
			} else {
				err = fetch(ctx)
			}
			if err != nil {
				yield("", err)
				return
			}
			for _, a := range page.Addresses {
				if !yield(a, nil) {
					return
				}
			}
			next = page.Next
		}
	}
}

// ListPage fetches one page: target is the first page's URL or a Page.Next. An absolute
// target is requested as given; a relative one is resolved against the base URL. A
// target on another scheme or host is refused: it would receive the API secret.
func (c *Client) ListPage(ctx context.Context, target string) (Page, error) {
	u, err := url.Parse(target)
	if err != nil {
		return Page{}, fmt.Errorf("vnccloud list: the page URL does not parse: %w", stripURL(err))
	}
	if u.IsAbs() {
		if !strings.EqualFold(u.Scheme, c.base.Scheme) || !strings.EqualFold(u.Host, c.base.Host) {
			return Page{}, fmt.Errorf("vnccloud list: refusing to send credentials to %s://%s, which is not the API host", u.Scheme, u.Host)
		}
	} else {
		u = c.baseDir.ResolveReference(u)
		target = u.String()
	}
	var page Page
	_, err = c.do(ctx, call{op: "list", method: http.MethodGet, target: target}, func(r *response) error {
		if r.status == http.StatusNoContent {
			return nil // past the last page
		}
		addrs, err := decodeListPage(r.body)
		if err != nil {
			return err
		}
		page.Addresses = addrs
		if next := nextLink(r.header.Values("Link")); next != "" {
			ref, err := url.Parse(next)
			if err != nil {
				return decodeErr("list", "the Link rel=next URL does not parse")
			}
			if !ref.IsAbs() {
				next = u.ResolveReference(ref).String() // RFC 8288 §3.2: relative to the page
			}
			page.Next = next
		}
		return nil
	})
	if err != nil {
		return Page{}, err
	}
	return page, nil
}

// Ready reports whether the address's last create, change or reset has taken effect:
// false while the API says "pending".
func (c *Client) Ready(ctx context.Context, address string) (bool, error) {
	target, err := c.addressURL(address, "ready")
	if err != nil {
		return false, err
	}
	var ready bool
	_, err = c.do(ctx, call{op: "ready", method: http.MethodGet, target: target}, func(r *response) (err error) {
		ready, err = decodeReady(r.body)
		return err
	})
	return ready, err
}

// Get retrieves an address's spec and its ETag (never its password).
func (c *Client) Get(ctx context.Context, address string) (Details, error) {
	target, err := c.addressURL(address)
	if err != nil {
		return Details{}, err
	}
	var d Details
	_, err = c.do(ctx, call{op: "get", method: http.MethodGet, target: target}, func(r *response) (err error) {
		if d, err = decodeDetails(r.body, address); err != nil {
			return err
		}
		d.ETag = r.header.Get("ETag")
		return nil
	})
	if err != nil {
		return Details{}, err
	}
	return d, nil
}

// Update replaces an address's spec (PUT: there is no patching). ifMatch "" is
// unconditional; otherwise an address changed since that ETag answers
// ErrPreconditionFailed. A body in the 200 answer, which some renderings show, is
// ignored.
func (c *Client) Update(ctx context.Context, address string, spec Spec, ifMatch string) error {
	if err := spec.Validate(); err != nil {
		return err
	}
	target, err := c.addressURL(address)
	if err != nil {
		return err
	}
	_, err = c.do(ctx, call{op: "update", method: http.MethodPut, target: target, body: wireBody(spec, address), ifMatch: ifMatch}, nil)
	return err
}

// ResetPassword makes the server generate a new password and returns it. ifMatch works
// as in Update. ErrUnknownOutcome (errors.Is) means the cloud may hold (with
// UnknownOutcomeError.Status set: holds) a new password that the caller does not know:
// only another reset gets back to a known one.
func (c *Client) ResetPassword(ctx context.Context, address string, ifMatch string) (Created, error) {
	target, err := c.addressURL(address)
	if err != nil {
		return Created{}, err
	}
	var created Created
	_, err = c.do(ctx, call{op: "reset", method: http.MethodPost, target: target, ifMatch: ifMatch}, func(r *response) (err error) {
		created, err = decodeCreated("reset", r.body, address)
		return err
	})
	return created, err
}

// Delete removes an address. ifMatch works as in Update.
func (c *Client) Delete(ctx context.Context, address string, ifMatch string) error {
	target, err := c.addressURL(address)
	if err != nil {
		return err
	}
	_, err = c.do(ctx, call{op: "delete", method: http.MethodDelete, target: target, ifMatch: ifMatch}, nil)
	return err
}

// wireSpec is the request body of create and update: allowedActions is a list of one,
// and empty lists are omitted rather than sent as [] (which the server rejects, 1005).
type wireSpec struct {
	CloudAddress   string         `json:"cloudAddress,omitempty"`
	AllowedActions []string       `json:"allowedActions"`
	Groups         []string       `json:"groups,omitempty"`
	AccessControl  *AccessControl `json:"accessControl,omitempty"`
}

func wireBody(s Spec, address string) []byte {
	b, err := json.Marshal(wireSpec{CloudAddress: address, AllowedActions: []string{string(s.Action)}, Groups: s.Groups, AccessControl: s.AccessControl})
	if err != nil {
		panic("vnccloud: a spec of strings failed to encode: " + err.Error()) // cannot happen
	}
	return b
}
