package vnccloud_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/vncfleet/vncfleet/internal/sim"
	"github.com/vncfleet/vncfleet/vnccloud"
)

const (
	addrA = "AAAAAAAAAAAAAAAAAAA.AAAAAAAAAAAAAAAAAAA.AAAAAAAAAAAAAAAAAAA.AAAAAAAAAAAAAAAAAAA"
	addrB = "BBBBBBBBBBBBBBBBBBB.AAAAAAAAAAAAAAAAAAA.AAAAAAAAAAAAAAAAAAA.AAAAAAAAAAAAAAAAAAA"
)

// rawClient serves h over real HTTP and returns a client of it.
func rawClient(t *testing.T, h http.HandlerFunc, mod ...func(*vnccloud.Config)) (*vnccloud.Client, *httptest.Server) {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	cfg := vnccloud.Config{BaseURL: srv.URL + "/cloud/1.1/", APIKey: key, APISecret: secret}
	for _, m := range mod {
		m(&cfg)
	}
	c, err := vnccloud.New(cfg)
	require.NoError(t, err)
	return c, srv
}

// hijack takes the connection from a handler; linger 0 makes Close send a TCP RST.
func hijack(w http.ResponseWriter, rst bool) net.Conn {
	conn, _, err := w.(http.Hijacker).Hijack()
	if err != nil {
		panic(err)
	}
	if tcp, ok := conn.(*net.TCPConn); ok && rst {
		_ = tcp.SetLinger(0)
	}
	return conn
}

// cutShort serves answer, the start of an HTTP response, and closes the connection.
func cutShort(t *testing.T, answer string) *vnccloud.Client {
	c, _ := rawClient(t, func(w http.ResponseWriter, r *http.Request) {
		conn := hijack(w, false)
		_, _ = io.WriteString(conn, answer)
		_ = conn.Close()
	})
	return c
}

