package server

import (
	"bufio"
	"cmp"
	"context"
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
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/vncfleet/vncfleet/fleet"
	"github.com/vncfleet/vncfleet/internal/store"
	"github.com/vncfleet/vncfleet/internal/tracing"
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
	if _, ok := checkFleet(w, r, fleetName); !ok {
		return
	}
	if r.ContentLength > s.cfg.MaxUploadBytes {
		writeError(w, http.StatusRequestEntityTooLarge, "manifest larger than "+fleet.Plural(s.cfg.MaxUploadBytes, "byte"), nil)
		return
	}
	// Each upload streams its body into the database over a connection of the pool
	// that the workers share, for as long as the client takes: only so many at once.
	select {
	case s.uploadSlots <- struct{}{}:
		defer func() { <-s.uploadSlots }()
	case <-time.After(s.cfg.UploadIdleTimeout):
		w.Header().Set("Retry-After", "10")
		writeError(w, http.StatusServiceUnavailable, fmt.Sprintf(
			"this server already streams as many uploads as it may at once (%d): nothing was stored; try again", cap(s.uploadSlots)), nil)
		return
	case <-r.Context().Done():
		return
	}
	readerOpts, err := s.readerOptions(q)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error(), nil)
		return
	}
	body, err := manifestBody(w, r, s.cfg.MaxUploadBytes, s.cfg.UploadIdleTimeout)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error(), nil)
		return
	}
	start := time.Now()
	ctx, span := tracing.Tracer().Start(r.Context(), "upload", trace.WithAttributes(
		attribute.String("vncfleet.fleet", fleetName), attribute.String("vncfleet.mode", string(mode)), attribute.Bool("vncfleet.dry_run", dryRun)))
	defer span.End()
	res, err := s.cfg.Store.Ingest(ctx, store.IngestRequest{
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
	if err == nil && res.Manifest != nil {
		span.SetAttributes(attribute.Int64("vncfleet.manifest", res.Manifest.ID), attribute.Int("vncfleet.rows", res.Manifest.Rows))
	}
	var problems *fleet.Problems
	var guard *store.DeletionGuardError
	var tooLarge *http.MaxBytesError
	switch {
	case errors.Is(err, ErrUploadIdle):
		w.Header().Set("Connection", "close")
		writeError(w, http.StatusRequestTimeout,
			fmt.Sprintf("the upload sent nothing for %s: nothing was stored", s.cfg.UploadIdleTimeout), nil)
	case errors.Is(err, store.ErrFleetBusy):
		w.Header().Set("Retry-After", "5")
		writeError(w, http.StatusServiceUnavailable,
			fmt.Sprintf("fleet %q is busy with another upload for too long: nothing was stored; try again", fleetName), nil)
	case errors.As(err, &tooLarge):
		writeError(w, http.StatusRequestEntityTooLarge, "manifest larger than "+fleet.Plural(tooLarge.Limit, "byte"), nil)
	case errors.As(err, &problems):
		if s.cfg.ObserveUpload != nil && !dryRun {
			s.cfg.ObserveUpload(store.Plan{}, problems.Total)
		}
		list := make([]string, 0, len(problems.List))
		details := make([]map[string]any, 0, len(problems.List))
		for _, p := range problems.List {
			list = append(list, p.Error())
			details = append(details, map[string]any{"line": p.Line, "column": p.Column, "columnName": p.ColumnName, "reason": p.Reason})
		}
		writeError(w, http.StatusUnprocessableEntity, "manifest rejected: "+fleet.Plural(problems.Total, "problem"),
			map[string]any{"problems": list, "details": details, "total": problems.Total})
	case errors.As(err, &guard):
		writeError(w, http.StatusConflict, fmt.Sprintf("%v, so nothing was changed; if every deletion of the plan is intended, send the manifest again with max_deletions=%d",
			guard, guard.Plan.Deletes), map[string]any{"plan": guard.Plan, "maxDeletions": guard.MaxDeletions})
	case err != nil:
		s.internalError(w, r, err)
	case dryRun:
		writeJSON(w, http.StatusOK, map[string]any{"dryRun": true, "plan": res.Plan})
	case res.Unchanged:
		writeJSON(w, http.StatusOK, map[string]any{"manifest": res.Manifest, "plan": res.Plan, "unchanged": true})
	default:
		if s.cfg.ObserveUpload != nil {
			s.cfg.ObserveUpload(res.Plan, 0)
		}
		s.cfg.Logger.Info("manifest stored", "manifest", res.Manifest.ID, "fleet", fleetName, "rows", res.Manifest.Rows,
			"creates", res.Plan.Creates, "updates", res.Plan.Updates, "deletes", res.Plan.Deletes, "unchanged", res.Plan.Unchanged,
			"uploader", caller(r).Name, "duration", time.Since(start).Round(time.Millisecond))
		if res.Applied {
			// A small manifest reaches its devices in its upload; a large one is
			// logged by the job that applies it.
			s.cfg.Logger.Info("manifest applied", "manifest", res.Manifest.ID, "fleet", fleetName, "batches", 0,
				"duration", time.Since(start).Round(time.Millisecond))
		}
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
func manifestBody(w http.ResponseWriter, r *http.Request, limit int64, idle time.Duration) (io.Reader, error) {
	r.Body = http.MaxBytesReader(w, &idleBody{ReadCloser: r.Body, rc: http.NewResponseController(w), timeout: idle}, limit)
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

// queryLimit reads the optional page size `limit`, def when absent, within 1..most.
// An unreadable or out-of-range one is answered 400 naming the range, and ok is false.
func queryLimit(w http.ResponseWriter, r *http.Request, def, most int) (limit int, ok bool) {
	v := r.URL.Query().Get("limit")
	if v == "" {
		return def, true
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > most {
		writeError(w, http.StatusBadRequest, "limit must be 1.."+strconv.Itoa(most), nil)
		return 0, false
	}
	return n, true
}

// manifestID reads the {id} of a manifest route. A manifest of a fleet beyond a
// fleet-limited token is answered 404, as if it did not exist.
func (s *Server) manifestID(w http.ResponseWriter, r *http.Request) (int64, bool) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil || id <= 0 {
		writeError(w, http.StatusBadRequest, "manifest id must be a positive number", nil)
		return 0, false
	}
	m, err := s.cfg.Store.GetManifest(r.Context(), id)
	if err == nil && !caller(r).mayUse(m.Fleet) {
		err = fmt.Errorf("manifest %d: %w", id, store.ErrNotFound)
	}
	if errors.Is(err, store.ErrNotFound) {
		writeError(w, http.StatusNotFound, err.Error(), nil)
		return 0, false
	}
	if err != nil {
		s.internalError(w, r, err)
		return 0, false
	}
	return id, true
}

// fleetParam is the fleet a fleet-wide route acts on, from ?fleet= ("" is every
// fleet), checked by the one rule of every route that takes it: a fleet outside the
// token's scope is 403 (fleetScope), one that does not exist is 404 (knownFleet), so
// that a typo is an error rather than zero devices. ok is false when the request was
// answered.
func (s *Server) fleetParam(w http.ResponseWriter, r *http.Request) (name string, ok bool) {
	name, ok = fleetScope(w, r)
	return name, ok && s.knownFleet(w, r, name)
}

// knownFleet answers 404 and returns false when name is a fleet that does not exist
// ("" names every fleet).
func (s *Server) knownFleet(w http.ResponseWriter, r *http.Request, name string) bool {
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
	fleetName, ok := s.fleetParam(w, r)
	if !ok {
		return
	}
	ms, err := s.cfg.Store.ListManifests(r.Context(), fleetName, 100)
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
	groups, ok := manifestGroupQuery(w, r)
	if !ok {
		return
	}
	p, err := s.cfg.Store.ManifestProgress(r.Context(), id, groups)
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

// manifestGroupQuery reads the group page of a manifest's progress (and of its
// stream): the page groupQuery reads, or none at all with no_groups=true (a waiting
// client's progress bar draws no group, and skips even their count).
func manifestGroupQuery(w http.ResponseWriter, r *http.Request) (*store.GroupQuery, bool) {
	noGroups, ok := queryBool(w, r, "no_groups")
	if !ok {
		return nil, false
	}
	if noGroups {
		if v := r.URL.Query(); v.Has("groups") || v.Has("groups_after") || v.Has("group") {
			writeError(w, http.StatusBadRequest, "no_groups shows no group: not with groups, groups_after or group", nil)
			return nil, false
		}
		return nil, true
	}
	q, ok := groupQuery(w, r)
	return &q, ok
}

func (s *Server) manifestReport(w http.ResponseWriter, r *http.Request) {
	id, ok := s.manifestID(w, r)
	if !ok {
		return
	}
	// ?secrets=true adds the console URLs: secrets role, audited.
	secrets, ok := s.secretsParam(w, r)
	if !ok {
		return
	}
	if secrets {
		if err := s.audit(r.Context(), r, ActionReportSecrets, store.OutcomeStarted, map[string]any{"manifest": id}); err != nil {
			s.internalError(w, r, err)
			return
		}
	}
	w.Header().Set("Content-Type", "text/csv; charset=utf-8")
	cw := csv.NewWriter(w)
	_ = cw.Write([]string{"device_id", "status", "cloud_address", "error", "vnc_url"})
	revealed := 0
	for row, err := range s.cfg.Store.Report(r.Context(), id, secrets) {
		if err != nil {
			s.auditEnd(r, ActionReportSecrets, secrets, store.OutcomeFailed, map[string]any{"manifest": id, "devices": revealed})
			s.abortStream(w, r, fmt.Errorf("report of manifest %d: %w", id, err))
			return
		}
		if row.VNCURL != "" {
			revealed++
		}
		if cw.Write([]string{row.DeviceID, row.Status, row.CloudAddress, fleet.SpreadsheetSafe(row.Error), row.VNCURL}) != nil {
			s.auditEnd(r, ActionReportSecrets, secrets, store.OutcomeFailed, map[string]any{"manifest": id, "devices": revealed})
			return // the client stopped reading: nobody is left to answer
		}
	}
	s.auditEnd(r, ActionReportSecrets, secrets, store.OutcomeOK, map[string]any{"manifest": id, "devices": revealed})
	s.endStream(w, r, cw)
}

// endStream flushes a streamed CSV answer; one that cannot be flushed is aborted.
func (s *Server) endStream(w http.ResponseWriter, r *http.Request, cw *csv.Writer) {
	cw.Flush()
	if err := cw.Error(); err != nil {
		s.abortStream(w, r, err)
	}
}

// secretsParam reads ?secrets=true, which needs the secrets role (403 without it).
func (s *Server) secretsParam(w http.ResponseWriter, r *http.Request) (secrets, ok bool) {
	if secrets, ok = queryBool(w, r, "secrets"); !ok {
		return false, false
	}
	if secrets {
		return true, requireRole(w, r, RoleSecrets, "secrets=true")
	}
	// The route admits secrets-only tokens; without secrets=true they read as
	// readers do, which the secrets role allows (docs/http-api.md).
	return false, true
}

// auditEnd records how a streaming reveal ended, with the count of devices whose
// secrets left. Its failure is logged: the answer has gone already.
func (s *Server) auditEnd(r *http.Request, action string, secrets bool, outcome string, detail map[string]any) {
	if !secrets {
		return
	}
	if err := s.audit(context.WithoutCancel(r.Context()), r, action, outcome, detail); err != nil {
		s.cfg.Logger.Error("audit failed", "action", action, "err", err)
	}
}

func (s *Server) status(w http.ResponseWriter, r *http.Request) {
	q, ok := s.statusQuery(w, r)
	if !ok {
		return
	}
	st, err := s.cfg.Store.StatusOf(r.Context(), q)
	if err != nil {
		s.internalError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, st)
}

// statusQuery reads what a status shows (GET /v1/status and its stream): the fleet
// (a fleet-limited token's own) and the page of groups.
func (s *Server) statusQuery(w http.ResponseWriter, r *http.Request) (store.StatusQuery, bool) {
	fleetName, ok := s.fleetParam(w, r)
	if !ok {
		return store.StatusQuery{}, false
	}
	groups, ok := groupQuery(w, r)
	return store.StatusQuery{Fleet: fleetName, GroupQuery: groups}, ok
}

// groupQuery reads the group page of GET /v1/status and of a manifest's progress
// alike: groups=N (0..MaxStatusGroups, 0 for none; default DefaultStatusGroups),
// groups_after=NAME (the previous page's nextGroupsAfter, empty naming "(no
// group)"), or group=NAME alone.
func groupQuery(w http.ResponseWriter, r *http.Request) (store.GroupQuery, bool) {
	var q store.GroupQuery
	v := r.URL.Query()
	if v.Has("group") {
		if v.Has("groups") || v.Has("groups_after") {
			writeError(w, http.StatusBadRequest, "group shows one group: not with groups or groups_after", nil)
			return q, false
		}
		q.Group, q.OnlyGroup = v.Get("group"), true
		return q, true
	}
	if v.Has("groups") {
		n, err := strconv.Atoi(v.Get("groups"))
		if err != nil || n < 0 || n > store.MaxStatusGroups {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("groups must be a number from 0 to %d", store.MaxStatusGroups), nil)
			return q, false
		}
		q.Groups = cmp.Or(n, -1)
	}
	if v.Has("groups_after") {
		after := v.Get("groups_after")
		q.GroupsAfter = &after
	}
	return q, true
}

func (s *Server) export(w http.ResponseWriter, r *http.Request) {
	fleetName, ok := s.fleetParam(w, r)
	if !ok {
		return
	}
	secrets, ok := s.secretsParam(w, r)
	if !ok {
		return
	}
	metadata, ok := queryBool(w, r, "metadata")
	if !ok {
		return
	}
	query := store.ExportQuery{Fleet: fleetName, Secrets: secrets, Metadata: metadata}
	if v := r.URL.Query().Get("status"); v != "" {
		for _, name := range strings.Split(v, ",") {
			st, err := fleet.ParseStatus(strings.TrimSpace(name))
			if err != nil {
				writeError(w, http.StatusBadRequest, fmt.Sprintf("status: %v; the statuses are %s", err, statusNames()), nil)
				return
			}
			query.Statuses = append(query.Statuses, string(st))
		}
	}
	what := map[string]any{"fleet": fleetName}
	if secrets {
		// Audited before the first secret leaves, so a reveal is never unrecorded; the
		// entry after the stream says how it ended and how many devices it revealed.
		if err := s.audit(r.Context(), r, ActionExportSecrets, store.OutcomeStarted, what); err != nil {
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
	// A buffer of 64 KiB (csv's own is 4 KiB): a million rows in fewer, larger writes.
	cw := csv.NewWriter(bufio.NewWriterSize(w, exportBuffer))
	_ = cw.Write(exportHeader(metaCols))
	record := make([]string, 0, len(fleet.ExportHeader)+len(metaCols))
	revealed := 0
	for row, err := range s.cfg.Store.Export(r.Context(), query) {
		if err != nil {
			s.auditEnd(r, ActionExportSecrets, secrets, store.OutcomeFailed, map[string]any{"fleet": fleetName, "devices": revealed})
			s.abortStream(w, r, fmt.Errorf("export: %w", err))
			return
		}
		if row.CloudPassword != "" || row.VNCURL != "" {
			revealed++
		}
		// Cells from users or remote errors are defused for spreadsheets; device ids
		// cannot begin like a formula, and addresses, passwords and URLs are machine-made.
		record = append(record[:0], row.DeviceID, row.Action, row.Status, row.CloudAddress, row.CloudPassword,
			fleet.SpreadsheetSafe(row.Groups), fleet.SpreadsheetSafe(row.AllowGroups), row.AllowDevices,
			row.VNCURL, fleet.SpreadsheetSafe(row.LastError))
		for _, name := range metaCols {
			record = append(record, fleet.SpreadsheetSafe(row.Metadata[name]))
		}
		if cw.Write(record) != nil {
			s.auditEnd(r, ActionExportSecrets, secrets, store.OutcomeFailed, map[string]any{"fleet": fleetName, "devices": revealed})
			return // the client stopped reading: nobody is left to answer
		}
	}
	s.auditEnd(r, ActionExportSecrets, secrets, store.OutcomeOK, map[string]any{"fleet": fleetName, "devices": revealed})
	s.endStream(w, r, cw)
}

// exportBuffer is how much of an export is written to the connection at a time.
const exportBuffer = 64 << 10

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
	fleetName, ok := checkFleet(w, r, r.PathValue("fleet"))
	if !ok {
		return
	}
	deviceID := r.PathValue("device")
	what := map[string]any{"fleet": fleetName, "device": deviceID}
	c, err := s.cfg.Store.GetCredentials(r.Context(), fleetName, deviceID)
	outcome := store.OutcomeOK
	if err != nil {
		outcome, what["reason"] = store.OutcomeFailed, err.Error()
	}
	// Recorded before the answer leaves: no audit entry, no secret.
	if err := s.audit(r.Context(), r, ActionCredentials, outcome, what); err != nil {
		s.internalError(w, r, err)
		return
	}
	if errors.Is(err, store.ErrNotFound) {
		writeError(w, http.StatusNotFound, err.Error(), nil)
		return
	}
	if err != nil {
		s.internalError(w, r, err)
		return
	}
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
	if !ok {
		return
	}
	fleetName, ok := s.fleetParam(w, r)
	if !ok {
		return
	}
	n, key, err := s.cfg.Store.RetryFailed(r.Context(), fleetName, manifestID, now, s.cfg.Enqueue)
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
	fleetName, ok := s.fleetParam(w, r)
	if !ok {
		return
	}
	// Rotating every fleet at once costs the whole account's API rate: admin only.
	if fleetName == "" && !requireRole(w, r, RoleAdmin, "rotating every fleet (name one with ?fleet=)") {
		return
	}
	n, key, err := s.cfg.Lifecycle.Rotate(r.Context(), fleetName, all)
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
	if !requireEveryFleet(w, r, "reconciliation") {
		return
	}
	// A real run deletes under the delete policy and recreates addresses: admin only.
	if !dryRun && !requireRole(w, r, RoleAdmin, "a reconcile that is not a dry run") {
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
	key := r.PathValue("key")
	if who := caller(r); who.scoped() {
		fleets, err := s.cfg.Store.WorkFleets(r.Context(), key)
		if err != nil {
			s.internalError(w, r, err)
			return
		}
		for _, f := range fleets {
			if !who.mayUse(f) {
				writeError(w, http.StatusForbidden, fmt.Sprintf("token %s may not see work of fleet %q", who.Name, f), nil)
				return
			}
		}
	}
	p, err := s.cfg.Store.WorkProgress(r.Context(), key)
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
