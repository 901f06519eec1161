package server

import (
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"

	"github.com/vncfleet/vncfleet/fleet"
	"github.com/vncfleet/vncfleet/internal/store"
)

func (s *Server) upload(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	mode, err := fleet.ParseMode(q.Get("mode"))
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error(), nil)
		return
	}
	dryRun, ok := queryBool(w, r, "dry_run")
	if !ok {
		return
	}
	maxDeletions := -1
	if v := q.Get("max_deletions"); v != "" {
		if maxDeletions, err = strconv.Atoi(v); err != nil || maxDeletions < 0 {
			writeError(w, http.StatusBadRequest, "max_deletions must be a whole number ≥ 0", nil)
			return
		}
	}
	fleetName := q.Get("fleet")
	if fleetName == "" {
		fleetName = "default"
	}
	if err := validateFleetName(fleetName); err != nil {
		writeError(w, http.StatusBadRequest, err.Error(), nil)
		return
	}
	if r.ContentLength > s.cfg.MaxUploadBytes {
		writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("manifest larger than %d bytes", s.cfg.MaxUploadBytes), nil)
		return
	}
	body, err := manifestBody(w, r, s.cfg.MaxUploadBytes)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error(), nil)
		return
	}
	res, err := s.cfg.Store.Ingest(r.Context(), store.IngestRequest{
		Fleet:               fleetName,
		Mode:                mode,
		DryRun:              dryRun,
		Uploader:            caller(r).Name,
		MaxDeletions:        maxDeletions,
		MaxDeletionsPercent: s.cfg.MaxDeletionsPercent,
		MaxDeletionsMin:     s.cfg.MaxDeletionsMin,
		Body:                body,
		Enqueue:             s.cfg.Enqueue,
		EnqueueConsoleURLs:  s.cfg.EnqueueConsoleURLs,
		EnqueueApply:        s.cfg.EnqueueApply,
		InlineApplyRows:     s.cfg.InlineApplyRows,
	})
	var problems *fleet.Problems
	var guard *store.DeletionGuardError
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &tooLarge):
		writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("manifest larger than %d bytes", tooLarge.Limit), nil)
	case errors.As(err, &problems):
		list := make([]string, 0, len(problems.List))
		details := make([]map[string]any, 0, len(problems.List))
		for _, p := range problems.List {
			list = append(list, p.Error())
			details = append(details, map[string]any{"line": p.Line, "column": p.Column, "columnName": p.ColumnName, "reason": p.Reason})
		}
		writeError(w, http.StatusUnprocessableEntity, fmt.Sprintf("manifest rejected: %d problems", problems.Total),
			map[string]any{"problems": list, "details": details, "total": problems.Total})
	case errors.As(err, &guard):
		writeError(w, http.StatusConflict, guard.Error()+"; pass max_deletions to allow it",
			map[string]any{"plan": guard.Plan, "maxDeletions": guard.MaxDeletions})
	case err != nil:
		s.internalError(w, r, err)
	case dryRun:
		writeJSON(w, http.StatusOK, map[string]any{"dryRun": true, "plan": res.Plan})
	case res.Unchanged:
		writeJSON(w, http.StatusOK, map[string]any{"manifest": res.Manifest, "plan": res.Plan, "unchanged": true})
	default:
		s.cfg.Logger.Info("manifest stored", "manifest", res.Manifest.ID, "fleet", fleetName, "rows", res.Manifest.Rows,
			"creates", res.Plan.Creates, "updates", res.Plan.Updates, "deletes", res.Plan.Deletes, "uploader", caller(r).Name)
		writeJSON(w, http.StatusCreated, map[string]any{"manifest": res.Manifest, "plan": res.Plan})
	}
}

