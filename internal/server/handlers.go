package server

import (
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"slices"
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
	readerOpts, err := s.readerOptions(q)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error(), nil)
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
		Reader:              readerOpts,
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
		for _, p := range problems.List {
			list = append(list, p.Error())
		}
		writeError(w, http.StatusUnprocessableEntity, "manifest rejected: "+fleet.Plural(problems.Total, "problem"),
			map[string]any{"problems": list, "total": problems.Total})
	case errors.As(err, &guard):
		writeError(w, http.StatusConflict, guard.Error(),
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

// readerOptions are the manifest reader's options for an upload: the server's limits,
// and the separator and encoding the query names (as `upload --separator ';'
// --encoding windows-1252` sends them).
func (s *Server) readerOptions(q url.Values) (fleet.ReaderOptions, error) {
	opts := s.cfg.ManifestLimits
	var err error
	if opts.Separator, err = fleet.ParseSeparator(q.Get("separator")); err != nil {
		return opts, err
	}
	if opts.Encoding, err = fleet.ParseEncoding(q.Get("encoding")); err != nil {
		return opts, err
	}
	return opts, nil
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

// knownFleet answers 404 and returns false when the query names a fleet that does
// not exist ("" names every fleet); every route that takes ?fleet= checks it, so
// that a typo is an error rather than zero devices.
func (s *Server) knownFleet(w http.ResponseWriter, r *http.Request) bool {
	name := r.URL.Query().Get("fleet")
	if name == "" {
		return true
	}
	err := s.cfg.Store.CheckFleet(r.Context(), name)
	switch {
	case errors.Is(err, store.ErrNotFound):
		writeError(w, http.StatusNotFound, err.Error(), nil)
		return false
	case err != nil:
		s.internalError(w, r, err)
		return false
	}
	return true
}

func (s *Server) listManifests(w http.ResponseWriter, r *http.Request) {
	if !s.knownFleet(w, r) {
		return
	}
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
		_ = cw.Write([]string{row.DeviceID, row.Status, row.CloudAddress, fleet.SpreadsheetSafe(row.Error), row.VNCURL})
	}
	cw.Flush()
}

func (s *Server) status(w http.ResponseWriter, r *http.Request) {
	if !s.knownFleet(w, r) {
		return
	}
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
	metadata, ok := queryBool(w, r, "metadata")
	if !ok || !s.knownFleet(w, r) {
		return
	}
	query := store.ExportQuery{Fleet: q.Get("fleet"), Secrets: secrets, Metadata: metadata}
	if v := q.Get("status"); v != "" {
		for _, name := range strings.Split(v, ",") {
			st, err := fleet.ParseStatus(strings.TrimSpace(name))
			if err != nil {
				writeError(w, http.StatusBadRequest, fmt.Sprintf("status: %v; the statuses are %s", err, statusNames()), nil)
				return
			}
			query.Statuses = append(query.Statuses, string(st))
		}
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
	var metaCols []string
	if metadata {
		var err error
		if metaCols, err = s.cfg.Store.ExportMetadataColumns(r.Context(), query); err != nil {
			s.internalError(w, r, err)
			return
		}
	}
	w.Header().Set("Content-Type", "text/csv; charset=utf-8")
	cw := csv.NewWriter(w)
	_ = cw.Write(exportHeader(metaCols))
	record := make([]string, 0, len(fleet.ExportHeader)+len(metaCols))
	for row, err := range s.cfg.Store.Export(r.Context(), query) {
		if err != nil {
			s.cfg.Logger.Error("export failed", "err", err)
			return
		}
		// Cells from users or remote errors are defused for spreadsheets; device ids
		// cannot begin like a formula, and addresses, passwords and URLs are machine-made.
		record = append(record[:0], row.DeviceID, row.Action, row.Status, row.CloudAddress, row.CloudPassword,
			fleet.SpreadsheetSafeList(row.Groups), fleet.SpreadsheetSafeList(row.AllowGroups), fleet.JoinList(row.AllowDevices),
			row.VNCURL, fleet.SpreadsheetSafe(row.LastError))
		for _, name := range metaCols {
			record = append(record, fleet.SpreadsheetSafe(row.Metadata[name]))
		}
		_ = cw.Write(record)
	}
	cw.Flush()
}

// exportHeader is the contract's export header, then the metadata columns named as
// in the manifests; one that would repeat a contract column is prefixed "metadata_".
func exportHeader(metaCols []string) []string {
	header := slices.Clone(fleet.ExportHeader)
	for _, name := range metaCols {
		if slices.Contains(fleet.ExportHeader, name) {
			name = "metadata_" + name
		}
		header = append(header, fleet.SpreadsheetSafe(name))
	}
	return header
}

func statusNames() string {
	names := make([]string, len(fleet.Statuses))
	for i, st := range fleet.Statuses {
		names[i] = string(st)
	}
	return strings.Join(names, ", ")
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
		if _, err := s.cfg.Store.GetManifest(r.Context(), manifestID); err != nil {
			if errors.Is(err, store.ErrNotFound) {
				writeError(w, http.StatusNotFound, err.Error(), nil)
				return
			}
			s.internalError(w, r, err)
			return
		}
	}
	now, ok := queryBool(w, r, "now")
	if !ok || !s.knownFleet(w, r) {
		return
	}
	n, key, err := s.cfg.Store.RetryFailed(r.Context(), q.Get("fleet"), manifestID, now, s.cfg.Enqueue)
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
	if !ok || !s.knownFleet(w, r) {
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
