// Package zenlayer is a client of Zenlayer Cloud API 2.0's DescribeVncUrl action,
// which returns the VNC console URL of a ZEC instance. It signs every request with
// ZC2-HMAC-SHA256 (Sign, CanonicalRequest and StringToSign are exported so the
// simulator verifies by the same recipe) and reports failures as *APIError, which
// callers classify with IsRetryable, IsThrottled, IsInstanceNotReady and
// errors.Is(err, ErrInstanceNotFound). The client makes one attempt per call:
// retrying, and bounding the retries, is the caller's job.
//
// The access key password is only ever used as the HMAC key: it is never sent,
// logged, or put in an error.
package zenlayer

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// API facts.
const (
	// DefaultBaseURL is Zenlayer Cloud API 2.0; the ZEC service is under /zec.
	DefaultBaseURL = "https://console.zenlayer.com/api/v2"
	// APIVersion is sent in X-ZC-Version.
	APIVersion = "2022-11-20"
	// ActionDescribeVncURL is sent in X-ZC-Action.
	ActionDescribeVncURL = "DescribeVncUrl"
	// ContentType is the Content-Type of every request, and so what is signed.
	ContentType = "application/json"
)

// Header names of Zenlayer Cloud API 2.0's common request parameters.
const (
	HeaderAction          = "X-ZC-Action"
	HeaderVersion         = "X-ZC-Version"
	HeaderTimestamp       = "X-ZC-Timestamp"
	HeaderSignatureMethod = "X-ZC-Signature-Method"
)

// maxAnswerBytes bounds what is read of an answer: a VNC URL answer is a few
// hundred bytes, and a misbehaving server must not make us buffer without end.
const maxAnswerBytes = 1 << 20

// Config configures a Client. Only the two credential fields are required.
type Config struct {
	// BaseURL is the API root, without the service path. Defaults to
	// DefaultBaseURL; tests and the simulator point it elsewhere (the simulator
	// serves http://HOST/api/v2). Requests go to BaseURL + "/zec".
	BaseURL string
	// AccessKeyID identifies the access key; it is sent in Authorization.
	// Required.
	AccessKeyID string
	// AccessKeyPassword is the access key's secret, used only as the HMAC key.
	// Required. Never sent, logged or put in an error.
	AccessKeyPassword string
	// HTTPClient sends the requests. Defaults to a client that does not follow
	// redirects: a redirected POST becomes a GET without the signed body, so a
	// redirect is reported as an error instead. Its Timeout, if any, applies
	// on top of Timeout.
	HTTPClient *http.Client
	// Timeout bounds one DescribeVncUrl call, connection to last byte. Defaults
	// to 30 seconds: the action is a lookup, and a job worker should not hang on
	// a dead connection. A timeout is reported as a retryable transport error.
	Timeout time.Duration
	// UserAgent is sent in User-Agent. Defaults to "vncfleet-zenlayer", so
	// Zenlayer's logs can tell this client's requests apart.
	UserAgent string
	// Now gives the time put in X-ZC-Timestamp. Defaults to time.Now; tests set
	// it to sign at a known instant or with a skewed clock.
	Now func() time.Time
	// Observe, when set, is told of every request sent, with the HTTP status (0 when
	// no answer arrived): the hook for request counts. Defaults to nil.
	Observe func(status int)
}

// Client calls DescribeVncUrl. It is safe for concurrent use.
type Client struct {
	cfg      Config
	endpoint string
	// host is the Host header sent and signed: the URL host without a default port.
	host string
}

