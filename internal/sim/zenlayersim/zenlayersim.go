// Package zenlayersim is the Zenlayer side of vncfleet's simulator: an
// http.Handler that answers Zenlayer Cloud API 2.0's DescribeVncUrl the way the
// real endpoint is documented to. It verifies every request's ZC2-HMAC-SHA256
// signature, timestamp and access key, and answers from a table of instances and
// their states: RUNNING instances get a console URL, others
// OPERATION_DENIED_INSTANCE_STATUS_NOT_SUPPORT, unknown ones
// INVALID_INSTANCE_NOT_FOUND. The simulator mounts it at /api/v2/zec.
package zenlayersim

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/vncfleet/vncfleet/zenlayer"
)

// StatusRunning is the only instance state that allows a VNC console.
const StatusRunning = "RUNNING"

// ConsoleBaseURL is where the simulated console URLs point. Nothing serves it:
// vncfleet only stores and reports the URL.
const ConsoleBaseURL = "https://console.zenlayer.com/vnc/"

// maxBodyBytes bounds a request body; a DescribeVncUrl body is a few dozen bytes.
const maxBodyBytes = 64 << 10

// Config configures the simulated endpoint.
type Config struct {
	// Credentials maps access key ids to their passwords. Requests signed with
	// any other key id get 401 AUTH_FAILURE. Empty means every request does.
	// New copies the map.
	Credentials map[string]string
	// Instances maps instance ids to their status ("RUNNING", "STARTING",
	// "STOPPED", ...). Only RUNNING allows a console. New copies the map;
	// change a status later with Server.SetInstanceStatus.
	Instances map[string]string
	// MaxClockSkew bounds how far X-ZC-Timestamp may be from Now, either way.
	// Defaults to 5 minutes, the usual window of this family of signing
	// schemes: wide enough for unsynchronised clocks, narrow enough that a
	// captured request cannot be replayed for long.
	MaxClockSkew time.Duration
	// Logger receives one line per request: key id, instance, status, code and
	// request id, never the password or the signature. Defaults to discarding.
	Logger *slog.Logger
	// Now is the server's clock. Defaults to time.Now; tests fix it.
	Now func() time.Time
}

// Server is the simulated endpoint. It is an http.Handler and is safe for
// concurrent use.
type Server struct {
	cfg Config

	mu        sync.Mutex
	instances map[string]string
}

// New builds the endpoint. It returns the concrete *Server, which is an
// http.Handler, so tests can also move instances between states.
func New(cfg Config) *Server {
	if cfg.MaxClockSkew <= 0 {
		cfg.MaxClockSkew = 5 * time.Minute
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	cfg.Credentials = maps.Clone(cfg.Credentials)
	instances := maps.Clone(cfg.Instances)
	if instances == nil {
		instances = map[string]string{}
	}
	cfg.Instances = nil // the live table is s.instances
	return &Server{cfg: cfg, instances: instances}
}

// SetInstanceStatus sets an instance's status, adding the instance if it is
// unknown (tests: STARTING -> RUNNING).
func (s *Server) SetInstanceStatus(id, status string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.instances[id] = status
}

// InstanceStatus returns an instance's status and whether it is known.
func (s *Server) InstanceStatus(id string) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st, ok := s.instances[id]
	return st, ok
}

// instancesFile is the format LoadInstances reads.
type instancesFile struct {
	Instances []struct {
		InstanceID string `json:"instanceId"`
		Status     string `json:"status"`
	} `json:"instances"`
}

// LoadInstances reads a table of instances for Config.Instances from a JSON file:
//
//	{"instances": [
//	  {"instanceId": "zec-1", "status": "RUNNING"},
//	  {"instanceId": "zec-2", "status": "STARTING"}
//	]}
//
// Every entry needs both fields; statuses are upper-cased ("running" is
// RUNNING). Unknown fields and repeated instance ids are errors, as they are
// most likely typos.
func LoadInstances(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("zenlayer instances: %w", err)
	}
	defer f.Close()
	dec := json.NewDecoder(f)
	dec.DisallowUnknownFields()
	var file instancesFile
	if err := dec.Decode(&file); err != nil {
		return nil, fmt.Errorf("zenlayer instances %s: %w", path, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("zenlayer instances %s: data after the JSON object", path)
	}
	out := make(map[string]string, len(file.Instances))
	for i, in := range file.Instances {
		id, status := strings.TrimSpace(in.InstanceID), strings.ToUpper(strings.TrimSpace(in.Status))
		if id == "" || status == "" {
			return nil, fmt.Errorf("zenlayer instances %s: entry %d needs instanceId and status", path, i+1)
		}
		if _, dup := out[id]; dup {
			return nil, fmt.Errorf("zenlayer instances %s: instance %q listed twice", path, id)
		}
		out[id] = status
	}
	return out, nil
}

// newRequestID makes an id shaped like Zenlayer's ("T67723B59-F4D1-42EA-BDC1-
// 5E67167FD8CC"): "T" and an upper-case random UUID.
func newRequestID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := strings.ToUpper(hex.EncodeToString(b[:]))
	return "T" + h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// outcome is what one request came to, for the answer and the log line.
