package server

import (
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/vncfleet/vncfleet/internal/store"
)

// maxClaimBody bounds the JSON of claim requests: a device id list of a large fleet
// fits, a stream of garbage does not.
const maxClaimBody = 8 << 20

// claimScope is the {fleet} of a claim route, checked against the token's fleets, and
// ?ttl= (a Go duration), default ClaimTTL, at most MaxClaimTTL.
func (s *Server) claimScope(w http.ResponseWriter, r *http.Request) (string, time.Duration, bool) {
	fleetName, ok := checkFleet(w, r, r.PathValue("fleet"))
	if !ok {
		return "", 0, false
	}
	v := r.URL.Query().Get("ttl")
	if v == "" {
		return fleetName, s.cfg.ClaimTTL, true
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < time.Second || d > s.cfg.MaxClaimTTL {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("ttl must be a duration from 1s to %s, like 15m", s.cfg.MaxClaimTTL), nil)
		return "", 0, false
	}
	return fleetName, d, true
}

// issueClaim answers one device's claim token as JSON.
func (s *Server) issueClaim(w http.ResponseWriter, r *http.Request) {
	fleetName, ttl, ok := s.claimScope(w, r)
	if !ok {
		return
	}
	issued, ok := s.issue(w, r, store.ClaimRequest{Fleet: fleetName, DeviceIDs: []string{r.PathValue("device")}, TTL: ttl})
	if !ok {
		return
	}
	if len(issued.Claims) == 0 {
		writeError(w, http.StatusConflict, fmt.Sprintf("device %q has no cloud password yet", r.PathValue("device")), nil)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusCreated, issued.Claims[0])
}

// issueClaims answers claim tokens for a manifest's present devices, or for the
// devices a JSON body lists, as CSV device_id,claim_token,expires_at. Devices without
// a password yet are left out and counted in X-Vncfleet-Skipped.
func (s *Server) issueClaims(w http.ResponseWriter, r *http.Request) {
	fleetName, ttl, ok := s.claimScope(w, r)
	if !ok {
		return
	}
	var body struct {
		Manifest int64    `json:"manifest"`
		Devices  []string `json:"devices"`
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxClaimBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&body); err != nil {
		writeError(w, http.StatusBadRequest, `body must be JSON {"manifest": ID} or {"devices": ["id", ...]}: `+err.Error(), nil)
		return
	}
	if (body.Manifest == 0) == (len(body.Devices) == 0) || body.Manifest < 0 {
		writeError(w, http.StatusBadRequest, `name either a manifest ({"manifest": ID}) or devices ({"devices": [...]})`, nil)
		return
	}
	issued, ok := s.issue(w, r, store.ClaimRequest{Fleet: fleetName, DeviceIDs: body.Devices, Manifest: body.Manifest, TTL: ttl})
	if !ok {
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Type", "text/csv; charset=utf-8")
	w.Header().Set("X-Vncfleet-Skipped", strconv.Itoa(len(issued.Skipped)))
	cw := csv.NewWriter(w)
	_ = cw.Write([]string{"device_id", "claim_token", "expires_at"})
	for _, c := range issued.Claims {
		_ = cw.Write([]string{c.DeviceID, c.Token, c.ExpiresAt.Format(time.RFC3339)})
	}
	cw.Flush()
}

func (s *Server) issue(w http.ResponseWriter, r *http.Request, req store.ClaimRequest) (store.ClaimsIssued, bool) {
	who := caller(r)
	rec := store.AuditRecord{Actor: who.Name, Action: ActionClaimIssue, Remote: s.clientAddr(r),
		Detail: map[string]any{"ttl": req.TTL.String()}}
	issued, err := s.cfg.Store.IssueClaims(r.Context(), req, rec, who.Name)
	switch {
	case errors.Is(err, store.ErrNotFound):
		writeError(w, http.StatusNotFound, err.Error(), nil)
		return issued, false
	case err != nil:
		s.internalError(w, r, err)
		return issued, false
	}
	s.logAudit(issued.Audit)
	return issued, true
}

// redeemClaim answers POST /v1/claims/redeem {"token": "..."}: unauthenticated, since
// the token is the authority, and once only. Unknown tokens count as failed
// authentications of the client's address.
func (s *Server) redeemClaim(w http.ResponseWriter, r *http.Request) {
	remote := s.clientAddr(r)
	if !s.authFailures.allowed(remote) {
		w.Header().Set("Retry-After", "60")
		writeError(w, http.StatusTooManyRequests, "too many failed attempts from this address; try again later", nil)
		return
	}
	var body struct {
		Token string `json:"token"`
	}
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4<<10)).Decode(&body); err != nil && !errors.Is(err, io.EOF) {
		writeError(w, http.StatusBadRequest, `body must be JSON {"token": "vfc_..."}`, nil)
		return
	}
	token := strings.TrimSpace(body.Token)
	if !strings.HasPrefix(token, store.ClaimTokenPrefix) {
		s.authFailed(r, remote, "malformed claim token")
		writeError(w, http.StatusBadRequest, `body must be JSON {"token": "vfc_..."}`, nil)
		return
	}
	rec := store.AuditRecord{Actor: anonymous, Action: ActionClaimRedeem, Remote: remote, Detail: map[string]any{}}
	res, err := s.cfg.Store.RedeemClaim(r.Context(), token, rec)
	if err != nil {
		s.internalError(w, r, err)
		return
	}
	s.logAudit(res.Audit)
	switch {
	case errors.Is(res.Err, store.ErrClaimRedeemed):
		// Someone else holds the token, or the station was tricked into asking twice.
		s.cfg.Logger.Warn("security event: claim token redeemed a second time", "remote", remote,
			"fleet", res.Fleet, "device", res.Credentials.DeviceID, "seq", res.Audit.Seq)
		writeError(w, http.StatusGone, res.Err.Error(), nil)
	case errors.Is(res.Err, store.ErrClaimUnknown):
		s.authFailed(r, remote, "unknown claim token")
		writeError(w, http.StatusNotFound, res.Err.Error(), nil)
	case res.Err != nil:
		writeError(w, http.StatusGone, res.Err.Error(), nil)
	default:
		w.Header().Set("Cache-Control", "no-store")
		writeJSON(w, http.StatusOK, res.Credentials)
	}
}
