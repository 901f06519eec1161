package vnccloud

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode"
)

// The decoders are tolerant readers. They accept what the prose reference promises and
// the variants other renderings of the API show (errorCode as a string, a list page of
// objects, allowedActions as a bare string, a PUT answered with a body), ignore unknown
// fields, and fail with a *DecodeError only where a body the caller needs cannot be
// understood. None of them ever puts a body's password into an error.

// DecodeError is a success answer whose body could not be understood. Repeating the
// call would get the same answer, so it is not retryable. Err never quotes the body.
type DecodeError struct {
	Op  string
	Err error
}

func (e *DecodeError) Error() string {
	return fmt.Sprintf("vnccloud %s: unreadable answer: %v", e.Op, e.Err)
}

func (e *DecodeError) Unwrap() error { return e.Err }

func decodeErr(op, format string, args ...any) *DecodeError {
	return &DecodeError{Op: op, Err: fmt.Errorf(format, args...)}
}

// flexCode is an errorCode given as a number or as a numeric string. Anything else
// (a word, an object, a fraction) leaves the code 0: the message still counts.
type flexCode int

func (c *flexCode) UnmarshalJSON(b []byte) error {
	var n json.Number
	if json.Unmarshal(b, &n) == nil {
		if v, err := strconv.ParseInt(string(n), 10, 32); err == nil && v > 0 {
			*c = flexCode(v)
		}
		return nil
	}
	var s string
	if json.Unmarshal(b, &s) == nil {
		if v, err := strconv.ParseInt(strings.TrimSpace(s), 10, 32); err == nil && v > 0 {
			*c = flexCode(v)
		}
	}
	return nil
}

// flexText is a message given as a string, or as an object carrying one in
// "message"/"errorMessage" (some gateways nest {"error": {"message": ...}}).
type flexText string

func (t *flexText) UnmarshalJSON(b []byte) error {
	var s string
	if json.Unmarshal(b, &s) == nil {
		*t = flexText(s)
		return nil
	}
	var nested struct {
		Message      string `json:"message"`
		ErrorMessage string `json:"errorMessage"`
	}
	if json.Unmarshal(b, &nested) == nil {
		*t = flexText(cmp(nested.ErrorMessage, nested.Message))
	}
	return nil // a number, a list: no message, not a failure
}

// flexStrings is a list of strings that some renderings send as a bare string
// (allowedActions in the third-party OpenAPI). null and absent are both nil.
type flexStrings []string

func (a *flexStrings) UnmarshalJSON(b []byte) error {
	if bytes.Equal(bytes.TrimSpace(b), []byte("null")) {
		*a = nil
		return nil
	}
	var list []string
	if err := json.Unmarshal(b, &list); err == nil {
		*a = list
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return errors.New("neither a list of strings nor a string")
	}
	*a = []string{s}
	return nil
}

// flexAddress is one entry of a list page: "<address>" in the prose reference,
// {"cloudAddress": "<address>", ...} in the third-party rendering.
type flexAddress string

func (a *flexAddress) UnmarshalJSON(b []byte) error {
	var s string
	if json.Unmarshal(b, &s) == nil {
		*a = flexAddress(s)
		return nil
	}
	var obj struct {
		CloudAddress string `json:"cloudAddress"`
	}
	if err := json.Unmarshal(b, &obj); err != nil {
		return errors.New("a list entry is neither a string nor an object")
	}
	*a = flexAddress(obj.CloudAddress)
	return nil
}

// decodeError builds the *APIError of a non-2xx answer. It never fails: a body that is
// absent, HTML or otherwise unreadable leaves Code 0 and the status text as Message.
func decodeError(op string, status int, header http.Header, body []byte) *APIError {
	e := &APIError{Op: op, StatusCode: status, RetryAfter: parseRetryAfter(header.Get("Retry-After"), time.Now())}
	// Each field decodes on its own (json.RawMessage first), so one odd field does not
	// throw away the others.
	var wire struct {
		ErrorCode    json.RawMessage `json:"errorCode"`
		ErrorMessage json.RawMessage `json:"errorMessage"`
		Message      json.RawMessage `json:"message"`
		Error        json.RawMessage `json:"error"`
	}
	if len(bytes.TrimSpace(body)) > 0 && json.Unmarshal(body, &wire) == nil {
		var code flexCode
		if wire.ErrorCode != nil {
			_ = code.UnmarshalJSON(wire.ErrorCode)
		}
		e.Code = ErrorCode(code)
		for _, raw := range []json.RawMessage{wire.ErrorMessage, wire.Message, wire.Error} {
			var m flexText
			if raw != nil {
				_ = m.UnmarshalJSON(raw)
			}
			if msg := cleanMessage(string(m)); msg != "" {
				e.Message = msg
				break
			}
		}
	}
	if e.Message == "" {
		e.Message = http.StatusText(status)
	}
	return e
}

