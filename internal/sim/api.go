package sim

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/vncfleet/vncfleet/vnccloud"
)

// APIPrefix is where the simulator serves VNC Cloud API 1.1, as the real API does.
const APIPrefix = "/cloud/1.1"

func (s *Server) routes() {
	s.mux = http.NewServeMux()
	s.mux.HandleFunc(APIPrefix+"/", s.serveAPI)
	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = io.WriteString(w, "ok\n")
	})
	s.mux.HandleFunc("GET /sim/state", s.serveState)
	s.mux.HandleFunc("GET /sim/requests", s.serveRequests)
	s.mux.HandleFunc("GET /sim/faults", s.serveGetFaults)
	s.mux.HandleFunc("POST /sim/faults", s.serveSetFaults)
	s.mux.HandleFunc("POST /sim/accounts/{key}/addresses", s.serveForeignCreate)
	s.mux.HandleFunc("POST /sim/accounts/{key}/addresses/{addr}/force", s.serveForce)
	s.mux.HandleFunc("DELETE /sim/accounts/{key}/addresses/{addr}", s.serveForceDelete)
	if s.cfg.Zenlayer != nil {
		s.mux.Handle("/api/v2/zec", s.cfg.Zenlayer)
	}
}

// Operation names, as counted in AccountState.Counts.
const (
	opCreate = "create"
	opList   = "list"
	opReady  = "ready"
	opGet    = "get"
	opUpdate = "update"
	opReset  = "reset"
	opDelete = "delete"
)

// route is where an API request goes: op and addr when the path and method name an
// operation; otherwise status is 404 (no such path) or 405 (allow lists the methods).
type route struct {
	op     string
	addr   string
	status int
	allow  string
}

// resolve works out the operation of a request. It reads the escaped path so that an
// address with an encoded slash is one (malformed, 1007) address, not two segments.
func resolve(r *http.Request) route {
	rest, ok := strings.CutPrefix(r.URL.EscapedPath(), APIPrefix+"/static-address")
	if !ok {
		return route{status: http.StatusNotFound}
	}
	if rest == "" {
		switch r.Method {
		case http.MethodPost:
			return route{op: opCreate}
		case http.MethodGet:
			return route{op: opList}
		}
		return route{status: http.StatusMethodNotAllowed, allow: "GET, POST"}
	}
	rest, ok = strings.CutPrefix(rest, "/")
	if !ok || rest == "" {
		return route{status: http.StatusNotFound}
	}
	seg, tail, _ := strings.Cut(rest, "/")
	addr, err := url.PathUnescape(seg)
	if err != nil {
		addr = seg // not valid escaping: certainly not a well-formed address either
	}
	switch tail {
	case "":
		if strings.HasSuffix(rest, "/") {
			return route{status: http.StatusNotFound}
		}
		switch r.Method {
		case http.MethodGet:
			return route{op: opGet, addr: addr}
		case http.MethodPut:
			return route{op: opUpdate, addr: addr}
		case http.MethodPost:
			return route{op: opReset, addr: addr}
		case http.MethodDelete:
			return route{op: opDelete, addr: addr}
		}
		return route{status: http.StatusMethodNotAllowed, allow: "GET, PUT, POST, DELETE"}
	case "ready":
		if r.Method == http.MethodGet {
			return route{op: opReady, addr: addr}
		}
		return route{status: http.StatusMethodNotAllowed, allow: "GET"}
	}
	return route{status: http.StatusNotFound}
}

