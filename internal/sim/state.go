package sim

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/vncfleet/vncfleet/vnccloud"
)

// State is the whole simulator as GET /sim/state shows it: the truth tests check
// vncfleet against. It holds passwords: the simulator's own, never real ones.
type State struct {
	Accounts      map[string]AccountState `json:"accounts"`      // by API key
	PeakPerSecond int                     `json:"peakPerSecond"` // most API requests in any sliding second, all accounts
	Requests      int64                   `json:"requests"`      // API requests, every one under /cloud/1.1
	Faults        Faults                  `json:"faults"`        // the knobs now
	Injected      Injected                `json:"injected"`      // the faults injected so far, all accounts
}

// AccountState is one API key's addresses and counters. Requests, PeakPerSecond and
// Counts count the requests that carried this account's valid credentials, those
// then refused by a fault or a check included.
type AccountState struct {
	Addresses     []AddressState   `json:"addresses"`     // live addresses in creation order
	Creates       int64            `json:"creates"`       // committed creates, lost answers and CreateAddress included
	Requests      int64            `json:"requests"`      // API requests
	PeakPerSecond int              `json:"peakPerSecond"` // most API requests in any sliding second
	Counts        map[string]int64 `json:"counts"`        // per operation: create, list, ready, get, update, reset, delete
}

// AddressState is one address with its current password and spec, the spec in the
// API's JSON shape.
type AddressState struct {
	CloudAddress   string                  `json:"cloudAddress"`
	Password       string                  `json:"cloudPassword"`
	Version        int                     `json:"version"`
	Ready          bool                    `json:"ready"`
	AllowedActions []string                `json:"allowedActions"`
	Groups         []string                `json:"groups,omitempty"`
	AccessControl  *vnccloud.AccessControl `json:"accessControl,omitempty"`
	CreatedAt      time.Time               `json:"createdAt"`
	ChangedAt      time.Time               `json:"changedAt"` // last create, change or reset
	ReadyAt        time.Time               `json:"readyAt"`   // when /ready answers none: ChangedAt plus the delay drawn for it
}

// Spec is the address's spec as the vnccloud package models it.
func (a AddressState) Spec() vnccloud.Spec {
	var action vnccloud.Action
	if len(a.AllowedActions) > 0 {
		action = vnccloud.Action(a.AllowedActions[0])
	}
	return vnccloud.Spec{Action: action, Groups: a.Groups, AccessControl: a.AccessControl}
}

// State takes a snapshot; it shares nothing with the running simulator.
func (s *Server) State() State {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := State{Accounts: make(map[string]AccountState, len(s.accounts)), PeakPerSecond: s.global.peak,
		Requests: s.requests, Faults: s.faults, Injected: s.injected}
	for key, acct := range s.accounts {
		as := AccountState{Addresses: make([]AddressState, 0, len(acct.order)-acct.deleted), Creates: acct.creates,
			Requests: acct.requests, PeakPerSecond: acct.window.peak, Counts: make(map[string]int64, len(acct.counts))}
		for op, n := range acct.counts {
			as.Counts[op] = n
		}
		for _, a := range acct.order {
			if a.deleted {
				continue
			}
			spec := cloneSpec(a.spec)
			as.Addresses = append(as.Addresses, AddressState{
				CloudAddress: a.addr, Password: a.password, Version: a.version, Ready: s.ready(a),
				AllowedActions: []string{string(spec.Action)}, Groups: spec.Groups, AccessControl: spec.AccessControl,
				CreatedAt: a.createdAt, ChangedAt: a.changedAt, ReadyAt: a.readyAt,
			})
		}
		st.Accounts[key] = as
	}
	return st
}

// find returns an account's address. Callers hold s.mu.
func (s *Server) find(apiKey, addr string) (*address, error) {
	acct, ok := s.accounts[apiKey]
	if !ok {
		return nil, fmt.Errorf("%w: %s", ErrUnknownAccount, apiKey)
	}
	a, ok := s.lookup(acct, addr)
	if !ok {
		return nil, ErrNoSuchAddress
	}
	return a, nil
}

// ForceSpec changes an address behind its owner's back (drift), as a PUT would: the
// version is bumped and readiness is pending again. spec must be valid
// (*vnccloud.ValidationError otherwise); ErrUnknownAccount and ErrNoSuchAddress name
// what is missing.
func (s *Server) ForceSpec(apiKey, addr string, spec vnccloud.Spec) error {
	if err := spec.Validate(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	a, err := s.find(apiKey, addr)
	if err != nil {
		return err
	}
	s.change(a, spec)
	return nil
}

// ForceDelete deletes an address behind its owner's back.
func (s *Server) ForceDelete(apiKey, addr string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	a, err := s.find(apiKey, addr)
	if err != nil {
		return err
	}
	s.remove(a)
	return nil
}

// CreateAddress makes an address outside vncfleet (a "foreign" one), as a create
// would, without a request: it counts in Creates but not in Requests.
func (s *Server) CreateAddress(apiKey string, spec vnccloud.Spec) (address, password string, err error) {
	if err := spec.Validate(); err != nil {
		return "", "", err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	acct, ok := s.accounts[apiKey]
	if !ok {
		return "", "", fmt.Errorf("%w: %s", ErrUnknownAccount, apiKey)
	}
	a := s.create(acct, spec)
	return a.addr, a.password, nil
}

// faultsJSON is Faults on the wire: latency as a Go duration string ("50ms"). A
// number is read as nanoseconds, time.Duration's own JSON. Absent fields are nil, so
// POST /sim/faults changes only what it names.
type faultsJSON struct {
	FailRate   *float64        `json:"failRate,omitempty"`
	LostRate   *float64        `json:"lostRate,omitempty"`
	DropRate   *float64        `json:"dropRate,omitempty"`
	GarbleRate *float64        `json:"garbleRate,omitempty"`
	Rate       *int            `json:"rate,omitempty"`
	Latency    json.RawMessage `json:"latency,omitempty"`
}

// MarshalJSON writes latency as a duration string.
func (f Faults) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		FailRate   float64 `json:"failRate"`
		LostRate   float64 `json:"lostRate"`
		DropRate   float64 `json:"dropRate"`
		GarbleRate float64 `json:"garbleRate"`
		Rate       int     `json:"rate"`
		Latency    string  `json:"latency"`
	}{f.FailRate, f.LostRate, f.DropRate, f.GarbleRate, f.Rate, f.Latency.String()})
}