// TestRetryClassification checks IsRetryable on errors the client really returns,
// each provoked over real HTTP.
func TestRetryClassification(t *testing.T) {
	t.Parallel()
	type kind int
	const (
		api kind = iota
		transport
		decode
		other
		unknownTransport // an *UnknownOutcomeError around a *TransportError
		unknownDecode    // an *UnknownOutcomeError around a *DecodeError
	)
	simClient := func(t *testing.T, cfg sim.Config, mod ...func(*vnccloud.Config)) (*vnccloud.Client, *sim.Server) {
		f := newFixture(t, cfg)
		c := f.client
		if len(mod) > 0 {
			vc := vnccloud.Config{BaseURL: f.base, APIKey: key, APISecret: secret}
			for _, m := range mod {
				m(&vc)
			}
			var err error
			c, err = vnccloud.New(vc)
			require.NoError(t, err)
		}
		return c, f.sim
	}
	for _, tc := range []struct {
		name  string
		run   func(t *testing.T, ctx context.Context) error
		retry bool
		kind  kind
		check func(t *testing.T, err error)
	}{
		{"503", func(t *testing.T, ctx context.Context) error {
			c, _ := simClient(t, sim.Config{FailRate: 1})
			_, err := c.Get(ctx, addrA)
			return err
		}, true, api, nil},
		{"503 rate cap with Retry-After", func(t *testing.T, ctx context.Context) error {
			c, _ := simClient(t, sim.Config{Rate: 1})
			_, err := c.Create(ctx, connect("a"))
			require.NoError(t, err)
			_, err = c.Create(ctx, connect("a"))
			return err
		}, true, api, func(t *testing.T, err error) {
			var e *vnccloud.APIError
			require.ErrorAs(t, err, &e)
			require.Equal(t, time.Second, e.RetryAfter)
		}},
		{"429 with an HTTP-date Retry-After", func(t *testing.T, ctx context.Context) error {
			c, _ := rawClient(t, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Retry-After", time.Now().Add(30*time.Second).UTC().Format(http.TimeFormat))
				w.WriteHeader(429)
			})
			_, err := c.Get(ctx, addrA)
			return err
		}, true, api, func(t *testing.T, err error) {
			var e *vnccloud.APIError
			require.ErrorAs(t, err, &e)
			require.InDelta(t, 30*time.Second, e.RetryAfter, float64(2*time.Second))
		}},
		{"502 with an HTML body", func(t *testing.T, ctx context.Context) error {
			c, _ := rawClient(t, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "text/html")
				w.WriteHeader(502)
				_, _ = io.WriteString(w, "<html><body>bad gateway</body></html>")
			})
			return c.Delete(ctx, addrA, "")
		}, true, api, func(t *testing.T, err error) {
			var e *vnccloud.APIError
			require.ErrorAs(t, err, &e)
			require.Equal(t, "Bad Gateway", e.Message)
		}},
		{"connection refused", func(t *testing.T, ctx context.Context) error {
			c, srv := rawClient(t, func(http.ResponseWriter, *http.Request) {})
			srv.Close()
			_, err := c.Create(ctx, connect("a"))
			return err
		}, true, transport, nil}, // certainly not sent: not an unknown outcome
		{"per-call timeout after the create was sent", func(t *testing.T, ctx context.Context) error {
			c, s := simClient(t, sim.Config{Latency: 300 * time.Millisecond}, func(c *vnccloud.Config) { c.Timeout = 30 * time.Millisecond })
			_, err := c.Create(ctx, connect("a"))
			require.EqualValues(t, 1, s.State().Accounts[key].Counts["create"], "the request reached the server")
			return err
		}, true, unknownTransport, func(t *testing.T, err error) {
			require.ErrorIs(t, err, context.DeadlineExceeded)
			var u *vnccloud.UnknownOutcomeError
			require.ErrorAs(t, err, &u)
			require.Zero(t, u.Status, "no answer arrived")
		}},
		{"per-call timeout", func(t *testing.T, ctx context.Context) error {
			c, _ := simClient(t, sim.Config{Latency: 300 * time.Millisecond}, func(c *vnccloud.Config) { c.Timeout = 30 * time.Millisecond })
			_, err := c.Get(ctx, addrA)
			return err
		}, true, transport, func(t *testing.T, err error) { require.ErrorIs(t, err, context.DeadlineExceeded) }},
		{"connection reset", func(t *testing.T, ctx context.Context) error {
			c, _ := rawClient(t, func(w http.ResponseWriter, r *http.Request) { _ = hijack(w, true).Close() })
			_, err := c.Ready(ctx, addrA)
			return err
		}, true, transport, nil},
		{"connection closed without an answer", func(t *testing.T, ctx context.Context) error {
			c, _ := rawClient(t, func(w http.ResponseWriter, r *http.Request) { _ = hijack(w, false).Close() })
			_, err := c.Create(ctx, connect("a"))
			return err
		}, true, unknownTransport, nil},
		{"reset answered with a connection reset", func(t *testing.T, ctx context.Context) error {
			c, _ := rawClient(t, func(w http.ResponseWriter, r *http.Request) { _ = hijack(w, true).Close() })
			_, err := c.ResetPassword(ctx, addrA, "")
			return err
		}, true, unknownTransport, nil},
		{"delete answered with a connection reset", func(t *testing.T, ctx context.Context) error {
			c, _ := rawClient(t, func(w http.ResponseWriter, r *http.Request) { _ = hijack(w, true).Close() })
			return c.Delete(ctx, addrA, "")
		}, true, unknownTransport, nil},
		{"EOF mid-body", func(t *testing.T, ctx context.Context) error {
			c := cutShort(t, "HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n{\"cloudAddress\":")
			_, err := c.Create(ctx, connect("a"))
			return err
		}, true, unknownTransport, func(t *testing.T, err error) {
			require.ErrorIs(t, err, io.ErrUnexpectedEOF)
			var u *vnccloud.UnknownOutcomeError
			require.ErrorAs(t, err, &u)
			require.Equal(t, http.StatusCreated, u.Status, "the cloud acted")
		}},
		{"EOF mid-body of a read", func(t *testing.T, ctx context.Context) error {
			c := cutShort(t, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n{\"changes\":")
			_, err := c.Ready(ctx, addrA)
			return err
		}, true, transport, func(t *testing.T, err error) { require.ErrorIs(t, err, io.ErrUnexpectedEOF) }},
		{"error status with its body cut short", func(t *testing.T, ctx context.Context) error {
			c := cutShort(t, "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n{\"errorMessage\":")
			_, err := c.Get(ctx, addrA)
			return err
		}, false, api, func(t *testing.T, err error) { require.ErrorIs(t, err, vnccloud.ErrNotFound) }},
		{"create committed, answered 503", func(t *testing.T, ctx context.Context) error {
			c, s := simClient(t, sim.Config{LostRate: 1, Seed: 7})
			_, err := c.Create(ctx, connect("a"))
			require.Len(t, s.State().Accounts[key].Addresses, 1, "the address exists although the call failed")
			return err
		}, true, api, nil}, // the server's word, although a wrong one: the caller's record of the attempt covers it
		{"create committed, connection dropped", func(t *testing.T, ctx context.Context) error {
			c, s := simClient(t, sim.Config{DropRate: 1, Seed: 7})
			_, err := c.Create(ctx, connect("a"))
			st := s.State()
			require.Len(t, st.Accounts[key].Addresses, 1, "the address exists although the call failed")
			require.EqualValues(t, 1, st.Injected.Dropped)
			return err
		}, true, unknownTransport, func(t *testing.T, err error) {
			var u *vnccloud.UnknownOutcomeError
			require.ErrorAs(t, err, &u)
			require.Equal(t, "create", u.Op)
			require.Zero(t, u.Status)
		}},
		{"reset committed, answer cut off", func(t *testing.T, ctx context.Context) error {
			c, s := simClient(t, sim.Config{})
			created, err := c.Create(ctx, connect("a"))
			require.NoError(t, err)
			s.SetFaults(sim.Faults{GarbleRate: 1})
			_, err = c.ResetPassword(ctx, created.CloudAddress, "")
			st := s.State()
			require.Equal(t, 2, st.Accounts[key].Addresses[0].Version, "the reset was committed")
			require.NotContains(t, fmt.Sprintf("%v %+v %#v", err, err, err), st.Accounts[key].Addresses[0].Password)
			require.EqualValues(t, 1, st.Injected.Garbled)
			return err
		}, true, unknownDecode, func(t *testing.T, err error) {
			var u *vnccloud.UnknownOutcomeError
			require.ErrorAs(t, err, &u)
			require.Equal(t, "reset", u.Op)
			require.Equal(t, http.StatusOK, u.Status, "the cloud acted")
			require.Equal(t, "vnccloud reset: outcome unknown: HTTP 200, but the answer is unusable: "+
				"the body is not a JSON object with cloudAddress and cloudPassword", err.Error())
		}},
		{"undecodable 201", func(t *testing.T, ctx context.Context) error {
			c, _ := rawClient(t, func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(http.StatusCreated)
				_, _ = io.WriteString(w, "<html>")
			})
			_, err := c.Create(ctx, connect("a"))
			return err
		}, true, unknownDecode, nil},
		{"400 1004", func(t *testing.T, ctx context.Context) error {
			c, _ := simClient(t, sim.Config{})
			_, err := c.Raw(ctx, "create", "POST", "/static-address", []byte(`{"allowedActions":["connect"],"groups":`+jsonList(names("g", 17))+`}`), nil)
			return err
		}, false, api, nil},
		{"401", func(t *testing.T, ctx context.Context) error {
			c, _ := simClient(t, sim.Config{}, func(c *vnccloud.Config) { c.APISecret = "wrong" })
			_, err := c.Get(ctx, addrA)
			return err
		}, false, api, nil},
		{"403", func(t *testing.T, ctx context.Context) error {
			c, _ := simClient(t, sim.Config{}, func(c *vnccloud.Config) { c.APIKey = "key with spaces" })
			_, err := c.Get(ctx, addrA)
			return err
		}, false, api, nil},
		{"404", func(t *testing.T, ctx context.Context) error {
			c, _ := simClient(t, sim.Config{})
			_, err := c.Get(ctx, addrA)
			return err
		}, false, api, nil},
		{"409", func(t *testing.T, ctx context.Context) error {
			c, _ := simClient(t, sim.Config{})
			created, err := c.Create(ctx, connect("a"))
			require.NoError(t, err)
			_, err = c.Raw(ctx, "update", "PUT", "/static-address/"+created.CloudAddress, []byte(`{"cloudAddress":"`+addrA+`","allowedActions":["connect"]}`), nil)
			return err
		}, false, api, nil},
		{"412", func(t *testing.T, ctx context.Context) error {
			c, _ := simClient(t, sim.Config{})
			created, err := c.Create(ctx, connect("a"))
			require.NoError(t, err)
			return c.Delete(ctx, created.CloudAddress, `"7"`)
		}, false, api, nil},
		{"context canceled", func(t *testing.T, ctx context.Context) error {
			c, _ := simClient(t, sim.Config{Latency: 300 * time.Millisecond})
			ctx, cancel := context.WithCancel(ctx)
			time.AfterFunc(20*time.Millisecond, cancel)
			_, err := c.Create(ctx, connect("a"))
			return err
		}, false, unknownTransport, func(t *testing.T, err error) { require.ErrorIs(t, err, context.Canceled) }},
		{"Before refuses", func(t *testing.T, ctx context.Context) error {
			c, s := simClient(t, sim.Config{}, func(c *vnccloud.Config) {
				c.Before = func(context.Context, string) error { return context.Canceled }
			})
			_, err := c.Create(ctx, connect("a"))
			require.Zero(t, s.State().Requests)
			return err
		}, false, other, func(t *testing.T, err error) { require.ErrorIs(t, err, context.Canceled) }},
		{"undecodable 200", func(t *testing.T, ctx context.Context) error {
			c, _ := rawClient(t, func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "<html>") })
			_, err := c.Get(ctx, addrA)
			return err
		}, false, decode, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			err := tc.run(t, context.Background())
			require.Error(t, err)
			require.Equal(t, tc.retry, vnccloud.IsRetryable(err), "%v", err)
			var (
				apiErr *vnccloud.APIError
				trErr  *vnccloud.TransportError
				decErr *vnccloud.DecodeError
			)
			require.Equal(t, tc.kind == api, errors.As(err, &apiErr), "*APIError: %v", err)
			require.Equal(t, tc.kind == transport || tc.kind == unknownTransport, errors.As(err, &trErr), "*TransportError: %v", err)
			require.Equal(t, tc.kind == decode || tc.kind == unknownDecode, errors.As(err, &decErr), "*DecodeError: %v", err)
			unknown := tc.kind == unknownTransport || tc.kind == unknownDecode
			require.Equal(t, unknown, errors.Is(err, vnccloud.ErrUnknownOutcome), "ErrUnknownOutcome: %v", err)
			var u *vnccloud.UnknownOutcomeError
			require.Equal(t, unknown, errors.As(err, &u), "*UnknownOutcomeError: %v", err)
			if tc.check != nil {
				tc.check(t, err)
			}
		})
	}
}

