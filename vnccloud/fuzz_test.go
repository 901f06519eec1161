package vnccloud

import (
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzDecodeError: any non-2xx answer decodes to an *APIError with its status, a
// non-empty printable one-line message and a sane Retry-After; never a panic.
func FuzzDecodeError(f *testing.F) {
	f.Add(400, `{"errorCode":1004,"errorMessage":"x"}`, "")
	f.Add(400, `{"errorCode":"1004"}`, "3")
	f.Add(400, `{"errorCode":"ten","message":"m"}`, "")
	f.Add(502, `{"error":{"message":"upstream"}}`, "")
	f.Add(503, `<html>`, "Wed, 21 Oct 2015 07:28:00 GMT")
	f.Add(404, ``, "-1")
	f.Add(599, `{"errorCode":1e3,"errorMessage":"a\nb"}`, "99999999999999999999")
	f.Fuzz(func(t *testing.T, status int, body, retryAfter string) {
		if status >= 200 && status <= 299 {
			return // not an error answer
		}
		h := http.Header{}
		h.Set("Retry-After", retryAfter)
		var err error = decodeError("op", status, h, []byte(body))
		var e *APIError
		if err == nil || !errors.As(err, &e) {
			t.Fatalf("no *APIError for HTTP %d", status)
		}
		if e.StatusCode != status {
			t.Fatalf("status %d became %d", status, e.StatusCode)
		}
		if e.RetryAfter < 0 || e.RetryAfter > maxRetryAfter {
			t.Fatalf("Retry-After %v out of range", e.RetryAfter)
		}
		if e.Code < 0 {
			t.Fatalf("negative code %d", e.Code)
		}
		msg := e.Error()
		if strings.ContainsAny(msg, "\r\n") || !utf8.ValidString(msg) {
			t.Fatalf("error string is not one printable line: %q", msg)
		}
		if IsRetryable(err) != (status == 503 || status == 429 || status == 502 || status == 504) {
			t.Fatalf("HTTP %d: IsRetryable = %v", status, IsRetryable(err))
		}
	})
}

// FuzzDecodeListPage: a page decodes to non-empty addresses or fails with a
// *DecodeError; the prose shape and the items shape agree.
func FuzzDecodeListPage(f *testing.F) {
	f.Add(`{"cloudAddresses":["a","b"]}`)
	f.Add(`{"items":[{"cloudAddress":"a"},{"cloudAddress":""}]}`)
	f.Add(`{"cloudAddresses":null,"items":["x"]}`)
	f.Add(`null`)
	f.Add(``)
	f.Add(`[1,2]`)
	f.Fuzz(func(t *testing.T, body string) {
		addrs, err := decodeListPage([]byte(body))
		if err != nil {
			var de *DecodeError
			if !errors.As(err, &de) || IsRetryable(err) {
				t.Fatalf("error of type %T, retryable %v", err, IsRetryable(err))
			}
			return
		}
		for _, a := range addrs {
			if a == "" {
				t.Fatal("an empty address was kept")
			}
		}
		if len(addrs) == 0 {
			return
		}
		// The same addresses in the other shape decode to the same list.
		items := make([]map[string]string, len(addrs))
		for i, a := range addrs {
			items[i] = map[string]string{"cloudAddress": a}
		}
		other, _ := json.Marshal(map[string]any{"items": items})
		again, err := decodeListPage(other)
		if err != nil || strings.Join(again, "\x00") != strings.Join(addrs, "\x00") {
			t.Fatalf("items shape disagrees: %q vs %q (%v)", again, addrs, err)
		}
	})
}

// FuzzDecodeDetails: decoded details carry exactly one action, no empty lists, an access
// control list only when it names something, and the asked-for address.
func FuzzDecodeDetails(f *testing.F) {
	const a = "AAAAAAAAAAAAAAAAAAA.AAAAAAAAAAAAAAAAAAA.AAAAAAAAAAAAAAAAAAA.AAAAAAAAAAAAAAAAAAA"
	f.Add(`{"cloudAddress":"` + a + `","allowedActions":["connect"],"groups":["a"]}`)
	f.Add(`{"allowedActions":"listen","accessControl":{}}`)
	f.Add(`{"allowedActions":["listen"],"accessControl":{"groups":"g","cloudAddresses":[]}}`)
	f.Add(`{"allowedActions":[]}`)
	f.Add(`{"cloudAddress":"other","allowedActions":["connect"]}`)
	f.Fuzz(func(t *testing.T, body string) {
		d, err := decodeDetails([]byte(body), a)
		if err != nil {
			var de *DecodeError
			if !errors.As(err, &de) || IsRetryable(err) {
				t.Fatalf("error of type %T", err)
			}
			return
		}
		if d.CloudAddress != a {
			t.Fatalf("details of %q accepted for %q", d.CloudAddress, a)
		}
		if d.Spec.Groups != nil && len(d.Spec.Groups) == 0 {
			t.Fatal("empty non-nil groups kept")
		}
		if acl := d.Spec.AccessControl; acl != nil {
			if len(acl.Groups) == 0 && len(acl.CloudAddresses) == 0 {
				t.Fatalf("empty access control list kept: %+v", acl)
			}
			if (acl.Groups != nil && len(acl.Groups) == 0) || (acl.CloudAddresses != nil && len(acl.CloudAddresses) == 0) {
				t.Fatalf("empty non-nil ACL list kept: %+v", acl)
			}
		}
		_ = d.Spec.Validate() // whatever the server said must not make validation panic
	})
}

// FuzzValidateRaw: whatever JSON arrives, an accepted body obeys every rule of the
// reference, a rejected one names a documented code, and Spec.Validate agrees.
func FuzzValidateRaw(f *testing.F) {
	const a = "AAAAAAAAAAAAAAAAAAA.AAAAAAAAAAAAAAAAAAA.AAAAAAAAAAAAAAAAAAA.AAAAAAAAAAAAAAAAAAA"
	f.Add(`{"allowedActions":["connect"],"groups":["a","b"]}`)
	f.Add(`{"allowedActions":["listen"],"accessControl":{"groups":["a"],"cloudAddresses":["` + a + `"]}}`)
	f.Add(`{"allowedActions":["listen"],"accessControl":{}}`)
	f.Add(`{"allowedActions":["listen"]}`)
	f.Add(`{"allowedActions":["connect"],"groups":["` + strings.Repeat("é", 256) + `"]}`)
	f.Add(`{"allowedActions":["connect"],"groups":["` + strings.Repeat("é", 257) + `"]}`)
	f.Add(`{"allowedActions":["connect"],"groups":["\ud800"]}`)
	f.Add(`{"allowedActions":[],"groups":[]}`)
	f.Add(`{"allowedActions":["serve"]}`)
	f.Fuzz(func(t *testing.T, body string) {
		var raw RawSpec
		if json.Unmarshal([]byte(body), &raw) != nil {
			return
		}
		err := ValidateRaw(raw)
		if err != nil {
			var ve *ValidationError
			if !errors.As(err, &ve) || ve.Code < CodeInvalidAction || ve.Code > CodeWrongListForAction {
				t.Fatalf("rejection %v is not a documented code", err)
			}
			if strings.ContainsAny(ve.Error(), "\n") && !strings.ContainsAny(body, "\n") {
				t.Fatalf("message grew a newline: %q", ve.Error())
			}
			return
		}
		if len(raw.AllowedActions) != 1 {
			t.Fatalf("accepted %d actions", len(raw.AllowedActions))
		}
		groupsOK := func(gs []string, max int) {
			if gs == nil {
				return
			}
			if len(gs) == 0 || len(gs) > max {
				t.Fatalf("accepted %d groups (max %d)", len(gs), max)
			}
			for _, g := range gs {
				if n := utf8.RuneCountInString(g); n < 1 || n > MaxGroupNameChars || !utf8.ValidString(g) {
					t.Fatalf("accepted a group name of %d characters", n)
				}
			}
		}
		spec := Spec{Action: Action(raw.AllowedActions[0]), Groups: raw.Groups, AccessControl: raw.AccessControl}
		switch spec.Action {
		case ActionConnect:
			if raw.AccessControl != nil {
				t.Fatal("accepted an access control list on a connect address")
			}
			groupsOK(raw.Groups, MaxConnectGroups)
		case ActionListen:
			if raw.Groups != nil {
				t.Fatal("accepted groups on a listen address")
			}
			if acl := raw.AccessControl; acl != nil {
				if acl.Groups == nil && acl.CloudAddresses == nil {
					t.Fatal("accepted an empty access control list")
				}
				groupsOK(acl.Groups, MaxACLGroups)
				if acl.CloudAddresses != nil && (len(acl.CloudAddresses) == 0 || len(acl.CloudAddresses) > MaxACLCloudAddresses) {
					t.Fatalf("accepted %d cloud addresses", len(acl.CloudAddresses))
				}
				for _, ca := range acl.CloudAddresses {
					if !IsWellFormedAddress(ca) {
						t.Fatalf("accepted cloud address %q", ca)
					}
				}
			}
		default:
			t.Fatalf("accepted action %q", spec.Action)
		}
		if err := spec.Validate(); err != nil {
			t.Fatalf("ValidateRaw accepts what Spec.Validate rejects: %v", err)
		}
		// What the client sends for the spec is the body the server accepted.
		var again RawSpec
		if err := json.Unmarshal(wireBody(spec, ""), &again); err != nil || ValidateRaw(again) != nil {
			t.Fatalf("the client's encoding of an accepted spec is rejected: %v / %v", err, ValidateRaw(again))
		}
	})
}

// FuzzNextLink: Link parsing never panics and returns either nothing or text that was
// in the header.
func FuzzNextLink(f *testing.F) {
	f.Add(`<https://x/a>; rel="next"`)
	f.Add(`<a,b>; rel=next, <c>; rel="prev next"`)
	f.Add(`<x>; title="a,b;rel=next"; rel=prev, <y>; rel=next`)
	f.Add(`<<>>;;rel=`)
	f.Fuzz(func(t *testing.T, header string) {
		got := nextLink([]string{header})
		if got != "" && !strings.Contains(header, got) {
			t.Fatalf("%q is not a link target of %q", got, header)
		}
	})
}

// FuzzDecodeCreated: a decoded create or reset answer holds an address and a password,
// the asked-for address when there is one; a failure is a *DecodeError that never
// quotes the body's password.
func FuzzDecodeCreated(f *testing.F) {
	const a = "AAAAAAAAAAAAAAAAAAA.AAAAAAAAAAAAAAAAAAA.AAAAAAAAAAAAAAAAAAA.AAAAAAAAAAAAAAAAAAA"
	f.Add(`{"cloudAddress":"`+a+`","cloudPassword":"pw-secret"}`, true)
	f.Add(`{"cloudPassword":"pw-secret"}`, true)
	f.Add(`{"cloudAddress":"other","cloudPassword":"pw-secret"}`, true)
	f.Add(`{"cloudAddress":"`+a+`","cloudPass`, false)
	f.Add(`{"cloudAddress":"`+a+`"}`, false)
	f.Fuzz(func(t *testing.T, body string, reset bool) {
		want := ""
		if reset {
			want = a
		}
		c, err := decodeCreated("reset", []byte(body), want)
		if err != nil {
			var de *DecodeError
			if !errors.As(err, &de) {
				t.Fatalf("error of type %T", err)
			}
			var wire struct {
				CloudAddress  string `json:"cloudAddress"`
				CloudPassword string `json:"cloudPassword"`
			}
			// The error may name the answer's address; a password that is part of it
			// proves nothing.
			if json.Unmarshal([]byte(body), &wire) == nil && len(wire.CloudPassword) >= 4 &&
				!strings.Contains(wire.CloudAddress, wire.CloudPassword) && strings.Contains(err.Error(), wire.CloudPassword) {
				t.Fatalf("the error quotes the password: %v", err)
			}
			return
		}
		if c.CloudAddress == "" || c.CloudPassword == "" || (want != "" && c.CloudAddress != want) {
			t.Fatalf("accepted %+v for %q", c, want)
		}
	})
}