// manifestBody is the CSV of an upload: the request body itself, or the first file
// part of a multipart form. Either way it is streamed, never buffered whole.
func manifestBody(w http.ResponseWriter, r *http.Request, limit int64) (io.Reader, error) {
	r.Body = http.MaxBytesReader(w, r.Body, limit)
	mediaType, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || !strings.HasPrefix(mediaType, "multipart/") {
		return r.Body, nil
	}
	mr, err := r.MultipartReader()
	if err != nil {
		return nil, fmt.Errorf("multipart body: %w", err)
	}
	for {
		part, err := mr.NextPart()
		if err == io.EOF {
			return nil, errors.New("multipart body has no file part")
		}
		if err != nil {
			return nil, fmt.Errorf("multipart body: %w", err)
		}
		if part.FileName() != "" || part.FormName() == "manifest" {
			return part, nil
		}
	}
}

// queryBool reads an optional boolean query parameter (absent is false). A malformed
// one is answered 400 naming it, and ok is false.
func queryBool(w http.ResponseWriter, r *http.Request, name string) (value, ok bool) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return false, true
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		writeError(w, http.StatusBadRequest, name+": "+err.Error(), nil)
		return false, false
	}
	return b, true
}

func (s *Server) manifestID(w http.ResponseWriter, r *http.Request) (int64, bool) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil || id <= 0 {
		writeError(w, http.StatusBadRequest, "manifest id must be a positive number", nil)
		return 0, false
	}
	return id, true
}

func (s *Server) listManifests(w http.ResponseWriter, r *http.Request) {
	ms, err := s.cfg.Store.ListManifests(r.Context(), r.URL.Query().Get("fleet"), 100)
	if err != nil {
		s.internalError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, ms)
}

func (s *Server) manifestProgress(w http.ResponseWriter, r *http.Request) {
	id, ok := s.manifestID(w, r)
	if !ok {
		return
	}
	// ?no_groups=true leaves out the counts by group (a waiting client's progress bar
	// does not draw them).
	noGroups, ok := queryBool(w, r, "no_groups")
	if !ok {
		return
	}
	p, err := s.cfg.Store.ManifestProgress(r.Context(), id, !noGroups)
	if errors.Is(err, store.ErrNotFound) {
		writeError(w, http.StatusNotFound, err.Error(), nil)
		return
	}
	if err != nil {
		s.internalError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, p)
}

func (s *Server) manifestReport(w http.ResponseWriter, r *http.Request) {
	id, ok := s.manifestID(w, r)
	if !ok {
		return
	}
	if _, err := s.cfg.Store.GetManifest(r.Context(), id); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			writeError(w, http.StatusNotFound, err.Error(), nil)
			return
		}
		s.internalError(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "text/csv; charset=utf-8")
	cw := csv.NewWriter(w)
	_ = cw.Write([]string{"device_id", "status", "cloud_address", "error", "vnc_url"})
	for row, err := range s.cfg.Store.Report(r.Context(), id) {
		if err != nil {
			// Headers are gone already; a cut-short CSV and the log are all we can do.
			s.cfg.Logger.Error("report failed", "manifest", id, "err", err)
			return
		}
		_ = cw.Write([]string{row.DeviceID, row.Status, row.CloudAddress, row.Error, row.VNCURL})
	}
	cw.Flush()
}

func (s *Server) status(w http.ResponseWriter, r *http.Request) {
	st, err := s.cfg.Store.Status(r.Context(), r.URL.Query().Get("fleet"))
	if err != nil {
		s.internalError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, st)
}