// TestTolerantReader feeds the client the answers other renderings of the API (and
// sloppy servers) give, over real HTTP, and checks the requests it sends meanwhile.
func TestTolerantReader(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	type check func(t *testing.T, c *vnccloud.Client)
	apiErr := func(t *testing.T, err error, status int, code vnccloud.ErrorCode, msg string) {
		t.Helper()
		var e *vnccloud.APIError
		require.ErrorAs(t, err, &e)
		require.Equal(t, status, e.StatusCode)
		require.Equal(t, code, e.Code)
		require.Equal(t, msg, e.Message)
	}
	decodeErr := func(t *testing.T, err error) {
		t.Helper()
		var de *vnccloud.DecodeError
		require.ErrorAs(t, err, &de)
		require.False(t, vnccloud.IsRetryable(err))
		require.NotErrorIs(t, err, vnccloud.ErrUnknownOutcome, "a read changes nothing")
	}
	// A create or reset answered 2xx with a body that does not decode has acted, but its
	// answer is lost: an unknown outcome, retryable.
	unknownDecode := func(t *testing.T, err error, status int) {
		t.Helper()
		var de *vnccloud.DecodeError
		require.ErrorAs(t, err, &de)
		var u *vnccloud.UnknownOutcomeError
		require.ErrorAs(t, err, &u)
		require.Equal(t, status, u.Status)
		require.ErrorIs(t, err, vnccloud.ErrUnknownOutcome)
		require.True(t, vnccloud.IsRetryable(err))
	}
	huge := `{"cloudAddresses":["` + strings.Repeat("x", 2<<20) + `"]}`
	for _, tc := range []struct {
		name   string
		status int
		header map[string]string
		body   string
		check  check
	}{
		// Error bodies.
		{"errorCode as number", 400, nil, `{"errorCode":1006,"errorMessage":"bad name"}`, func(t *testing.T, c *vnccloud.Client) {
			_, err := c.Create(ctx, connect("a"))
			apiErr(t, err, 400, vnccloud.CodeBadGroupName, "bad name")
		}},
		{"errorCode as string", 400, nil, `{"errorCode":"1004","errorMessage":"too many"}`, func(t *testing.T, c *vnccloud.Client) {
			_, err := c.Create(ctx, connect("a"))
			apiErr(t, err, 400, vnccloud.CodeTooMany, "too many")
		}},
		{"errorCode as padded string", 400, nil, `{"errorCode":" 1007 ","errorMessage":"x"}`, func(t *testing.T, c *vnccloud.Client) {
			_, err := c.Get(ctx, addrA)
			apiErr(t, err, 400, vnccloud.CodeMalformedAddress, "x")
		}},
		{"errorCode not numeric keeps the message", 400, nil, `{"errorCode":"TOO_MANY","errorMessage":"too many groups"}`, func(t *testing.T, c *vnccloud.Client) {
			_, err := c.Create(ctx, connect("a"))
			apiErr(t, err, 400, 0, "too many groups")
		}},
		{"errorCode as an object", 400, nil, `{"errorCode":{"n":1},"errorMessage":"odd"}`, func(t *testing.T, c *vnccloud.Client) {
			_, err := c.Create(ctx, connect("a"))
			apiErr(t, err, 400, 0, "odd")
		}},
		{"message field", 409, nil, `{"message":"already exists"}`, func(t *testing.T, c *vnccloud.Client) {
			_, err := c.Create(ctx, connect("a"))
			apiErr(t, err, 409, 0, "already exists")
			require.ErrorIs(t, err, vnccloud.ErrConflict)
		}},
		{"error field", 403, nil, `{"error":"forbidden key"}`, func(t *testing.T, c *vnccloud.Client) {
			_, err := c.Get(ctx, addrA)
			apiErr(t, err, 403, 0, "forbidden key")
		}},
		{"nested error object", 400, nil, `{"errorCode":1003,"error":{"message":"bad action"}}`, func(t *testing.T, c *vnccloud.Client) {
			_, err := c.Create(ctx, connect("a"))
			apiErr(t, err, 400, vnccloud.CodeInvalidAction, "bad action")
		}},
		{"message with control characters", 400, nil, `{"errorMessage":"line one\nFAKE log line\u0000"}`, func(t *testing.T, c *vnccloud.Client) {
			_, err := c.Create(ctx, connect("a"))
			apiErr(t, err, 400, 0, "line one FAKE log line")
			require.NotContains(t, err.Error(), "\n")
		}},
		{"error without a body", 404, nil, ``, func(t *testing.T, c *vnccloud.Client) {
			_, err := c.Get(ctx, addrA)
			apiErr(t, err, 404, 0, "Not Found")
			require.ErrorIs(t, err, vnccloud.ErrNotFound)
		}},
		{"error with an HTML body and Retry-After seconds", 503, map[string]string{"Retry-After": "7"}, `<html>busy</html>`, func(t *testing.T, c *vnccloud.Client) {
			_, err := c.Get(ctx, addrA)
			apiErr(t, err, 503, 0, "Service Unavailable")
			var e *vnccloud.APIError
			require.ErrorAs(t, err, &e)
			require.Equal(t, 7*time.Second, e.RetryAfter)
		}},
		{"Retry-After in the past or garbage", 503, map[string]string{"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, ``, func(t *testing.T, c *vnccloud.Client) {
			_, err := c.Get(ctx, addrA)
			var e *vnccloud.APIError
			require.ErrorAs(t, err, &e)
			require.Zero(t, e.RetryAfter)
		}},
		{"huge error body", 500, nil, huge, func(t *testing.T, c *vnccloud.Client) {
			_, err := c.Get(ctx, addrA)
			apiErr(t, err, 500, 0, "Internal Server Error")
		}},
		{"a 3xx is an error too", 304, nil, ``, func(t *testing.T, c *vnccloud.Client) {
			_, err := c.Get(ctx, addrA)
			apiErr(t, err, 304, 0, "Not Modified")
		}},
		// List pages.
		{"list as items", 200, nil, `{"items":[{"cloudAddress":"` + addrA + `","allowedActions":"connect"},{"cloudAddress":"` + addrB + `"}]}`, func(t *testing.T, c *vnccloud.Client) {
			page, err := c.ListPage(ctx, "static-address")
			require.NoError(t, err)
			require.Equal(t, []string{addrA, addrB}, page.Addresses)
			require.Empty(t, page.Next)
		}},
		{"list with unknown fields", 200, nil, `{"cloudAddresses":["` + addrA + `"],"total":1,"cursor":null}`, func(t *testing.T, c *vnccloud.Client) {
			page, err := c.ListPage(ctx, "static-address")
			require.NoError(t, err)
			require.Equal(t, []string{addrA}, page.Addresses)
		}},
		{"list 200 with an empty body", 200, nil, ``, func(t *testing.T, c *vnccloud.Client) {
			page, err := c.ListPage(ctx, "static-address")
			require.NoError(t, err)
			require.Empty(t, page.Addresses)
		}},
		{"list with several links, rel unquoted", 200, map[string]string{"Link": `<https://x/prev>; rel="prev", <https://x/next?cursor=a,b>; rel=next`}, `{"cloudAddresses":["` + addrA + `"]}`, func(t *testing.T, c *vnccloud.Client) {
			page, err := c.ListPage(ctx, "static-address")
			require.NoError(t, err)
			require.Equal(t, "https://x/next?cursor=a,b", page.Next, "the Link is kept verbatim")
		}},
		{"list not an object", 200, nil, `["` + addrA + `"]`, func(t *testing.T, c *vnccloud.Client) {
			_, err := c.ListPage(ctx, "static-address")
			decodeErr(t, err)
		}},
		{"list too large", 200, nil, huge, func(t *testing.T, c *vnccloud.Client) {
			_, err := c.ListPage(ctx, "static-address")
			decodeErr(t, err)
		}},
		// Bodies where none is promised.
		{"PUT 200 with a details body", 200, nil, `{"cloudAddress":"` + addrA + `","allowedActions":["connect"]}`, func(t *testing.T, c *vnccloud.Client) {
			require.NoError(t, c.Update(ctx, addrA, connect("a"), ""))
		}},
		{"PUT 200 without a body", 200, nil, ``, func(t *testing.T, c *vnccloud.Client) {
			require.NoError(t, c.Update(ctx, addrA, connect("a"), `"3"`))
		}},
		{"PUT 204", 204, nil, ``, func(t *testing.T, c *vnccloud.Client) {
			require.NoError(t, c.Update(ctx, addrA, connect("a"), ""))
		}},
		{"DELETE 204", 204, nil, ``, func(t *testing.T, c *vnccloud.Client) {
			require.NoError(t, c.Delete(ctx, addrA, ""))
		}},
		{"DELETE 200 with a body", 200, nil, `{"deleted":true}`, func(t *testing.T, c *vnccloud.Client) {
			require.NoError(t, c.Delete(ctx, addrA, `"2"`))
		}},
		{"create too large", 201, nil, huge, func(t *testing.T, c *vnccloud.Client) {
			_, err := c.Create(ctx, connect("a"))
			unknownDecode(t, err, 201)
		}},
		// Details.
		{"details with a bare-string action and unknown fields", 200, map[string]string{"ETag": `"4"`}, `{"allowedActions":"listen","accessControl":{"groups":["g"]},"unknown":1}`, func(t *testing.T, c *vnccloud.Client) {
			d, err := c.Get(ctx, addrA)
			require.NoError(t, err)
			require.Equal(t, vnccloud.ActionListen, d.Spec.Action)
			require.Equal(t, []string{"g"}, d.Spec.AccessControl.Groups)
			require.Nil(t, d.Spec.AccessControl.CloudAddresses)
			require.Equal(t, addrA, d.CloudAddress)
			require.Equal(t, `"4"`, d.ETag)
		}},
		{"details with empty lists", 200, nil, `{"cloudAddress":"` + addrA + `","allowedActions":["CONNECT"],"groups":[],"accessControl":{"groups":[],"cloudAddresses":[]}}`, func(t *testing.T, c *vnccloud.Client) {
			d, err := c.Get(ctx, addrA)
			require.NoError(t, err)
			require.True(t, d.Spec.Equal(connect()), "%+v", d.Spec)
			require.Nil(t, d.Spec.AccessControl)
			require.Empty(t, d.ETag)
		}},
		{"details without allowedActions", 200, nil, `{"cloudAddress":"` + addrA + `"}`, func(t *testing.T, c *vnccloud.Client) {
			_, err := c.Get(ctx, addrA)
			decodeErr(t, err)
		}},
		{"details of another address", 200, nil, `{"cloudAddress":"` + addrB + `","allowedActions":["connect"]}`, func(t *testing.T, c *vnccloud.Client) {
			_, err := c.Get(ctx, addrA)
			decodeErr(t, err)
		}},
		// Create and reset answers.
		{"201 without a password", 201, nil, `{"cloudAddress":"` + addrA + `"}`, func(t *testing.T, c *vnccloud.Client) {
			_, err := c.Create(ctx, connect("a"))
			unknownDecode(t, err, 201)
		}},
		{"201 without an address", 201, nil, `{"cloudPassword":"pw-xyz"}`, func(t *testing.T, c *vnccloud.Client) {
			_, err := c.Create(ctx, connect("a"))
			unknownDecode(t, err, 201)
			require.NotContains(t, fmt.Sprintf("%v %+v %#v", err, err, err), "pw-xyz")
		}},
		{"201 not JSON", 201, nil, `created`, func(t *testing.T, c *vnccloud.Client) {
			_, err := c.Create(ctx, connect("a"))
			unknownDecode(t, err, 201)
		}},
		{"200 on create with extra fields", 200, nil, `{"cloudAddress":"` + addrA + `","cloudPassword":"pw","allowedActions":["connect"]}`, func(t *testing.T, c *vnccloud.Client) {
			created, err := c.Create(ctx, connect("a"))
			require.NoError(t, err)
			require.Equal(t, vnccloud.Created{CloudAddress: addrA, CloudPassword: "pw"}, created)
		}},
		{"reset answer with the password only", 200, nil, `{"cloudPassword":"new-pw"}`, func(t *testing.T, c *vnccloud.Client) {
			created, err := c.ResetPassword(ctx, addrA, "")
			require.NoError(t, err)
			require.Equal(t, vnccloud.Created{CloudAddress: addrA, CloudPassword: "new-pw"}, created)
		}},
		{"reset answer for another address", 200, nil, `{"cloudAddress":"` + addrB + `","cloudPassword":"pw-other"}`, func(t *testing.T, c *vnccloud.Client) {
			_, err := c.ResetPassword(ctx, addrA, "")
			unknownDecode(t, err, 200)
			require.NotContains(t, fmt.Sprintf("%v %+v %#v", err, err, err), "pw-other")
		}},
		// Readiness.
		{"ready in capitals", 200, nil, `{"changes":"NONE"}`, func(t *testing.T, c *vnccloud.Client) {
			ready, err := c.Ready(ctx, addrA)
			require.NoError(t, err)
			require.True(t, ready)
		}},
		{"ready with an unknown value", 200, nil, `{"changes":"maybe"}`, func(t *testing.T, c *vnccloud.Client) {
			_, err := c.Ready(ctx, addrA)
			decodeErr(t, err)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c, _ := rawClient(t, func(w http.ResponseWriter, r *http.Request) {
				checkRequest(t, r)
				for k, v := range tc.header {
					w.Header().Set(k, v)
				}
				w.WriteHeader(tc.status)
				_, _ = io.WriteString(w, tc.body)
			})
			tc.check(t, c)
		})
	}
}

