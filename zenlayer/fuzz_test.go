package zenlayer_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/vncfleet/vncfleet/zenlayer"
)

// FuzzDecodeResponse feeds DecodeResponse arbitrary statuses and bodies and
// checks the promises callers rely on:
//   - exactly one of (URL, error); a success always has a non-empty URL;
//   - every error is an *APIError carrying the status it was given;
//   - only 2xx answers can succeed, and a success never carries an error code;
//   - a success URL is one the body actually holds, as a JSON string;
//   - the same input gives the same result; Error() is one bounded line.
func FuzzDecodeResponse(f *testing.F) {
	for _, seed := range []struct {
		status int
		body   string
	}{
		{200, `{"requestId":"r","response":{"requestId":"r","url":"https://vnc/1"}}`},
		{200, `{"requestId":"r","url":"https://vnc/1"}`},
		{200, `{"url":"a","response":{"url":"b"}}`},
		{200, `{"response":{"code":"REQUEST_LIMIT_EXCEEDED"}}`},
		{200, `{"response":null,"url":"u"}`},
		{200, `{"requestId":1,"url":"u"}`},
		{200, `[]`},
		{200, ``},
		{204, `{"url":"u"}`},
		{404, `{"requestId":"r","code":"INVALID_INSTANCE_NOT_FOUND","message":"m"}`},
		{400, `{"requestId":"r","code":"OPERATION_DENIED_INSTANCE_STATUS_NOT_SUPPORT"}`},
		{429, `{"code":"REQUEST_LIMIT_EXCEEDED","url":"u"}`},
		{503, `<html>`},
		{0, `{}`},
		{-1, `{"url":"\u0000\n"}`},
		// Found in review, not by the fuzzer: a code is server text too, and
		// was once printed bare, so these made Error() span lines or grow.
		{400, `{"code":"A\nlevel=ERROR msg=forged"}`},
		{400, `{"code":"` + strings.Repeat("X", 5000) + `"}`},
	} {
		f.Add(seed.status, []byte(seed.body))
	}
	f.Fuzz(func(t *testing.T, status int, body []byte) {
		u, err := zenlayer.DecodeResponse(status, body)
		u2, err2 := zenlayer.DecodeResponse(status, body)
		if u != u2 || (err == nil) != (err2 == nil) || (err != nil && err.Error() != err2.Error()) {
			t.Fatalf("not deterministic: %q/%v then %q/%v", u, err, u2, err2)
		}
		if err == nil {
			if u == "" {
				t.Fatal("success without a URL")
			}
			if status < 200 || status > 299 {
				t.Fatalf("success on HTTP %d", status)
			}
			var generic struct {
				URL      any `json:"url"`
				Response struct {
					URL any `json:"url"`
				} `json:"response"`
			}
			if jerr := json.Unmarshal(body, &generic); jerr != nil && !json.Valid(body) {
				t.Fatalf("success %q from a body that is not JSON: %q", u, body)
			}
			if u != generic.URL && u != generic.Response.URL {
				t.Fatalf("success %q is not a url string of the body %q", u, body)
			}
			return
		}
		if u != "" {
			t.Fatalf("both a URL %q and an error %v", u, err)
		}
		var apiErr *zenlayer.APIError
		if !errors.As(err, &apiErr) {
			t.Fatalf("error of type %T, want *APIError", err)
		}
		if apiErr.StatusCode != status {
			t.Fatalf("error status %d, answer status %d", apiErr.StatusCode, status)
		}
		msg := err.Error()
		if strings.ContainsAny(msg, "\n\r") {
			t.Fatalf("Error() spans lines: %q", msg)
		}
		if len(msg) > 2000 {
			t.Fatalf("Error() is %d bytes", len(msg))
		}
		if zenlayer.IsRetryable(err) && (zenlayer.IsInstanceNotReady(err) || errors.Is(err, zenlayer.ErrInstanceNotFound)) {
			t.Fatalf("permanent code classified retryable: %v", err)
		}
	})
}