func (s *Server) export(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	secrets, ok := queryBool(w, r, "secrets")
	if !ok {
		return
	}
	who := caller(r)
	if secrets {
		if !who.has(RoleSecrets) {
			writeError(w, http.StatusForbidden, "token "+who.Name+" lacks the secrets role", nil)
			return
		}
		// Audited before the first password leaves, so a reveal is never unrecorded.
		if err := s.cfg.Store.Audit(r.Context(), who.Name, "export_passwords", map[string]any{"fleet": q.Get("fleet"), "remote": r.RemoteAddr}); err != nil {
			s.internalError(w, r, err)
			return
		}
	}
	w.Header().Set("Content-Type", "text/csv; charset=utf-8")
	cw := csv.NewWriter(w)
	_ = cw.Write(fleet.ExportHeader)
	for row, err := range s.cfg.Store.Export(r.Context(), q.Get("fleet"), secrets) {
		if err != nil {
			s.cfg.Logger.Error("export failed", "err", err)
			return
		}
		_ = cw.Write([]string{row.DeviceID, row.Action, row.Status, row.CloudAddress, row.CloudPassword,
			fleet.JoinList(row.Groups), fleet.JoinList(row.AllowGroups), fleet.JoinList(row.AllowDevices), row.VNCURL, row.LastError})
	}
	cw.Flush()
}

func (s *Server) credentials(w http.ResponseWriter, r *http.Request) {
	fleetName, deviceID := r.PathValue("fleet"), r.PathValue("device")
	if err := s.cfg.Store.Audit(r.Context(), caller(r).Name, "reveal_password",
		map[string]any{"fleet": fleetName, "device": deviceID, "remote": r.RemoteAddr}); err != nil {
		s.internalError(w, r, err)
		return
	}
	c, err := s.cfg.Store.GetCredentials(r.Context(), fleetName, deviceID)
	if errors.Is(err, store.ErrNotFound) {
		writeError(w, http.StatusNotFound, err.Error(), nil)
		return
	}
	if err != nil {
		s.internalError(w, r, err)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, c)
}

func (s *Server) retry(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	var manifestID int64
	if v := q.Get("manifest"); v != "" {
		var err error
		if manifestID, err = strconv.ParseInt(v, 10, 64); err != nil || manifestID <= 0 {
			writeError(w, http.StatusBadRequest, "manifest must be a positive number", nil)
			return
		}
	}
	n, key, err := s.cfg.Store.RetryFailed(r.Context(), q.Get("fleet"), manifestID, s.cfg.Enqueue)
	if err != nil {
		s.internalError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"retried": n, "key": key})
}

func (s *Server) rotate(w http.ResponseWriter, r *http.Request) {
	if s.cfg.Lifecycle == nil {
		writeError(w, http.StatusNotImplemented, "rotation is not configured", nil)
		return
	}
	all, ok := queryBool(w, r, "all")
	if !ok {
		return
	}
	n, key, err := s.cfg.Lifecycle.Rotate(r.Context(), r.URL.Query().Get("fleet"), all)
	if err != nil {
		s.internalError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"scheduled": n, "key": key})
}

func (s *Server) reconcile(w http.ResponseWriter, r *http.Request) {
	if s.cfg.Lifecycle == nil {
		writeError(w, http.StatusNotImplemented, "reconciliation is not configured", nil)
		return
	}
	dryRun, ok := queryBool(w, r, "dry_run")
	if !ok {
		return
	}
	report, err := s.cfg.Lifecycle.Reconcile(r.Context(), dryRun)
	var withStatus interface{ HTTPStatus() int }
	if errors.As(err, &withStatus) {
		writeError(w, withStatus.HTTPStatus(), err.Error(), nil)
		return
	}
	if err != nil {
		s.internalError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, report)
}

func (s *Server) workProgress(w http.ResponseWriter, r *http.Request) {
	p, err := s.cfg.Store.WorkProgress(r.Context(), r.PathValue("key"))
	if err != nil {
		s.internalError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, p)
}

// validateFleetName keeps fleet names printable and short: they appear in URLs,
// logs and file names of reports.
func validateFleetName(name string) error {
	if len(name) == 0 || len(name) > 64 {
		return errors.New("fleet name must have 1 to 64 characters")
	}
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return fmt.Errorf("fleet name %q may only hold letters, digits, '-', '_' and '.'", name)
		}
	}
	return nil
}