// cleanMessage keeps a server's message printable on one line, so it cannot forge log
// lines, and bounded, so a broken server cannot flood the logs.
func cleanMessage(s string) string {
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, s)
	return truncate(strings.Join(strings.Fields(s), " "), 500)
}

// maxRetryAfter caps what a server may ask for: a larger value is a broken or hostile
// answer, and taken literally it could overflow or stall the whole fleet for days.
const maxRetryAfter = time.Hour

// parseRetryAfter reads delay-seconds or an HTTP-date (RFC 9110 §10.2.3); 0 when absent,
// unreadable or in the past, at most maxRetryAfter.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if n, err := strconv.ParseUint(v, 10, 64); err == nil {
		if n > uint64(maxRetryAfter/time.Second) {
			return maxRetryAfter
		}
		return time.Duration(n) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return min(t.Sub(now), maxRetryAfter)
	}
	return 0
}

// decodeCreated reads the answer of a create (201) or a password reset (200). Both
// fields are required: an address without its password is useless, and the password
// cannot be read back later. want, when set, is the address the reset was for.
func decodeCreated(op string, body []byte, want string) (Created, error) {
	var wire struct {
		CloudAddress  string `json:"cloudAddress"`
		CloudPassword string `json:"cloudPassword"`
	}
	if err := json.Unmarshal(body, &wire); err != nil {
		return Created{}, decodeErr(op, "the body is not a JSON object with cloudAddress and cloudPassword")
	}
	switch {
	case wire.CloudPassword == "":
		return Created{}, decodeErr(op, "cloudPassword is missing")
	case wire.CloudAddress == "" && want == "":
		return Created{}, decodeErr(op, "cloudAddress is missing")
	case wire.CloudAddress == "":
		wire.CloudAddress = want // a reset answer may name only the password
	case want != "" && wire.CloudAddress != want:
		// Storing this password against the asked-for address would lock its device out.
		return Created{}, decodeErr(op, "the answer is for cloud address %q, not %q", truncate(wire.CloudAddress, 100), want)
	}
	return Created{CloudAddress: wire.CloudAddress, CloudPassword: wire.CloudPassword}, nil
}

// decodeListPage accepts {"cloudAddresses": ["..."]} (prose reference) and
// {"items": [{"cloudAddress": "..."}]} (third-party rendering), or both at once; an
// empty body or null is an empty page. Empty entries are dropped.
func decodeListPage(body []byte) ([]string, error) {
	body = bytes.TrimSpace(body)
	if len(body) == 0 || bytes.Equal(body, []byte("null")) {
		return nil, nil
	}
	var wire struct {
		CloudAddresses []flexAddress `json:"cloudAddresses"`
		Items          []flexAddress `json:"items"`
	}
	if err := json.Unmarshal(body, &wire); err != nil {
		return nil, decodeErr("list", "the body is not a list page")
	}
	var out []string
	for _, a := range append(wire.CloudAddresses, wire.Items...) {
		if a != "" {
			out = append(out, string(a))
		}
	}
	return out, nil
}

// decodeReady reads {"changes": "none"|"pending"}; anything else is a *DecodeError,
// because guessing "ready" would hand out a password that does not work yet.
func decodeReady(body []byte) (bool, error) {
	var wire struct {
		Changes string `json:"changes"`
	}
	if err := json.Unmarshal(body, &wire); err != nil {
		return false, decodeErr("ready", "the body is not a JSON object with changes")
	}
	switch strings.ToLower(strings.TrimSpace(wire.Changes)) {
	case "none":
		return true, nil
	case "pending":
		return false, nil
	}
	return false, decodeErr("ready", "changes is %q, neither none nor pending", truncate(wire.Changes, 40))
}

