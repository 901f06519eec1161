package vnccloud

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"
)

// ErrorCode is the errorCode of a 400 response body.
type ErrorCode int

// The documented error codes of VNC Cloud API 1.1.
const (
	CodeBadContentType     ErrorCode = 1001 // request body is not application/json
	CodeBadAccept          ErrorCode = 1002 // Accept does not allow application/json
	CodeInvalidAction      ErrorCode = 1003 // action is not connect or listen
	CodeTooMany            ErrorCode = 1004 // more than 16 groups (connect), 24 groups or 8 addresses (listen)
	CodeEmptyList          ErrorCode = 1005 // allowedActions, groups or cloudAddresses present but empty
	CodeBadGroupName       ErrorCode = 1006 // group name empty or longer than 256 characters
	CodeMalformedAddress   ErrorCode = 1007 // cloud address not well-formed
	CodeEmptyACL           ErrorCode = 1008 // access control list with neither groups nor addresses
	CodeWrongListForAction ErrorCode = 1009 // ACL on a connect address, or groups on a listen address
)

// Description is the reference's wording for the code.
func (c ErrorCode) Description() string {
	switch c {
	case CodeBadContentType:
		return "The content type of the request body is something other than application/json."
	case CodeBadAccept:
		return "The content type your user agent is expecting for the response body is something other than application/json."
	case CodeInvalidAction:
		return "You've specified an action that is not connect or listen."
	case CodeTooMany:
		return "For a connect cloud address, you've specified more than 16 groups. For a listen cloud address, you've specified more than 24 groups or 8 individual cloud addresses."
	case CodeEmptyList:
		return "You've created either an allowedActions, groups, or cloudAddresses list, but not put anything in it."
	case CodeBadGroupName:
		return "A group name is either empty or longer than 256 characters."
	case CodeMalformedAddress:
		return "The cloud address you've specified in the URI is not well-formed."
	case CodeEmptyACL:
		return "You've specified an access control list for a listen cloud address, but not put any groups or individual cloud addresses in it."
	case CodeWrongListForAction:
		return "Either you've specified an access control list for a connect cloud address, or a group for a listen cloud address. It should be the other way around."
	}
	return ""
}

// The HTTP statuses the reference documents, besides success and 400.
const (
	StatusUnauthorized       = http.StatusUnauthorized       // 401: no API key, or one not in the system
	StatusForbidden          = http.StatusForbidden          // 403: API key not well-formed
	StatusNotFound           = http.StatusNotFound           // 404: no such cloud address for this key
	StatusConflict           = http.StatusConflict           // 409: PUT body cloudAddress differs from the URI
	StatusPreconditionFailed = http.StatusPreconditionFailed // 412: If-Match does not match the ETag
	StatusServiceUnavailable = http.StatusServiceUnavailable // 503: retry
	StatusTooManyRequests    = http.StatusTooManyRequests    // 429: not documented, treated like 503
)

// APIError is a non-success answer from VNC Cloud. It never carries request bodies,
// credentials or passwords: only what the server said about the failure.
type APIError struct {
	Op         string        // "create", "list", "ready", "get", "update", "reset", "delete"
	StatusCode int           // HTTP status
	Code       ErrorCode     // errorCode from the body; 0 when absent
	Message    string        // errorMessage from the body, possibly empty
	RetryAfter time.Duration // from a Retry-After header; 0 when absent
}

func (e *APIError) Error() string {
	msg := fmt.Sprintf("vnccloud %s: HTTP %d", e.Op, e.StatusCode)
	if e.Code != 0 {
		msg += fmt.Sprintf(" errorCode %d", int(e.Code))
	}
	if e.Message != "" {
		msg += ": " + truncate(e.Message, 200)
	}
	return msg
}

// Is lets errors.Is(err, ErrNotFound) and friends match on status alone.
func (e *APIError) Is(target error) bool {
	t, ok := target.(*APIError)
	if !ok {
		return false
	}
	return t.Op == "" && t.Code == 0 && t.StatusCode == e.StatusCode
}