// checkRequest asserts what every request carries. It runs in the handler, so it
// reports with assert (t.Errorf) rather than require.
func checkRequest(t *testing.T, r *http.Request) []byte {
	assert.Equal(t, "application/json", r.Header.Get("Accept"))
	assert.Equal(t, "vncfleet/"+vnccloud.Version, r.Header.Get("User-Agent"))
	u, p, ok := r.BasicAuth()
	assert.True(t, ok && u == key && p == secret, "Basic auth with the key and secret")
	body, _ := io.ReadAll(r.Body)
	if len(body) > 0 {
		assert.Equal(t, "application/json", r.Header.Get("Content-Type"))
		assert.True(t, json.Valid(body))
	} else {
		assert.Empty(t, r.Header.Get("Content-Type"), "no Content-Type without a body")
	}
	return body
}

// TestRequestShape: the wire form of each operation.
func TestRequestShape(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	type seen struct {
		method, uri, ifMatch string
		body                 map[string]any
	}
	var mu sync.Mutex
	var got []seen
	c, _ := rawClient(t, func(w http.ResponseWriter, r *http.Request) {
		var body map[string]any
		_ = json.Unmarshal(checkRequest(t, r), &body)
		mu.Lock()
		got = append(got, seen{r.Method, r.URL.RequestURI(), r.Header.Get("If-Match"), body})
		mu.Unlock()
		switch {
		case r.Method == "POST" && strings.HasSuffix(r.URL.Path, "/static-address"):
			w.WriteHeader(201)
			_, _ = io.WriteString(w, `{"cloudAddress":"`+addrA+`","cloudPassword":"p"}`)
		case r.Method == "POST":
			_, _ = io.WriteString(w, `{"cloudAddress":"`+addrA+`","cloudPassword":"p"}`)
		case strings.HasSuffix(r.URL.Path, "/ready"):
			_, _ = io.WriteString(w, `{"changes":"none"}`)
		case r.Method == "GET" && strings.HasSuffix(r.URL.Path, "/static-address"):
			w.WriteHeader(204)
		case r.Method == "GET":
			_, _ = io.WriteString(w, `{"allowedActions":["connect"]}`)
		case r.Method == "DELETE":
			w.WriteHeader(204)
		}
	})
	_, err := c.Create(ctx, connect("a", "b"))
	require.NoError(t, err)
	_, err = c.Create(ctx, listen(nil, []string{addrB}))
	require.NoError(t, err)
	_, err = c.Create(ctx, vnccloud.Spec{Action: vnccloud.ActionListen})
	require.NoError(t, err)
	for _, err := range c.List(ctx, vnccloud.ListOptions{Limit: 35}) {
		require.NoError(t, err)
	}
	_, err = c.Ready(ctx, addrA)
	require.NoError(t, err)
	_, err = c.Get(ctx, addrA)
	require.NoError(t, err)
	require.NoError(t, c.Update(ctx, addrA, connect("x"), `"5"`))
	_, err = c.ResetPassword(ctx, addrA, `W/"6"`)
	require.NoError(t, err)
	require.NoError(t, c.Delete(ctx, addrA, ""))

	p := "/cloud/1.1/static-address"
	require.Equal(t, []seen{
		{"POST", p, "", map[string]any{"allowedActions": []any{"connect"}, "groups": []any{"a", "b"}}},
		{"POST", p, "", map[string]any{"allowedActions": []any{"listen"}, "accessControl": map[string]any{"cloudAddresses": []any{addrB}}}},
		{"POST", p, "", map[string]any{"allowedActions": []any{"listen"}}},
		{"GET", p + "?limit=35", "", nil},
		{"GET", p + "/" + addrA + "/ready", "", nil},
		{"GET", p + "/" + addrA, "", nil},
		{"PUT", p + "/" + addrA, `"5"`, map[string]any{"cloudAddress": addrA, "allowedActions": []any{"connect"}, "groups": []any{"x"}}},
		{"POST", p + "/" + addrA, `W/"6"`, nil},
		{"DELETE", p + "/" + addrA, "", nil},
	}, got)
}