// UnmarshalJSON reads what MarshalJSON writes; fields absent keep their value.
func (f *Faults) UnmarshalJSON(data []byte) error {
	var in faultsJSON
	if err := json.Unmarshal(data, &in); err != nil {
		return err
	}
	if in.FailRate != nil {
		f.FailRate = *in.FailRate
	}
	if in.LostRate != nil {
		f.LostRate = *in.LostRate
	}
	if in.DropRate != nil {
		f.DropRate = *in.DropRate
	}
	if in.GarbleRate != nil {
		f.GarbleRate = *in.GarbleRate
	}
	if in.Rate != nil {
		f.Rate = *in.Rate
	}
	if len(in.Latency) > 0 {
		var str string
		var ns int64
		switch {
		case json.Unmarshal(in.Latency, &str) == nil:
			d, err := time.ParseDuration(str)
			if err != nil {
				return fmt.Errorf("latency: %w", err)
			}
			f.Latency = d
		case json.Unmarshal(in.Latency, &ns) == nil:
			f.Latency = time.Duration(ns)
		default:
			return errors.New("latency: want a duration such as \"50ms\"")
		}
	}
	return nil
}

func (s *Server) serveState(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, s.State())
}

func (s *Server) serveGetFaults(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, s.Faults())
}

// serveSetFaults changes the knobs the body names, e.g. {"failRate":0.1,"latency":"20ms"},
// and answers the knobs now in force.
func (s *Server) serveSetFaults(w http.ResponseWriter, r *http.Request) {
	// Read-modify-write under one lock, so concurrent POSTs naming different knobs
	// do not undo each other.
	s.mu.Lock()
	defer s.mu.Unlock()
	f := s.faults
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody)).Decode(&f); err != nil {
		writeMessage(w, http.StatusBadRequest, "faults: "+err.Error())
		return
	}
	if err := checkFaults(f); err != nil {
		writeMessage(w, http.StatusBadRequest, err.Error())
		return
	}
	s.faults = f
	s.cfg.Logger.Info("sim: faults changed", "fail_rate", f.FailRate, "lost_rate", f.LostRate, "drop_rate", f.DropRate,
		"garble_rate", f.GarbleRate, "rate", f.Rate, "latency", f.Latency)
	writeJSON(w, http.StatusOK, f)
}

// decodeSpec reads an API spec body for the /sim/ endpoints (no headers checked: they
// are not the API).
func decodeSpec(r *http.Request) (vnccloud.Spec, error) {
	var raw vnccloud.RawSpec
	if err := json.NewDecoder(io.LimitReader(r.Body, maxBody)).Decode(&raw); err != nil {
		return vnccloud.Spec{}, fmt.Errorf("body: %w", err)
	}
	if err := vnccloud.ValidateRaw(raw); err != nil {
		return vnccloud.Spec{}, err
	}
	return specFromRaw(raw), nil
}

// writeSimError answers a /sim/ endpoint's failure: 404 for what does not exist, 400
// for a bad body.
func writeSimError(w http.ResponseWriter, err error) {
	status := http.StatusBadRequest
	if errors.Is(err, ErrUnknownAccount) || errors.Is(err, ErrNoSuchAddress) {
		status = http.StatusNotFound
	}
	writeMessage(w, status, err.Error())
}

// serveForce is POST /sim/accounts/{key}/addresses/{addr}/force, body an API spec.
func (s *Server) serveForce(w http.ResponseWriter, r *http.Request) {
	spec, err := decodeSpec(r)
	if err == nil {
		err = s.ForceSpec(r.PathValue("key"), r.PathValue("addr"), spec)
	}
	if err != nil {
		writeSimError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// serveForceDelete is DELETE /sim/accounts/{key}/addresses/{addr}.
func (s *Server) serveForceDelete(w http.ResponseWriter, r *http.Request) {
	if err := s.ForceDelete(r.PathValue("key"), r.PathValue("addr")); err != nil {
		writeSimError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// serveForeignCreate is POST /sim/accounts/{key}/addresses, body an API spec: a
// foreign address, answered like a create.
func (s *Server) serveForeignCreate(w http.ResponseWriter, r *http.Request) {
	spec, err := decodeSpec(r)
	var addr, pw string
	if err == nil {
		addr, pw, err = s.CreateAddress(r.PathValue("key"), spec)
	}
	if err != nil {
		writeSimError(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, credentials{CloudAddress: addr, CloudPassword: pw})
}