// Sentinels for errors.Is on the documented statuses.
var (
	ErrUnauthorized       = &APIError{StatusCode: StatusUnauthorized}
	ErrForbidden          = &APIError{StatusCode: StatusForbidden}
	ErrNotFound           = &APIError{StatusCode: StatusNotFound}
	ErrConflict           = &APIError{StatusCode: StatusConflict}
	ErrPreconditionFailed = &APIError{StatusCode: StatusPreconditionFailed}
	ErrServiceUnavailable = &APIError{StatusCode: StatusServiceUnavailable}
)

// IsRetryable says whether a failed call may succeed if made again unchanged: 503 and
// 429 from the server, transport failures (refused or reset connections, timeouts, a
// response cut short) and every unknown outcome (ErrUnknownOutcome). Everything else
// (400, 401, 403, 404, 409, 412, an unreadable answer to a read, a cancelled context)
// is permanent: repeating the same request gets the same answer.
//
// An unknown outcome is retryable although the first request may have acted, because
// repeating it is the only way back to a known state: a repeated reset leaves the
// cloud with a password the caller learns (the lost one is replaced), a repeated PUT or
// DELETE has the same effect as one (a DELETE then answers 404: done), and a repeated
// create makes an address whose answer arrives, leaving the first one, if it was made,
// an orphan for reconciliation to adopt or delete. So callers must record a create
// attempt before sending it. A cancelled context is not retryable even when the
// outcome is unknown: the caller asked to stop, and errors.Is(err, ErrUnknownOutcome)
// still tells it that the cloud may have acted.
func IsRetryable(err error) bool {
	if err == nil {
		return false
	}
	var apiErr *APIError
	if errors.As(err, &apiErr) {
		return apiErr.StatusCode == StatusServiceUnavailable || apiErr.StatusCode == StatusTooManyRequests ||
			apiErr.StatusCode == http.StatusBadGateway || apiErr.StatusCode == http.StatusGatewayTimeout
	}
	if errors.Is(err, context.Canceled) {
		return false
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, ErrUnknownOutcome) {
		return true
	}
	var netErr net.Error
	if errors.As(err, &netErr) {
		return true
	}
	var transportErr *TransportError
	return errors.As(err, &transportErr)
}

// TransportError is a call that got no complete HTTP answer: the connection failed, was
// reset, or the body was cut short. On its own (not inside an *UnknownOutcomeError) it
// is a read that failed, or a request the client knows was never written; a request
// that changes the account and may have reached the server is an *UnknownOutcomeError
// wrapping it.
type TransportError struct {
	Op  string
	Err error
}

func (e *TransportError) Error() string { return fmt.Sprintf("vnccloud %s: %v", e.Op, e.Err) }
func (e *TransportError) Unwrap() error { return e.Err }

// ErrUnknownOutcome matches, with errors.Is, every *UnknownOutcomeError.
var ErrUnknownOutcome = errors.New("vnccloud: outcome unknown")

// UnknownOutcomeError is a call that changes the account (create, update, reset,
// delete) and may have acted, but whose answer is no use: the connection was closed or
// reset, or the call timed out, after the request was written; or a 2xx answer was cut
// short or could not be decoded. What the cloud did, and what it answered (a new
// address, a new password), is lost. It is neither an *APIError (a definite answer)
// nor a request the client knows it never wrote (a bare *TransportError, an error from
// Config.Before, a *ValidationError). Err is the *TransportError or *DecodeError
// underneath, so errors.As finds those too.
type UnknownOutcomeError struct {
	Op string
	// Status is the 2xx status of an answer whose body was cut short or unreadable:
	// the cloud certainly acted. 0 when no answer arrived: it may or may not have.
	Status int
	Err    error
}

func (e *UnknownOutcomeError) Error() string {
	// The cause's own text starts with the same "vnccloud <op>:"; say it once.
	cause := e.Err
	if inner := errors.Unwrap(cause); inner != nil {
		cause = inner
	}
	if e.Status != 0 {
		return fmt.Sprintf("vnccloud %s: outcome unknown: HTTP %d, but the answer is unusable: %v", e.Op, e.Status, cause)
	}
	return fmt.Sprintf("vnccloud %s: outcome unknown: the request was sent, no answer came: %v", e.Op, cause)
}

func (e *UnknownOutcomeError) Unwrap() error { return e.Err }

// Is makes errors.Is(err, ErrUnknownOutcome) true.
func (e *UnknownOutcomeError) Is(target error) bool { return target == ErrUnknownOutcome }