// decodeDetails reads a GET answer. allowedActions may be a list or a bare string but
// must name exactly one action; empty lists read as omitted ones, and an access
// control list naming nothing reads as none, so Spec.Equal compares like with like.
// want, when set, must match the cloudAddress in the body (when the body names one).
func decodeDetails(body []byte, want string) (Details, error) {
	var wire struct {
		CloudAddress   string      `json:"cloudAddress"`
		AllowedActions flexStrings `json:"allowedActions"`
		Groups         flexStrings `json:"groups"`
		AccessControl  *struct {
			Groups         flexStrings `json:"groups"`
			CloudAddresses flexStrings `json:"cloudAddresses"`
		} `json:"accessControl"`
	}
	if err := json.Unmarshal(body, &wire); err != nil {
		return Details{}, decodeErr("get", "the body is not a cloud address object")
	}
	if len(wire.AllowedActions) != 1 {
		return Details{}, decodeErr("get", "allowedActions has %d entries, want 1", len(wire.AllowedActions))
	}
	if want != "" && wire.CloudAddress != "" && wire.CloudAddress != want {
		return Details{}, decodeErr("get", "the answer is for cloud address %q, not %q", truncate(wire.CloudAddress, 100), want)
	}
	action := Action(strings.ToLower(strings.TrimSpace(wire.AllowedActions[0])))
	spec := Spec{Action: action, Groups: nilIfEmpty(wire.Groups)}
	if acl := wire.AccessControl; acl != nil && (len(acl.Groups) > 0 || len(acl.CloudAddresses) > 0) {
		spec.AccessControl = &AccessControl{Groups: nilIfEmpty(acl.Groups), CloudAddresses: nilIfEmpty(acl.CloudAddresses)}
	}
	addr := wire.CloudAddress
	if addr == "" {
		addr = want
	}
	return Details{CloudAddress: addr, Spec: spec}, nil
}

func nilIfEmpty(s []string) []string {
	if len(s) == 0 {
		return nil
	}
	return s
}

func cmp(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// nextLink finds the target of rel="next" among Link header values (RFC 8288 §3, as
// much as a pagination link needs): several links per value or several values, rel
// quoted or bare, several space-separated relation types, parameters in any order. The
// target is returned exactly as written between < and >.
func nextLink(values []string) string {
	for _, v := range values {
		for _, link := range splitLinks(v) {
			link = strings.TrimSpace(link)
			if !strings.HasPrefix(link, "<") {
				continue
			}
			end := strings.IndexByte(link, '>')
			if end < 0 {
				continue
			}
			target := strings.TrimSpace(link[1:end])
			for _, param := range splitParams(link[end+1:]) {
				name, value, ok := strings.Cut(param, "=")
				if !ok || !strings.EqualFold(strings.TrimSpace(name), "rel") {
					continue
				}
				value = strings.TrimSpace(value)
				if len(value) >= 2 && value[0] == '"' && value[len(value)-1] == '"' {
					value = value[1 : len(value)-1]
				}
				for _, rel := range strings.Fields(value) {
					if strings.EqualFold(rel, "next") && target != "" {
						return target
					}
				}
				break // RFC 8288: only the first rel parameter counts
			}
		}
	}
	return ""
}

// splitLinks splits a Link header value on the commas between links: not those inside
// <...> nor inside a quoted parameter value.
func splitLinks(v string) []string {
	var out []string
	inURI, inQuote, start := false, false, 0
	for i := 0; i < len(v); i++ {
		switch c := v[i]; {
		case inQuote:
			if c == '\\' {
				i++
			} else if c == '"' {
				inQuote = false
			}
		case inURI:
			inURI = c != '>'
		case c == '<':
			inURI = true
		case c == '"':
			inQuote = true
		case c == ',':
			out = append(out, v[start:i])
			start = i + 1
		}
	}
	return append(out, v[start:])
}

// splitParams splits the parameters after a link's target on semicolons outside quotes.
func splitParams(v string) []string {
	var out []string
	inQuote, start := false, 0
	for i := 0; i < len(v); i++ {
		switch c := v[i]; {
		case inQuote:
			if c == '\\' {
				i++
			} else if c == '"' {
				inQuote = false
			}
		case c == '"':
			inQuote = true
		case c == ';':
			out = append(out, v[start:i])
			start = i + 1
		}
	}
	return append(out, v[start:])
}

// DecodeErrorBody turns a non-2xx answer into an *APIError with the client's tolerant
// rules, for callers that make requests the Client will not build themselves.
func DecodeErrorBody(op string, status int, header http.Header, body []byte) *APIError {
	return decodeError(op, status, header, body)
}