// TestListFollowsLinks: relative Links, a Link to another host, a Link that loops.
func TestListFollowsLinks(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	collect := func(c *vnccloud.Client) ([]string, error) {
		var out []string
		for a, err := range c.List(ctx, vnccloud.ListOptions{Limit: 1}) {
			if err != nil {
				return out, err
			}
			out = append(out, a)
		}
		return out, nil
	}
	for _, tc := range []struct {
		name     string
		link     string // Link on the first page
		wantErr  bool
		requests int
	}{
		{"relative to the page: query only", `<?limit=1&cursor=2>; rel="next"`, false, 2},
		{"relative path", `<static-address?limit=1&cursor=2>; rel=next`, false, 2},
		{"absolute path", `</cloud/1.1/static-address?limit=1&cursor=2>; rel="next"`, false, 2},
		{"another host", `<http://evil.example/cloud/1.1/static-address?cursor=2>; rel="next"`, true, 1},
		{"a loop", `</cloud/1.1/static-address?limit=1>; rel="next"`, true, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var n atomic.Int64
			var second atomic.Value
			c, _ := rawClient(t, func(w http.ResponseWriter, r *http.Request) {
				n.Add(1)
				if r.URL.Query().Get("cursor") == "2" {
					second.Store(r.URL.RequestURI())
					_, _ = io.WriteString(w, `{"cloudAddresses":["`+addrB+`"]}`)
					return
				}
				w.Header().Set("Link", tc.link)
				_, _ = io.WriteString(w, `{"cloudAddresses":["`+addrA+`"]}`)
			})
			got, err := collect(c)
			require.Equal(t, tc.wantErr, err != nil, "%v", err)
			require.Equal(t, int64(tc.requests), n.Load())
			if tc.wantErr {
				require.False(t, vnccloud.IsRetryable(err))
				require.Equal(t, []string{addrA}, got)
				return
			}
			require.Equal(t, []string{addrA, addrB}, got)
			require.Equal(t, "/cloud/1.1/static-address?limit=1&cursor=2", second.Load())
		})
	}
}