type outcome struct {
	status     int
	code       string
	message    string
	keyID      string
	instanceID string
	url        string
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	o := s.handle(r)
	id := newRequestID()
	var body any
	if o.code == "" {
		body = map[string]any{"requestId": id, "response": map[string]string{"requestId": id, "url": o.url}}
	} else {
		body = map[string]string{"requestId": id, "code": o.code, "message": o.message}
	}
	if o.status == http.StatusMethodNotAllowed {
		w.Header().Set("Allow", http.MethodPost)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(o.status)
	_ = json.NewEncoder(w).Encode(body)

	level := slog.LevelInfo
	if o.code != "" {
		level = slog.LevelWarn
	}
	s.cfg.Logger.Log(r.Context(), level, "zenlayer sim",
		"action", r.Header.Get(zenlayer.HeaderAction), "access_key_id", o.keyID, "instance_id", o.instanceID,
		"status", o.status, "code", o.code, "request_id", id)
}

func fail(status int, code, message string) outcome {
	return outcome{status: status, code: code, message: message}
}

// handle runs the checks in the order the real endpoint is described to: the
// envelope, the clock, the key, the signature, then the action itself.
func (s *Server) handle(r *http.Request) outcome {
	if r.Method != http.MethodPost {
		return fail(http.StatusMethodNotAllowed, zenlayer.CodeMethodNotAllowed, "Zenlayer Cloud API 2.0 takes POST only.")
	}
	if a := r.Header.Get(zenlayer.HeaderAction); a != zenlayer.ActionDescribeVncURL {
		return fail(http.StatusBadRequest, zenlayer.CodeUnsupportedAction, "This endpoint serves DescribeVncUrl only.")
	}
	if m := r.Header.Get(zenlayer.HeaderSignatureMethod); m != zenlayer.SignatureMethod {
		return fail(http.StatusUnauthorized, zenlayer.CodeSignatureFailure, "X-ZC-Signature-Method must be "+zenlayer.SignatureMethod+".")
	}
	ts, err := strconv.ParseInt(r.Header.Get(zenlayer.HeaderTimestamp), 10, 64)
	if err != nil {
		return fail(http.StatusBadRequest, zenlayer.CodeInvalidTimestamp, "X-ZC-Timestamp must be unix seconds.")
	}
	if skew := s.cfg.Now().Sub(time.Unix(ts, 0)).Abs(); skew > s.cfg.MaxClockSkew {
		return fail(http.StatusBadRequest, zenlayer.CodeInvalidTimestamp, "X-ZC-Timestamp is too far from the server's clock.")
	}
	keyID, signedHeaders, sig, err := zenlayer.ParseAuthorization(r.Header.Get("Authorization"))
	if err != nil {
		return fail(http.StatusUnauthorized, zenlayer.CodeAuthFailure, "Authorization is missing or malformed.")
	}
	password, known := s.cfg.Credentials[keyID]
	if !known {
		o := fail(http.StatusUnauthorized, zenlayer.CodeAuthFailure, "The access key id is unknown.")
		o.keyID = keyID
		return o
	}
	body, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, maxBodyBytes))
	if err != nil {
		o := fail(http.StatusBadRequest, zenlayer.CodeInvalidParameter, "The request body is unreadable or too large.")
		o.keyID = keyID
		return o
	}
	want := zenlayer.Sign(zenlayer.SignInput{
		Host: r.Host, ContentType: r.Header.Get("Content-Type"), Body: body, Timestamp: ts, AccessKeyPassword: password,
	})
	if signedHeaders != zenlayer.SignedHeaders || !zenlayer.SignatureEqual(sig, want) {
		o := fail(http.StatusUnauthorized, zenlayer.CodeSignatureFailure, "The signature does not match the request.")
		o.keyID = keyID
		return o
	}

	var req struct {
		InstanceID string `json:"instanceId"`
	}
	if err := json.Unmarshal(body, &req); err != nil || req.InstanceID == "" {
		o := fail(http.StatusBadRequest, zenlayer.CodeInvalidParameter, "instanceId is required and must be a string.")
		o.keyID = keyID
		return o
	}
	status, found := s.InstanceStatus(req.InstanceID)
	var o outcome
	switch {
	case !found:
		o = fail(http.StatusNotFound, zenlayer.CodeInstanceNotFound, "Instance not found.")
	case status != StatusRunning:
		o = fail(http.StatusBadRequest, zenlayer.CodeInstanceStatusNotSupported, "Current instance state does not allow this operation.")
	default:
		o = outcome{status: http.StatusOK, url: consoleURL(req.InstanceID)}
	}
	o.keyID, o.instanceID = keyID, req.InstanceID
	return o
}

// consoleURL is a plausible console URL: a fresh random token per call, as a
// real console link is single-use.
func consoleURL(instanceID string) string {
	token := make([]byte, 16)
	_, _ = rand.Read(token)
	q := url.Values{"instance": {instanceID}, "token": {hex.EncodeToString(token)}}
	return ConsoleBaseURL + "?" + q.Encode()
}
