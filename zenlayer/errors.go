package zenlayer

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
)

// Error codes of DescribeVncUrl, from Zenlayer's action page and common rules.
const (
	// CodeInstanceNotFound (404): the instance does not exist. Permanent.
	CodeInstanceNotFound = "INVALID_INSTANCE_NOT_FOUND"
	// CodeInstanceStatusNotSupported (400): the instance's state (starting,
	// stopped, ...) does not allow a console now. Worth retrying later, a bounded
	// number of times; see IsInstanceNotReady.
	CodeInstanceStatusNotSupported = "OPERATION_DENIED_INSTANCE_STATUS_NOT_SUPPORT"
	// CodeRequestLimitExceeded: throttled, whatever the HTTP status. Retryable.
	CodeRequestLimitExceeded = "REQUEST_LIMIT_EXCEEDED"
)

// Error codes the simulator (internal/sim/zenlayersim) answers for requests that
// fail before the action runs. Zenlayer's "Common Error Codes" page was not
// available to us, so these names are our own; the real API may use others. The
// client never branches on them: all are permanent (not retryable) errors.
const (
	// CodeAuthFailure (401): no or malformed Authorization, or an unknown access key id.
	CodeAuthFailure = "AUTH_FAILURE"
	// CodeSignatureFailure (401): the signature does not match the request, the
	// signed header list is not content-type;host, or X-ZC-Signature-Method is
	// not ZC2-HMAC-SHA256.
	CodeSignatureFailure = "SIGNATURE_FAILURE"
	// CodeInvalidTimestamp (400): X-ZC-Timestamp is missing, not unix seconds, or
	// further from the server's clock than it allows (5 minutes in the simulator).
	CodeInvalidTimestamp = "INVALID_TIMESTAMP"
	// CodeInvalidParameter (400): the body is not JSON or lacks instanceId.
	CodeInvalidParameter = "INVALID_PARAMETER"
	// CodeUnsupportedAction (400): X-ZC-Action names an action the endpoint does not serve.
	CodeUnsupportedAction = "UNSUPPORTED_ACTION"
	// CodeMethodNotAllowed (405): the request is not a POST.
	CodeMethodNotAllowed = "METHOD_NOT_ALLOWED"
)

// CodeMalformedResponse is set by the client, never sent by Zenlayer: a 2xx
// answer that is not JSON or carries no url. Not retryable: a server that
// answers this way is not speaking the protocol this client knows.
const CodeMalformedResponse = "MALFORMED_RESPONSE"

// APIError is an answer from the API that is not a VNC URL. It holds only what
// the server said, never credentials. Branch on StatusCode and Code (or use
// IsRetryable, IsInstanceNotReady, errors.Is(err, ErrInstanceNotFound)); never
// on Message, which Zenlayer warns may change.
type APIError struct {
	// StatusCode is the HTTP status of the answer.
	StatusCode int
	// Code is Zenlayer's error code, "" when the answer had none (a proxy's 502
	// page, say), or CodeMalformedResponse.
	Code string
	// RequestID is Zenlayer's id of the request: quote it to their support.
	RequestID string
	// Message is the server's human-readable explanation, for people only.
	Message string
}

// maxMessageInError bounds how much of a server message Error repeats, so a
// misbehaving server cannot flood logs and stored job errors.
const maxMessageInError = 200

func (e *APIError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "zenlayer DescribeVncUrl: HTTP %d", e.StatusCode)
	if e.Code != "" {
		if isPlainCode(e.Code) {
			b.WriteString(" " + e.Code)
		} else {
			fmt.Fprintf(&b, " %q", clip(e.Code, 64))
		}
	}
	if e.RequestID != "" {
		fmt.Fprintf(&b, " (request %q)", clip(e.RequestID, 64))
	}
	if e.Message != "" {
		// %q keeps a hostile message from forging log lines.
		fmt.Fprintf(&b, ": %q", clip(e.Message, maxMessageInError))
	}
	return b.String()
}

// isPlainCode reports whether code looks like Zenlayer's codes (upper-case
// words joined by underscores), which are printed bare; anything else is quoted
// and clipped.
func isPlainCode(code string) bool {
	if len(code) > 64 {
		return false
	}
	for _, r := range code {
		if !(r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_' || r == '.' || r == '-') {
			return false
		}
	}
	return true
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// Is makes errors.Is(err, ErrInstanceNotFound) true for any APIError with the
// same code, whatever its status and request id.
func (e *APIError) Is(target error) bool {
	t, ok := target.(*APIError)
	return ok && t.StatusCode == 0 && t.Code != "" && t.Code == e.Code
}

// ErrInstanceNotFound matches, with errors.Is, an answer saying the instance does
// not exist. It is permanent: retrying cannot help.
var ErrInstanceNotFound = &APIError{Code: CodeInstanceNotFound}

// ErrTransport marks errors where no answer was read: connection refused or
// reset, DNS failure, TLS failure, a timeout. Such calls may be retried.
var ErrTransport = errors.New("transport error")

// IsInstanceNotReady reports whether err says the instance's state does not allow
// a console yet (OPERATION_DENIED_INSTANCE_STATUS_NOT_SUPPORT). The caller should
// retry later and must bound how long it keeps doing so: an instance that is
// stopped for good answers the same.
func IsInstanceNotReady(err error) bool {
	var e *APIError
	return errors.As(err, &e) && e.Code == CodeInstanceStatusNotSupported
}

// IsThrottled reports whether err is Zenlayer's rate limit: HTTP 429 or
// REQUEST_LIMIT_EXCEEDED. A caller with an adaptive limiter should slow down.
func IsThrottled(err error) bool {
	var e *APIError
	return errors.As(err, &e) && (e.StatusCode == http.StatusTooManyRequests || e.Code == CodeRequestLimitExceeded)
}

// IsRetryable reports whether the same call may succeed if repeated: throttling,
// 5xx answers and transport failures (including the client's own per-call
// timeout). A cancelled context is not retryable: someone asked to stop. Not
// ready instances are not "retryable" here either; see IsInstanceNotReady.
func IsRetryable(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) {
		return false
	}
	var e *APIError
	if errors.As(err, &e) {
		if e.Code == CodeInstanceNotFound || e.Code == CodeInstanceStatusNotSupported {
			return false // a permanent code wins over an odd status
		}
		return IsThrottled(err) || e.StatusCode >= 500
	}
	var ne net.Error
	return errors.Is(err, ErrTransport) || errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne)
}
