package store

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
)

// ClaimTokenPrefix starts every claim token, so that one pasted in the wrong place is
// recognisable (and secret scanners can find it).
const ClaimTokenPrefix = "vfc_"

// Claim is a single-use credential claim token for one device.
type Claim struct {
	DeviceID  string    `json:"deviceId"`
	Token     string    `json:"claimToken"`
	ExpiresAt time.Time `json:"expiresAt"`
}

// ClaimRequest names the devices to issue claims for: DeviceIDs of Fleet, or the
// present devices of Manifest (which must be Fleet's).
type ClaimRequest struct {
	Fleet     string
	DeviceIDs []string
	Manifest  int64
	TTL       time.Duration
}

// ClaimsIssued is what IssueClaims did.
type ClaimsIssued struct {
	Claims []Claim
	// Skipped are devices with no password yet (not provisioned, or being re-created):
	// a claim would have nothing to hand out.
	Skipped []string
	Audit   Audited
}

// newCredentialClaimToken is ClaimTokenPrefix and 256 random bits, and the SHA-256 that is
// stored instead of it.
func newCredentialClaimToken() (string, []byte, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", nil, fmt.Errorf("claim token: %w", err)
	}
	token := ClaimTokenPrefix + base64.RawURLEncoding.EncodeToString(b)
	return token, claimTokenHash(token), nil
}

func claimTokenHash(token string) []byte {
	sum := sha256.Sum256([]byte(token))
	return sum[:]
}

// IssueClaims issues a claim token for each device the request names that has a
// password, and appends audit (its Detail gains the fleet and the count of claims) in
// the same transaction: no claim exists without its record.
func (s *Store) IssueClaims(ctx context.Context, req ClaimRequest, audit AuditRecord, issuer string) (ClaimsIssued, error) {
	var out ClaimsIssued
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		out = ClaimsIssued{}
		rows, err := tx.Query(ctx, `
			SELECT d.id, d.device_id, d.password_set_at
			FROM devices d JOIN fleets f ON f.id = d.fleet_id
			WHERE f.name = $1 AND (($3::bigint <> 0 AND d.manifest_id = $3 AND d.desired_state = 'present')
			                       OR d.device_id = ANY($2))
			  AND d.status <> 'deleted'
			ORDER BY d.line, d.device_id`, req.Fleet, req.DeviceIDs, req.Manifest)
		if err != nil {
			return fmt.Errorf("issue claims: %w", err)
		}
		type target struct {
			pk    int64
			id    string
			setAt *time.Time
		}
		targets, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (target, error) {
			var t target
			err := row.Scan(&t.pk, &t.id, &t.setAt)
			return t, err
		})
		if err != nil {
			return fmt.Errorf("issue claims: %w", err)
		}
		found := make([]string, len(targets))
		for i, t := range targets {
			found[i] = t.id
		}
		if err := missingDevices(req, found); err != nil {
			return err
		}
		expires := time.Now().Add(req.TTL).UTC().Truncate(time.Second)
		var pks []int64
		var setAts []time.Time
		var hashes [][]byte
		for _, t := range targets {
			if t.setAt == nil {
				out.Skipped = append(out.Skipped, t.id)
				continue
			}
			token, hash, err := newCredentialClaimToken()
			if err != nil {
				return err
			}
			out.Claims = append(out.Claims, Claim{DeviceID: t.id, Token: token, ExpiresAt: expires})
			pks, setAts, hashes = append(pks, t.pk), append(setAts, *t.setAt), append(hashes, hash)
		}
		if _, err := tx.Exec(ctx, `
			INSERT INTO credential_claims (token_hash, device_pk, password_set_at, issued_by, expires_at)
			SELECT h, pk, set_at, $4, $5 FROM unnest($1::bytea[], $2::bigint[], $3::timestamptz[]) AS u (h, pk, set_at)`,
			hashes, pks, setAts, issuer, expires); err != nil {
			return fmt.Errorf("issue claims: %w", err)
		}
		audit.Detail["fleet"] = req.Fleet
		audit.Detail["devices"] = len(out.Claims)
		if len(out.Claims) == 1 {
			audit.Detail["device"] = out.Claims[0].DeviceID
		}
		if req.Manifest != 0 {
			audit.Detail["manifest"] = req.Manifest
		}
		out.Audit, err = appendAudit(ctx, tx, audit)
		return err
	})
	return out, err
}

