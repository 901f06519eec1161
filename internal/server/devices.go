package server

import (
	"encoding/csv"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/vncfleet/vncfleet/fleet"
	"github.com/vncfleet/vncfleet/internal/lifecycle"
	"github.com/vncfleet/vncfleet/internal/store"
)

// failuresLimit bounds the failed devices listed in JSON; the fix-up CSV has them all.
const failuresLimit = 1000

// me answers who the token is and what it may do, so a client (the console) shows
// only what the token can use.
func (s *Server) me(w http.ResponseWriter, r *http.Request) {
	who := caller(r)
	roles := []string{}
	for _, role := range []string{RoleRead, RoleUpload, RoleSecrets, RoleAdmin} {
		if who.has(role) {
			roles = append(roles, role)
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"name": who.Name, "roles": roles})
}

func (s *Server) device(w http.ResponseWriter, r *http.Request) {
	d, err := s.cfg.Store.GetDevice(r.Context(), r.PathValue("fleet"), r.PathValue("device"))
	if !s.found(w, r, err) {
		return
	}
	// The console URL opens the device's screen: it is for the secrets role only.
	if !caller(r).has(RoleSecrets) {
		d.VNCURL = ""
	}
	answer := deviceAnswer{DeviceDetail: d}
	// Only a device holding a password is rotated; lifecycle states when.
	if d.HasPassword && d.State == string(fleet.StatePresent) {
		f := s.rotationPolicy().NextRotation(s.cfg.RotationSchedule, d.PasswordSetAt, time.Now())
		answer.Rotation = &f
	}
	writeJSON(w, http.StatusOK, answer)
}

// deviceAnswer is GET /v1/fleets/{fleet}/devices/{device}: the device, and when the
// schedule rotates its password next.
type deviceAnswer struct {
	*store.DeviceDetail
	Rotation *lifecycle.Forecast `json:"rotation,omitempty"`
}

// found answers 404 for store.ErrNotFound and 500 for other errors; it reports
// whether err was nil.
func (s *Server) found(w http.ResponseWriter, r *http.Request, err error) bool {
	switch {
	case errors.Is(err, store.ErrNotFound):
		writeError(w, http.StatusNotFound, err.Error(), nil)
	case err != nil:
		s.internalError(w, r, err)
	default:
		return true
	}
	return false
}

func (s *Server) manifestFailures(w http.ResponseWriter, r *http.Request) {
	id, ok := s.manifestID(w, r)
	if !ok {
		return
	}
	if _, err := s.cfg.Store.GetManifest(r.Context(), id); !s.found(w, r, err) {
		return
	}
	list, err := s.cfg.Store.Failures(r.Context(), id, failuresLimit)
	if !s.found(w, r, err) {
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"manifest": id, "failures": list})
}

// manifestFixup is the CSV of a manifest's failed rows as they were uploaded (spec
// and metadata columns), plus an error column: correct them and upload the file again.
func (s *Server) manifestFixup(w http.ResponseWriter, r *http.Request) {
	id, ok := s.manifestID(w, r)
	if !ok {
		return
	}
	if _, err := s.cfg.Store.GetManifest(r.Context(), id); !s.found(w, r, err) {
		return
	}
	meta, err := s.cfg.Store.FixupMetadataColumns(r.Context(), id)
	if !s.found(w, r, err) {
		return
	}
	w.Header().Set("Content-Type", "text/csv; charset=utf-8")
	w.Header().Set("Content-Disposition", `attachment; filename="manifest-`+strconv.FormatInt(id, 10)+`-fixup.csv"`)
	cw := csv.NewWriter(w)
	header := append(append(append([]string{}, store.FixupColumns...), meta...), "error")
	_ = cw.Write(header)
	for row, err := range s.cfg.Store.FixupRows(r.Context(), id) {
		if err != nil {
			s.cfg.Logger.Error("fix-up CSV failed", "manifest", id, "err", err)
			return
		}
		d := row.Device
		rec := []string{d.DeviceID, d.Action, fleet.JoinList(d.Groups), fleet.JoinList(d.AllowGroups),
			fleet.JoinList(d.AllowDevices), d.State, d.ZenlayerInstanceID}
		for _, k := range meta {
			rec = append(rec, d.Metadata[k])
		}
		_ = cw.Write(append(rec, row.Error))
	}
	cw.Flush()
}