// serveAPI applies, in order: counting, latency, rate cap, fail rate, authentication,
// routing, then the operation (see the package doc).
func (s *Server) serveAPI(w http.ResponseWriter, r *http.Request) {
	arrived := s.cfg.Now()
	rt := resolve(r)
	key, secret, hasAuth := r.BasicAuth()

	s.mu.Lock()
	t := s.stamp(arrived)
	s.requests++
	s.global.add(t)
	s.log.add(t, rt.op)
	acct := s.authenticate(key, secret)
	overRate := false
	if acct != nil {
		acct.requests++
		if rt.op != "" {
			acct.counts[rt.op]++
		}
		n := acct.window.add(t)
		overRate = s.faults.Rate > 0 && n > s.faults.Rate
	}
	failed := !overRate && s.roll(s.faults.FailRate)
	switch {
	case overRate:
		s.injected.RateCapped++
	case failed:
		s.injected.Failed++
	}
	latency := s.faults.Latency
	s.mu.Unlock()

	if latency > 0 {
		timer := time.NewTimer(latency)
		select {
		case <-timer.C:
		case <-r.Context().Done():
			timer.Stop()
			return // the client is gone: nobody to answer
		}
	}
	switch {
	case overRate:
		s.cfg.Logger.Debug("sim: over the rate cap", "api_key", acct.key, "op", rt.op)
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusServiceUnavailable, 0)
		return
	case failed:
		s.cfg.Logger.Debug("sim: injected 503", "op", rt.op)
		writeError(w, http.StatusServiceUnavailable, 0)
		return
	}

	switch {
	case !hasAuth || key == "":
		w.Header().Set("WWW-Authenticate", `Basic realm="VNC Cloud"`)
		writeError(w, http.StatusUnauthorized, 0)
		return
	case !wellFormedKey(key):
		writeError(w, http.StatusForbidden, 0)
		return
	case acct == nil:
		w.Header().Set("WWW-Authenticate", `Basic realm="VNC Cloud"`)
		writeError(w, http.StatusUnauthorized, 0)
		return
	}

	switch rt.op {
	case "":
		if rt.allow != "" {
			w.Header().Set("Allow", rt.allow)
		}
		writeError(w, rt.status, 0)
	case opCreate:
		s.handleCreate(w, r, acct)
	case opList:
		s.handleList(w, r, acct)
	default:
		s.handleAddress(w, r, acct, rt.op, rt.addr)
	}
}

// acceptsJSON reports whether an Accept header admits application/json. A missing
// header admits anything; a media range with q=0 admits nothing.
func acceptsJSON(h string) bool {
	if strings.TrimSpace(h) == "" {
		return true
	}
	for part := range strings.SplitSeq(h, ",") {
		mt, params, err := mime.ParseMediaType(strings.TrimSpace(part))
		if err != nil {
			continue
		}
		if q, ok := params["q"]; ok {
			if v, err := strconv.ParseFloat(q, 64); err != nil || v <= 0 {
				continue
			}
		}
		if mt == "application/json" || mt == "application/*" || mt == "*/*" {
			return true
		}
	}
	return false
}

// isJSONContent reports whether a Content-Type is application/json, parameters allowed.
func isJSONContent(h string) bool {
	mt, _, err := mime.ParseMediaType(h)
	return err == nil && mt == "application/json"
}

// maxBody bounds request bodies: a valid spec is a few kilobytes at most.
const maxBody = 1 << 20

// body is a create or PUT body: the spec and, for PUT, the address it names.
type body struct {
	CloudAddress *string `json:"cloudAddress"`
	vnccloud.RawSpec
}

// readBody decodes a request body. ok is false once an answer (400 without an
// errorCode) has been written.
func readBody(w http.ResponseWriter, r *http.Request) (b body, ok bool) {
	data, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	switch {
	case err != nil:
		writeMessage(w, http.StatusBadRequest, "Bad Request: the body could not be read")
		return b, false
	case len(data) > maxBody:
		writeMessage(w, http.StatusBadRequest, "Bad Request: the body is larger than 1 MiB")
		return b, false
	}
	if err := json.Unmarshal(data, &b); err != nil {
		writeMessage(w, http.StatusBadRequest, "Bad Request: the body is not a JSON object of the documented shape")
		return b, false
	}
	return b, true
}

// validate answers 400 with the errorCode of the first rule raw breaks; ok is false
// when it did.
func validate(w http.ResponseWriter, raw vnccloud.RawSpec) (spec vnccloud.Spec, ok bool) {
	if err := vnccloud.ValidateRaw(raw); err != nil {
		var ve *vnccloud.ValidationError
		if errors.As(err, &ve) {
			writeError(w, http.StatusBadRequest, ve.Code)
		} else {
			writeMessage(w, http.StatusBadRequest, "Bad Request")
		}
		return spec, false
	}
	return specFromRaw(raw), true
}

func specFromRaw(raw vnccloud.RawSpec) vnccloud.Spec {
	return vnccloud.Spec{Action: vnccloud.Action(raw.AllowedActions[0]), Groups: raw.Groups, AccessControl: raw.AccessControl}
}

// credentials is the body of a create or reset answer.
type credentials struct {
	CloudAddress  string `json:"cloudAddress"`
	CloudPassword string `json:"cloudPassword"`
}