func TestNextLink(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		header []string
		want   string
	}{
		{[]string{`<https://x/a?limit=5&cursor=Y>; rel="next"`}, "https://x/a?limit=5&cursor=Y"},
		{[]string{`<https://x/p>; rel="prev", <https://x/n>; rel=next`}, "https://x/n"},
		{[]string{`<https://x/p>; rel="prev"`, `<https://x/n>; rel="next"`}, "https://x/n"},
		{[]string{`<https://x/n>; title="a, b; rel=prev"; REL="prev next"`}, "https://x/n"},
		{[]string{`<https://x/a,b>;rel=next`}, "https://x/a,b"},
		{[]string{`<https://x/n>; rel="nextpage"`}, ""},
		{[]string{`<https://x/n>; rel="prev"; rel="next"`}, ""}, // only the first rel counts
		{[]string{`https://x/n; rel="next"`}, ""},
		{nil, ""},
	} {
		require.Equal(t, tc.want, vnccloud.NextLink(tc.header), "%q", tc.header)
	}
}

// TestConnectionReuse: answers of every kind are read to the end, so one connection
// serves a whole sequence of calls.
func TestConnectionReuse(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	var conns atomic.Int64
	var calls atomic.Int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch calls.Add(1) % 4 {
		case 0:
			_, _ = io.WriteString(w, `{"allowedActions":["connect"],"padding":"`+strings.Repeat("x", 8000)+`"}`)
		case 1:
			w.WriteHeader(404)
			_, _ = io.WriteString(w, `{"errorMessage":"`+strings.Repeat("y", 3000)+`"}`)
		case 2:
			w.WriteHeader(503)
		case 3:
			w.WriteHeader(400)
			_, _ = io.WriteString(w, `{"errorCode":1007}`)
		}
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	c, err := vnccloud.New(vnccloud.Config{BaseURL: srv.URL + "/cloud/1.1", APIKey: key, APISecret: secret})
	require.NoError(t, err)
	for i := 0; i < 40; i++ {
		_, _ = c.Get(ctx, addrA)
	}
	require.Equal(t, int64(40), calls.Load())
	require.Equal(t, int64(1), conns.Load(), "one connection for 40 sequential calls")
}

