package apiclient

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// AuditEntry is one entry of the audit log (GET /v1/audit).
type AuditEntry struct {
	Seq     int64          `json:"seq"`
	At      time.Time      `json:"at"`
	Actor   string         `json:"actor"`
	Action  string         `json:"action"`
	Remote  string         `json:"remote"`
	Outcome string         `json:"outcome"`
	Detail  map[string]any `json:"detail"`
	Hash    string         `json:"hash"`
}

// auditPage is how many entries Audit asks for at a time.
const auditPage = 1000

// Audit calls fn with every audit entry from since on (zero: all), oldest first,
// fetching a page at a time (secrets or admin role).
func (c *Client) Audit(ctx context.Context, since time.Time, fn func(AuditEntry) error) error {
	var after int64
	for {
		q := url.Values{"limit": {strconv.Itoa(auditPage)}, "after": {strconv.FormatInt(after, 10)}}
		if !since.IsZero() {
			q.Set("since", since.UTC().Format(time.RFC3339))
		}
		var page struct {
			Entries []AuditEntry `json:"entries"`
		}
		if err := c.doJSON(ctx, http.MethodGet, "/v1/audit", q, &page); err != nil {
			return err
		}
		for _, e := range page.Entries {
			if err := fn(e); err != nil {
				return err
			}
			after = e.Seq
		}
		if len(page.Entries) < auditPage {
			return nil
		}
	}
}

// ClaimsRequest names the devices of Fleet to issue claim tokens for: those of
// Manifest, or DeviceIDs. TTL 0 takes the server's default.
type ClaimsRequest struct {
	Fleet     string
	Manifest  int64
	DeviceIDs []string
	TTL       time.Duration
}

// Claims issues single-use claim tokens (POST /v1/fleets/{fleet}/claims, secrets
// role) and streams their CSV, device_id,claim_token,expires_at, to w. skipped counts
// the devices left out because they have no password yet.
func (c *Client) Claims(ctx context.Context, req ClaimsRequest, w io.Writer) (skipped int, err error) {
	body, err := json.Marshal(map[string]any{"manifest": req.Manifest, "devices": req.DeviceIDs})
	if err != nil {
		return 0, err
	}
	q := url.Values{}
	if req.TTL > 0 {
		q.Set("ttl", req.TTL.String())
	}
	resp, err := c.do(ctx, http.MethodPost, "/v1/fleets/"+url.PathEscape(req.Fleet)+"/claims", q, bytes.NewReader(body), "application/json")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	skipped, _ = strconv.Atoi(resp.Header.Get("X-Vncfleet-Skipped"))
	if _, err := io.Copy(w, resp.Body); err != nil {
		return skipped, fmt.Errorf("claims: %w", err)
	}
	return skipped, nil
}

// Credentials is one device's cloud identity, as a claim redemption answers it.
type Credentials struct {
	DeviceID      string `json:"deviceId"`
	CloudAddress  string `json:"cloudAddress"`
	CloudPassword string `json:"cloudPassword"`
}

// Redeem redeems a claim token once (POST /v1/claims/redeem, no bearer token needed).
func (c *Client) Redeem(ctx context.Context, token string) (*Credentials, error) {
	body, err := json.Marshal(map[string]string{"token": token})
	if err != nil {
		return nil, err
	}
	resp, err := c.do(ctx, http.MethodPost, "/v1/claims/redeem", nil, bytes.NewReader(body), "application/json")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var cr Credentials
	if err := json.NewDecoder(resp.Body).Decode(&cr); err != nil {
		return nil, fmt.Errorf("redeem: decoding the answer: %w", err)
	}
	return &cr, nil
}