// New validates cfg, fills its defaults and returns a client.
func New(cfg Config) (*Client, error) {
	if cfg.BaseURL == "" {
		cfg.BaseURL = DefaultBaseURL
	}
	base, err := url.Parse(cfg.BaseURL)
	if err != nil || (base.Scheme != "http" && base.Scheme != "https") || base.Host == "" || base.User != nil {
		// The parse error is not wrapped: it repeats the URL, which might carry userinfo.
		return nil, errors.New("zenlayer: base URL must be an http(s) URL with a host and no user info")
	}
	if base.RawQuery != "" || base.Fragment != "" {
		return nil, fmt.Errorf("zenlayer: base URL %s must not have a query or fragment", base.Redacted())
	}
	host, err := signedHost(base)
	if err != nil {
		return nil, err
	}
	if cfg.AccessKeyID == "" || cfg.AccessKeyPassword == "" {
		return nil, errors.New("zenlayer: access key id and access key password are required")
	}
	if strings.ContainsFunc(cfg.AccessKeyID, func(r rune) bool { return r <= ' ' || r == ',' || r >= 0x7f }) {
		// It goes into the Authorization header, whose list it would break.
		return nil, errors.New("zenlayer: access key id must be printable ASCII without spaces or commas")
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 30 * time.Second
	}
	if cfg.UserAgent == "" {
		cfg.UserAgent = "vncfleet-zenlayer"
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Client{cfg: cfg, endpoint: base.JoinPath("zec").String(), host: host}, nil
}

// signedHost is the Host header this client sends for base, and so the host it
// signs. A default port is dropped, as a browser would: the server signs what it
// receives, and "host:443" would not match "host".
func signedHost(base *url.URL) (string, error) {
	for _, r := range base.Host {
		if r >= 0x80 {
			// net/http would send the punycode form, which is not what we signed.
			return "", errors.New("zenlayer: base URL host must be ASCII (use its punycode form)")
		}
	}
	host, port, err := net.SplitHostPort(base.Host)
	if err != nil {
		return base.Host, nil // no port
	}
	if (base.Scheme == "https" && port == "443") || (base.Scheme == "http" && port == "80") {
		if strings.Contains(host, ":") {
			return "[" + host + "]", nil // IPv6 literal
		}
		return host, nil
	}
	return base.Host, nil
}

// DescribeVncUrl returns the VNC console URL of the ZEC instance instanceID. It
// makes one signed request; see IsRetryable, IsInstanceNotReady and
// ErrInstanceNotFound to decide what to do with an error.
func (c *Client) DescribeVncUrl(ctx context.Context, instanceID string) (string, error) {
	if instanceID == "" {
		return "", errors.New("zenlayer DescribeVncUrl: empty instance id")
	}
	body, err := json.Marshal(struct {
		InstanceID string `json:"instanceId"`
	}{instanceID})
	if err != nil {
		return "", fmt.Errorf("zenlayer DescribeVncUrl: encoding the request: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.endpoint, bytes.NewReader(body))
	if err != nil {
		return "", fmt.Errorf("zenlayer DescribeVncUrl: %w", err)
	}
	ts := c.cfg.Now().Unix()
	sig := Sign(SignInput{Host: c.host, ContentType: ContentType, Body: body, Timestamp: ts, AccessKeyPassword: c.cfg.AccessKeyPassword})
	req.Host = c.host
	req.Header.Set("Content-Type", ContentType)
	req.Header.Set(HeaderAction, ActionDescribeVncURL)
	req.Header.Set(HeaderVersion, APIVersion)
	req.Header.Set(HeaderTimestamp, strconv.FormatInt(ts, 10))
	req.Header.Set(HeaderSignatureMethod, SignatureMethod)
	req.Header.Set("Authorization", Authorization(c.cfg.AccessKeyID, sig))
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", c.cfg.UserAgent)

	resp, err := c.cfg.HTTPClient.Do(req)
	if c.cfg.Observe != nil {
		status := 0
		if err == nil {
			status = resp.StatusCode
		}
		c.cfg.Observe(status)
	}
	if err != nil {
		// *url.Error names the endpoint (with any password stripped by net/http)
		// and keeps Timeout(); ErrTransport marks it retryable.
		return "", fmt.Errorf("zenlayer DescribeVncUrl %s: %w: %w", instanceID, ErrTransport, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswerBytes))
	if err != nil {
		return "", fmt.Errorf("zenlayer DescribeVncUrl %s: reading the answer: %w: %w", instanceID, ErrTransport, err)
	}
	vncURL, err := DecodeResponse(resp.StatusCode, data)
	if apiErr, ok := errors.AsType[*APIError](err); ok {
		// The server never receives the password, but an error message is text
		// from outside: make sure it cannot carry the secret into logs.
		apiErr.Message = strings.ReplaceAll(apiErr.Message, c.cfg.AccessKeyPassword, "[redacted]")
		return "", apiErr
	}
	return vncURL, err
}

// String shows the configuration without the password, so a Config that ends up
// in a log line or an error does not leak it.
func (c Config) String() string {
	pw := ""
	if c.AccessKeyPassword != "" {
		pw = "[redacted]"
	}
	return fmt.Sprintf("zenlayer.Config{BaseURL:%q AccessKeyID:%q AccessKeyPassword:%s Timeout:%s UserAgent:%q}",
		c.BaseURL, c.AccessKeyID, pw, c.Timeout, c.UserAgent)
}

// GoString is String: %#v must not print the password either.
func (c Config) GoString() string { return c.String() }

// String describes the client without its password.
func (c Client) String() string { return "zenlayer.Client{" + c.endpoint + " " + c.cfg.String() + "}" }

// GoString is String: %#v must not print the password either.
func (c Client) GoString() string { return c.String() }