func (s *Server) handleCreate(w http.ResponseWriter, r *http.Request, acct *account) {
	if !isJSONContent(r.Header.Get("Content-Type")) {
		writeError(w, http.StatusBadRequest, vnccloud.CodeBadContentType)
		return
	}
	if !acceptsJSON(r.Header.Get("Accept")) {
		writeError(w, http.StatusBadRequest, vnccloud.CodeBadAccept)
		return
	}
	b, ok := readBody(w, r)
	if !ok {
		return
	}
	spec, ok := validate(w, b.RawSpec)
	if !ok {
		return
	}
	s.mu.Lock()
	a := s.create(acct, spec)
	resp := credentials{CloudAddress: a.addr, CloudPassword: a.password}
	lost := s.roll(s.faults.LostRate)
	drop := !lost && s.roll(s.faults.DropRate)
	s.mu.Unlock()
	if drop {
		// Counted before the connection closes: whoever sees the close then sees it
		// counted in /sim/state.
		s.count(func(in *Injected) { in.Dropped++ })
		if dropConnection(w) {
			s.cfg.Logger.Debug("sim: create committed, connection dropped", "api_key", acct.key, "cloud_address", resp.CloudAddress)
			return
		}
		s.count(func(in *Injected) { in.Dropped-- })
		lost = true
	}
	if lost {
		s.count(func(in *Injected) { in.Lost++ })
		s.cfg.Logger.Debug("sim: create committed, answered 503", "api_key", acct.key, "cloud_address", resp.CloudAddress)
		writeError(w, http.StatusServiceUnavailable, 0)
		return
	}
	writeJSON(w, http.StatusCreated, resp)
}

// roll throws the fault dice: true with probability p. Callers hold s.mu.
func (s *Server) roll(p float64) bool { return p > 0 && s.dice.Float64() < p }

// count changes the injected-fault counters under the lock.
func (s *Server) count(f func(*Injected)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f(&s.injected)
}

// dropConnection closes the client's connection without an answer; false when the
// connection cannot be taken over (HTTP/2), and the caller answers 503 instead.
func dropConnection(w http.ResponseWriter) bool {
	hj, ok := w.(http.Hijacker)
	if !ok {
		return false
	}
	conn, _, err := hj.Hijack()
	if err != nil {
		return false
	}
	_ = conn.Close()
	return true
}