// TestHooks: Before runs before every request and can stop it; After sees every answer.
func TestHooks(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t, sim.Config{})
	type after struct {
		op     string
		status int
		err    bool
	}
	var mu sync.Mutex
	var befores []string
	var afters []after
	stop := errors.New("limiter closed")
	var refuse atomic.Bool
	c, err := vnccloud.New(vnccloud.Config{
		BaseURL: f.base, APIKey: key, APISecret: secret,
		Before: func(ctx context.Context, op string) error {
			require.NotNil(t, ctx)
			mu.Lock()
			defer mu.Unlock()
			befores = append(befores, op)
			if refuse.Load() {
				return stop
			}
			return nil
		},
		After: func(op string, status int, err error) {
			mu.Lock()
			defer mu.Unlock()
			afters = append(afters, after{op, status, err != nil})
		},
	})
	require.NoError(t, err)
	created, err := c.Create(ctx, connect("a"))
	require.NoError(t, err)
	_, err = c.Get(ctx, missing)
	require.Error(t, err)
	for range c.List(ctx, vnccloud.ListOptions{}) {
	}
	_, err = c.Create(ctx, vnccloud.Spec{Action: "serve"}) // refused before any hook
	require.Error(t, err)
	refuse.Store(true)
	err = c.Delete(ctx, created.CloudAddress, "")
	require.ErrorIs(t, err, stop)
	require.Contains(t, err.Error(), "not sent")
	require.Len(t, f.sim.State().Accounts[key].Addresses, 1, "the refused delete was not sent")

	require.Equal(t, []string{"create", "get", "list", "delete"}, befores)
	require.Equal(t, []after{{"create", 201, false}, {"get", 404, true}, {"list", 200, false}}, afters)

	// After sees a transport failure as status 0.
	var last after
	dead, srv := rawClient(t, nil, func(cfg *vnccloud.Config) {
		cfg.After = func(op string, status int, err error) { last = after{op, status, err != nil} }
	})
	srv.Close()
	_, err = dead.Ready(ctx, addrA)
	require.Error(t, err)
	require.Equal(t, after{"ready", 0, true}, last)
}