// missingDevices is ErrNotFound naming the requested device ids that do not exist.
func missingDevices(req ClaimRequest, found []string) error {
	if req.Manifest != 0 && len(found) == 0 {
		return fmt.Errorf("manifest %d of fleet %q: no present devices: %w", req.Manifest, req.Fleet, ErrNotFound)
	}
	var missing []string
	for _, id := range req.DeviceIDs {
		if !slices.Contains(found, id) {
			missing = append(missing, id)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("devices %q of fleet %q: %w", missing, req.Fleet, ErrNotFound)
	}
	return nil
}

// Reasons a redemption is refused.
var (
	ErrClaimUnknown     = errors.New("claim token unknown")
	ErrClaimRedeemed    = errors.New("claim token already redeemed")
	ErrClaimExpired     = errors.New("claim token expired")
	ErrClaimInvalidated = errors.New("claim token invalidated: the device's password was rotated or reset since it was issued")
)

// Redeemed is one redemption's result: the credentials, or the reason it was refused
// (Err, one of ErrClaim*), with where its audit entry landed.
type Redeemed struct {
	Credentials Credentials
	Fleet       string
	Err         error
	Audit       Audited
}

// RedeemClaim redeems a claim token once: it marks the claim redeemed, decrypts the
// device's current password and appends audit (Outcome, and Detail's fleet and
// device, are filled in) in one transaction. A refusal is audited too (outcome
// denied, with the reason), and a second redemption of one token is a security event
// that the caller logs as such.
func (s *Store) RedeemClaim(ctx context.Context, token string, audit AuditRecord) (Redeemed, error) {
	var res Redeemed
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		res = Redeemed{}
		var claimID, pk int64
		var claimSetAt time.Time
		var expires time.Time
		var redeemedAt, setAt *time.Time
		var addr, keyID *string
		var ct []byte
		err := tx.QueryRow(ctx, `
			SELECT c.id, c.password_set_at, c.expires_at, c.redeemed_at, f.name, d.id, d.device_id, d.status,
			       d.cloud_address, d.password_ct, d.password_key_id, d.password_set_at
			FROM credential_claims c JOIN devices d ON d.id = c.device_pk JOIN fleets f ON f.id = d.fleet_id
			WHERE c.token_hash = $1 FOR UPDATE OF c`, claimTokenHash(token)).
			Scan(&claimID, &claimSetAt, &expires, &redeemedAt, &res.Fleet, &pk, &res.Credentials.DeviceID,
				&res.Credentials.Status, &addr, &ct, &keyID, &setAt)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			res.Err = ErrClaimUnknown
		case err != nil:
			return fmt.Errorf("redeem claim: %w", err)
		case redeemedAt != nil:
			res.Err = ErrClaimRedeemed
		case !time.Now().Before(expires):
			res.Err = ErrClaimExpired
		case setAt == nil || !setAt.Equal(claimSetAt) || addr == nil || ct == nil || keyID == nil:
			res.Err = ErrClaimInvalidated
		}
		if res.Err == nil {
			if _, err := tx.Exec(ctx, `UPDATE credential_claims SET redeemed_at = now(), redeemed_from = $2 WHERE id = $1`,
				claimID, audit.Remote); err != nil {
				return fmt.Errorf("redeem claim: %w", err)
			}
			res.Credentials.CloudAddress = *addr
			if res.Credentials.CloudPassword, err = s.open(pk, ct, *keyID); err != nil {
				return err
			}
			audit.Outcome = OutcomeOK
		} else {
			audit.Outcome = OutcomeDenied
			audit.Detail["reason"] = res.Err.Error()
		}
		if res.Fleet != "" {
			audit.Detail["fleet"], audit.Detail["device"] = res.Fleet, res.Credentials.DeviceID
		}
		res.Audit, err = appendAudit(ctx, tx, audit)
		return err
	})
	if res.Err != nil {
		res.Credentials = Credentials{DeviceID: res.Credentials.DeviceID}
	}
	return res, err
}