// writeCutOff answers 200 with the first half of v's JSON and a Content-Length that
// matches it: the answer arrives whole, but does not decode.
func writeCutOff(w http.ResponseWriter, v any) {
	data, err := json.Marshal(v)
	if err != nil {
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	data = data[:len(data)/2]
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(data)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(data)
}

// cursorPrefix marks a cursor's decoded form, so that a random base64 string is
// recognised as malformed rather than read as a position.
const cursorPrefix = "after:"

// encodeCursor makes the opaque position after sequence number seq.
func encodeCursor(seq int64) string {
	return base64.RawURLEncoding.EncodeToString([]byte(cursorPrefix + strconv.FormatInt(seq, 10)))
}

func decodeCursor(c string) (int64, bool) {
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil {
		return 0, false
	}
	v, ok := strings.CutPrefix(string(b), cursorPrefix)
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseInt(v, 10, 64)
	return n, err == nil && n >= 0
}

// Page sizes of the list operation (reference: "?limit=<1-99>", "By default, this is 20").
const (
	DefaultLimit = 20
	MaxLimit     = 99
)

func (s *Server) handleList(w http.ResponseWriter, r *http.Request, acct *account) {
	if !acceptsJSON(r.Header.Get("Accept")) {
		writeError(w, http.StatusBadRequest, vnccloud.CodeBadAccept)
		return
	}
	q := r.URL.Query()
	limit := DefaultLimit
	if q.Has("limit") {
		n, err := strconv.Atoi(q.Get("limit"))
		if err != nil || n < 1 || n > MaxLimit {
			writeMessage(w, http.StatusBadRequest, "Bad Request: limit must be a number from 1 to 99")
			return
		}
		limit = n
	}
	var after int64
	if q.Has("cursor") {
		var ok bool
		if after, ok = decodeCursor(q.Get("cursor")); !ok {
			writeMessage(w, http.StatusBadRequest, "Bad Request: the page cursor is malformed")
			return
		}
	}
	s.mu.Lock()
	addrs, last, more := acct.page(after, limit)
	s.mu.Unlock()
	if len(addrs) == 0 {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	if more {
		next := baseURL(r) + APIPrefix + "/static-address?limit=" + strconv.Itoa(limit) + "&cursor=" + encodeCursor(last)
		w.Header().Set("Link", "<"+next+`>; rel="next"`)
	}
	writeJSON(w, http.StatusOK, struct {
		CloudAddresses []string `json:"cloudAddresses"`
	}{addrs})
}

// baseURL is the scheme and host the client used, for an absolute Link.
func baseURL(r *http.Request) string {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host
}

// etag is the entity tag of a version.
func etag(version int) string { return `"` + strconv.Itoa(version) + `"` }

// ifMatch applies an If-Match header to the current version: absent or blank
// matches, * matches, else any listed entity tag (W/ prefix ignored) must equal it.
func ifMatch(header string, version int) bool {
	if strings.TrimSpace(header) == "" {
		return true
	}
	want := etag(version)
	for tag := range strings.SplitSeq(header, ",") {
		tag = strings.TrimPrefix(strings.TrimSpace(tag), "W/")
		if tag == "*" || tag == want {
			return true
		}
	}
	return false
}

// detailsJSON is the API's JSON shape of one address (GET), and of a spec in State.
type detailsJSON struct {
	CloudAddress   string                  `json:"cloudAddress"`
	AllowedActions []string                `json:"allowedActions"`
	Groups         []string                `json:"groups,omitempty"`
	AccessControl  *vnccloud.AccessControl `json:"accessControl,omitempty"`
}

func (s *Server) handleAddress(w http.ResponseWriter, r *http.Request, acct *account, op, addr string) {
	if !vnccloud.IsWellFormedAddress(addr) {
		writeError(w, http.StatusBadRequest, vnccloud.CodeMalformedAddress)
		return
	}
	s.mu.Lock()
	_, exists := s.lookup(acct, addr)
	s.mu.Unlock()
	if !exists {
		writeError(w, http.StatusNotFound, 0)
		return
	}
	var spec vnccloud.Spec
	switch op {
	case opReady, opGet, opReset:
		if !acceptsJSON(r.Header.Get("Accept")) {
			writeError(w, http.StatusBadRequest, vnccloud.CodeBadAccept)
			return
		}
	case opUpdate:
		if !isJSONContent(r.Header.Get("Content-Type")) {
			writeError(w, http.StatusBadRequest, vnccloud.CodeBadContentType)
			return
		}
		b, ok := readBody(w, r)
		if !ok {
			return
		}
		if b.CloudAddress == nil || *b.CloudAddress != addr {
			writeMessage(w, http.StatusConflict, "Conflict: the cloudAddress in the body does not match the cloud address in the URI")
			return
		}
		if spec, ok = validate(w, b.RawSpec); !ok {
			return
		}
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	// Looked up again: the address may have gone while the body was read.
	a, ok := s.lookup(acct, addr)
	if !ok {
		writeError(w, http.StatusNotFound, 0)
		return
	}
	switch op {
	case opReady:
		changes := "pending"
		if s.ready(a) {
			changes = "none"
		}
		writeJSON(w, http.StatusOK, map[string]string{"changes": changes})
		return
	case opGet:
		w.Header().Set("ETag", etag(a.version))
		writeJSON(w, http.StatusOK, detailsJSON{CloudAddress: a.addr, AllowedActions: []string{string(a.spec.Action)},
			Groups: a.spec.Groups, AccessControl: a.spec.AccessControl})
		return
	}
	if !ifMatch(r.Header.Get("If-Match"), a.version) {
		writeError(w, http.StatusPreconditionFailed, 0)
		return
	}
	switch op {
	case opUpdate:
		s.change(a, spec)
		w.WriteHeader(http.StatusOK)
	case opReset:
		s.resetPassword(a)
		answer := credentials{CloudAddress: a.addr, CloudPassword: a.password}
		if s.roll(s.faults.GarbleRate) {
			s.injected.Garbled++
			s.cfg.Logger.Debug("sim: reset committed, answer cut off", "api_key", acct.key, "cloud_address", a.addr)
			writeCutOff(w, answer)
			return
		}
		writeJSON(w, http.StatusOK, answer)
	case opDelete:
		s.remove(a)
		w.WriteHeader(http.StatusNoContent)
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	data, err := json.Marshal(v)
	if err != nil {
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(data)+1))
	w.WriteHeader(status)
	_, _ = w.Write(append(data, '\n'))
}

// apiError is the reference's error body. ErrorCode is omitted where the reference
// gives none: only "particular bad requests" carry one.
type apiError struct {
	ErrorCode    int    `json:"errorCode,omitempty"`
	ErrorMessage string `json:"errorMessage"`
}

// writeError answers status with the code's description, or with the status text
// when code is 0.
func writeError(w http.ResponseWriter, status int, code vnccloud.ErrorCode) {
	if code != 0 {
		writeJSON(w, status, apiError{ErrorCode: int(code), ErrorMessage: code.Description()})
		return
	}
	writeMessage(w, status, http.StatusText(status))
}

// writeMessage answers status with an errorMessage and no errorCode.
func writeMessage(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, apiError{ErrorMessage: msg})
}