// TestNoSecretsInOutput: neither the API secret nor a cloud password appears in any
// error, fmt verb or log line the package produces.
func TestNoSecretsInOutput(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t, sim.Config{})
	created, err := f.client.Create(ctx, connect("a"))
	require.NoError(t, err)
	password := created.CloudPassword
	require.NotEmpty(t, password)

	var errs []error
	collect := func(err error) {
		require.Error(t, err)
		errs = append(errs, err)
	}
	_, err = f.clientAs(t, key, secret+"-wrong").Create(ctx, connect("a"))
	collect(err)
	_, err = f.clientAs(t, "bad key", secret).Get(ctx, created.CloudAddress)
	collect(err)
	_, err = f.client.ResetPassword(ctx, created.CloudAddress, `"9"`)
	collect(err)
	_, err = f.client.Create(ctx, connect(strings.Repeat("x", 300)))
	collect(err)
	// A server answering with someone else's password, or no address.
	leaky, _ := rawClient(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Method == "GET" {
			_, _ = io.WriteString(w, `{"changes":"pending","cloudPassword":"`+password+`"}x`)
			return
		}
		_, _ = io.WriteString(w, `{"cloudAddress":"`+addrB+`","cloudPassword":"`+password+`"}`)
	})
	_, err = leaky.ResetPassword(ctx, addrA, "")
	collect(err)
	_, err = leaky.Ready(ctx, addrA)
	collect(err)
	// Transport failures and timeouts.
	slow := newFixture(t, sim.Config{Latency: 200 * time.Millisecond})
	tight, err := vnccloud.New(vnccloud.Config{BaseURL: slow.base, APIKey: key, APISecret: secret, Timeout: 10 * time.Millisecond})
	require.NoError(t, err)
	_, err = tight.Create(ctx, connect("a"))
	collect(err)
	f.srv.Close()
	_, err = f.client.Get(ctx, created.CloudAddress)
	collect(err)
	_, err = vnccloud.New(vnccloud.Config{BaseURL: "http://" + key + ":" + secret + "@host/cloud/1.1"})
	collect(err)
	_, err = vnccloud.New(vnccloud.Config{BaseURL: "ftp://" + secret + "/cloud/1.1"})
	collect(err)

	cfg := vnccloud.Config{BaseURL: f.base, APIKey: key, APISecret: secret}
	values := []any{created, &created, []vnccloud.Created{created}, struct{ C vnccloud.Created }{created}, cfg, &cfg, f.client}
	for _, e := range errs {
		values = append(values, e)
	}
	var logs bytes.Buffer
	for _, h := range []slog.Handler{slog.NewJSONHandler(&logs, nil), slog.NewTextHandler(&logs, nil)} {
		slog.New(h).Info("values", "created", created, "config", cfg, "client", f.client, "err", errs[0])
	}
	require.Contains(t, logs.String(), created.CloudAddress)
	outputs := []string{logs.String()}
	for _, v := range values {
		for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x"} {
			outputs = append(outputs, fmt.Sprintf(verb, v))
		}
	}
	for _, out := range outputs {
		require.NotContains(t, out, secret)
		require.NotContains(t, out, password)
	}
	require.Equal(t, "{CloudAddress:"+created.CloudAddress+" CloudPassword:<redacted>}", fmt.Sprint(created))
	require.Equal(t, "vnccloud.Created{CloudAddress:"+created.CloudAddress+" CloudPassword:<redacted>}", fmt.Sprintf("%#v", created))
}

func TestNewValidatesTheBaseURL(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		url string
		ok  bool
	}{
		{"", true},
		{"https://api.vnc.com/cloud/1.1", true},
		{"https://api.vnc.com/cloud/1.1/", true},
		{"http://127.0.0.1:8080/cloud/1.1//", true},
		{"ftp://api.vnc.com/cloud/1.1", false},
		{"api.vnc.com/cloud/1.1", false},
		{"/cloud/1.1", false},
		{"http://", false},
		{"https://api.vnc.com/cloud/1.1?x=1", false},
		{"https://api.vnc.com/cloud/1.1#frag", false},
		{"https://k:s@api.vnc.com/cloud/1.1", false},
		{"http://[::1", false},
	} {
		_, err := vnccloud.New(vnccloud.Config{BaseURL: tc.url})
		require.Equal(t, tc.ok, err == nil, "%q: %v", tc.url, err)
	}
}

// TestUnknownOutcomesAgainstTheSimulator: with half of the creates dropped and half of
// the resets cut off, every call either returns what the simulator holds or an
// unknown outcome, one for each fault the simulator injected; repeating a reset until
// it is answered leaves the client with the simulator's password.
func TestUnknownOutcomesAgainstTheSimulator(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t, sim.Config{DropRate: 0.5, GarbleRate: 0.5, Seed: 5})
	const n = 40
	known := map[string]string{} // address → password, from answers
	var unknownCreates, unknownResets int
	for range n {
		created, err := f.client.Create(ctx, connect("g"))
		if err != nil {
			require.ErrorIs(t, err, vnccloud.ErrUnknownOutcome)
			require.True(t, vnccloud.IsRetryable(err))
			unknownCreates++
			continue
		}
		known[created.CloudAddress] = created.CloudPassword
	}
	for addr := range known {
		for {
			reset, err := f.client.ResetPassword(ctx, addr, "")
			if err == nil {
				known[addr] = reset.CloudPassword
				break
			}
			require.ErrorIs(t, err, vnccloud.ErrUnknownOutcome)
			require.True(t, vnccloud.IsRetryable(err))
			unknownResets++
		}
	}
	st := f.sim.State()
	require.EqualValues(t, unknownCreates, st.Injected.Dropped)
	require.EqualValues(t, unknownResets, st.Injected.Garbled)
	require.Positive(t, unknownCreates, "seed 5 drops some creates")
	require.Positive(t, unknownResets, "seed 5 cuts some resets off")
	require.Len(t, st.Accounts[key].Addresses, n, "every create was committed, answered or not")
	for _, a := range st.Accounts[key].Addresses {
		if pw, ok := known[a.CloudAddress]; ok {
			require.Equal(t, a.Password, pw, "the last answered reset holds the cloud's password")
		}
	}
}

// TestSuccessStatusDecidesWhenNoBodyIsRead: an update or delete answered 2xx is done,
// even when the connection breaks in the middle of a body nobody reads.
func TestSuccessStatusDecidesWhenNoBodyIsRead(t *testing.T) {
	t.Parallel()
	c := cutShort(t, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n{\"dele")
	require.NoError(t, c.Delete(context.Background(), addrA, ""))
	require.NoError(t, c.Update(context.Background(), addrA, connect("a"), ""))
}
