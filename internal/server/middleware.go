package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"os"
	"time"
)

// Defaults of the HTTP timeouts: the server's (Config.UploadIdleTimeout,
// Config.WriteTimeout) and those of the http.Server that serves it (Timeouts).
const (
	// DefaultReadHeaderTimeout bounds reading a request's headers: a client that
	// cannot send them in this long is not a client.
	DefaultReadHeaderTimeout = 10 * time.Second
	// DefaultIdleTimeout closes keep-alive connections idle this long, authenticated
	// or not, so idle connections do not pile up.
	DefaultIdleTimeout = 2 * time.Minute
	// DefaultUploadIdleTimeout: an upload whose body sends nothing for this long is
	// answered 408. Long enough for a pipeline's pauses, short enough that a stalled
	// client does not hold a database connection for long.
	DefaultUploadIdleTimeout = 30 * time.Second
	// DefaultWriteTimeout bounds each write of an answer (each chunk of a streamed
	// CSV), so a client that stops reading is dropped instead of held forever.
	DefaultWriteTimeout = 30 * time.Second
	// DefaultMaxConcurrentUploads: a fifth of the smallest database pool (20), so
	// that uploads, however slow their clients, leave the workers their connections.
	DefaultMaxConcurrentUploads = 4
)

// contentSecurityPolicy allows the operator console its own scripts, styles and
// images and nothing from another host; no framing, no plugins, no <base>.
const contentSecurityPolicy = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

type requestIDKey struct{}

// requestID is the id the request was given, which its answer and its log lines carry.
func requestID(r *http.Request) string {
	id, _ := r.Context().Value(requestIDKey{}).(string)
	return id
}

func newRequestID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// wrap gives every request an id and every answer the security headers, and bounds
// each write of the answer by cfg.WriteTimeout.
func (s *Server) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := requestID(r) // observe's, taken from the caller when sane
		if id == "" {
			id = newRequestID()
		}
		h := w.Header()
		h.Set("X-Request-Id", id)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Content-Security-Policy", contentSecurityPolicy)
		h.Set("Cross-Origin-Opener-Policy", "same-origin")
		h.Set("Cross-Origin-Resource-Policy", "same-origin")
		if r.TLS != nil {
			h.Set("Strict-Transport-Security", "max-age=31536000")
		}
		// Every API answer is about devices, and some hold passwords: no cache keeps one.
		h.Set("Cache-Control", "no-store")
		dw := &deadlineWriter{ResponseWriter: w, rc: http.NewResponseController(w), timeout: s.cfg.WriteTimeout}
		// A keep-alive connection may carry the write deadline of the previous
		// request's answer: this answer's writes set their own.
		_ = dw.rc.SetWriteDeadline(time.Time{})
		next.ServeHTTP(dw, r.WithContext(context.WithValue(r.Context(), requestIDKey{}, id)))
	})
}

// deadlineWriter sets a write deadline before each write and flush of an answer: a
// streamed answer may take as long as it needs, as long as the client keeps reading.
type deadlineWriter struct {
	http.ResponseWriter
	rc      *http.ResponseController
	timeout time.Duration
	wrote   bool // some of the body has been handed to the connection
}

func (d *deadlineWriter) Write(p []byte) (int, error) {
	_ = d.rc.SetWriteDeadline(time.Now().Add(d.timeout))
	d.wrote = true
	return d.ResponseWriter.Write(p)
}

func (d *deadlineWriter) Flush() {
	_ = d.rc.SetWriteDeadline(time.Now().Add(d.timeout))
	_ = d.rc.Flush()
}

// Unwrap lets http.ResponseController reach the connection.
func (d *deadlineWriter) Unwrap() http.ResponseWriter { return d.ResponseWriter }

// started reports whether w has begun sending the body, after which the status
// can no longer change and a failure can only abort the answer.
func started(w http.ResponseWriter) bool {
	d, ok := w.(*deadlineWriter)
	return !ok || d.wrote
}

// ErrUploadIdle is the error of an upload body that sent nothing for the idle timeout.
var ErrUploadIdle = errors.New("the upload sent nothing for too long")

// idleBody reads a request body with a read deadline renewed before each read, so
// a body that sends nothing for timeout fails with ErrUploadIdle, while one that
// keeps sending may take as long as it needs.
type idleBody struct {
	io.ReadCloser
	rc      *http.ResponseController
	timeout time.Duration
}

func (b *idleBody) Read(p []byte) (int, error) {
	_ = b.rc.SetReadDeadline(time.Now().Add(b.timeout))
	n, err := b.ReadCloser.Read(p)
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		return n, ErrUploadIdle
	case err != nil:
		// The body is read: the deadline must not outlive it, since the server's
		// own read of the connection afterwards would take it for a dead client.
		_ = b.rc.SetReadDeadline(time.Time{})
	}
	return n, err
}
