package server

import (
	"context"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/vncfleet/vncfleet/internal/store"
)

// Audited actions.
const (
	ActionExportSecrets  = "export_secrets"     // export with passwords and console URLs
	ActionReportSecrets  = "report_secrets"     // a manifest report with console URLs
	ActionCredentials    = "reveal_credentials" // one device's password and console URL
	ActionClaimIssue     = "claim_issue"        // single-use claim tokens issued
	ActionClaimRedeem    = "claim_redeem"       // a claim token redeemed (or refused)
	anonymous            = "anonymous"          // the actor of unauthenticated requests
	auditPageLimit       = 1000
	auditDefaultPageSize = 100
)

// audit appends an entry for this request to the audit log and logs the same as one
// line: who (the token's name), what (detail: fleet, device, devices), when, from
// where (clientAddr) and the outcome. The log line carries the entry's seq and hash,
// so a log kept elsewhere anchors the chain. A reveal is recorded before its secret
// leaves; when recording fails, the caller answers an error and reveals nothing.
func (s *Server) audit(ctx context.Context, r *http.Request, action, outcome string, detail map[string]any) error {
	actor := caller(r).Name
	if actor == "" {
		actor = anonymous
	}
	rec := store.AuditRecord{Actor: actor, Action: action, Remote: s.clientAddr(r), Outcome: outcome, Detail: detail}
	a, err := s.cfg.Store.Audit(ctx, rec)
	if err != nil {
		return err
	}
	s.logAudit(a)
	return nil
}

func (s *Server) logAudit(a store.Audited) {
	level := slog.LevelInfo
	if a.Outcome == store.OutcomeDenied || a.Outcome == store.OutcomeFailed {
		level = slog.LevelWarn
	}
	attrs := []any{"action", a.Action, "actor", a.Actor, "remote", a.Remote, "outcome", a.Outcome, "seq", a.Seq, "hash", a.Hash}
	for _, k := range slices.Sorted(maps.Keys(a.Detail)) {
		attrs = append(attrs, k, a.Detail[k])
	}
	s.cfg.Logger.Log(context.Background(), level, "audit", attrs...)
}

// auditLog answers GET /v1/audit?since=RFC3339&after=SEQ&limit=N: entries oldest
// first, a page at a time (after is the last seq of the previous page).
func (s *Server) auditLog(w http.ResponseWriter, r *http.Request) {
	if !requireEveryFleet(w, r, "the audit log") {
		return
	}
	q := r.URL.Query()
	var since time.Time
	if v := q.Get("since"); v != "" {
		var err error
		if since, err = time.Parse(time.RFC3339, v); err != nil {
			writeError(w, http.StatusBadRequest, "since must be an RFC 3339 time, like 2026-12-01T00:00:00Z", nil)
			return
		}
	}
	after := int64(0)
	if v := q.Get("after"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			writeError(w, http.StatusBadRequest, "after must be a whole number ≥ 0", nil)
			return
		}
		after = n
	}
	limit, ok := queryLimit(w, r, auditDefaultPageSize, auditPageLimit)
	if !ok {
		return
	}
	entries, err := s.cfg.Store.AuditLog(r.Context(), since, after, limit)
	if err != nil {
		s.internalError(w, r, err)
		return
	}
	if entries == nil {
		entries = []store.AuditEntry{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"entries": entries})
}
