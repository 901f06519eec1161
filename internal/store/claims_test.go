package store_test

import (
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/vncfleet/vncfleet/internal/provisiontest"
	"github.com/vncfleet/vncfleet/internal/store"
)

func issue(t *testing.T, e *provisiontest.Env, req store.ClaimRequest) store.ClaimsIssued {
	t.Helper()
	if req.TTL == 0 {
		req.TTL = 15 * time.Minute
	}
	out, err := e.Store.IssueClaims(e.Ctx, req, store.AuditRecord{Actor: "station-issuer", Action: "claim_issue", Detail: map[string]any{}}, "station-issuer")
	require.NoError(t, err)
	return out
}

func redeem(t *testing.T, e *provisiontest.Env, token string) store.Redeemed {
	t.Helper()
	res, err := e.Store.RedeemClaim(e.Ctx, token, store.AuditRecord{Actor: "anonymous", Action: "claim_redeem", Remote: "198.51.100.7", Detail: map[string]any{}})
	require.NoError(t, err)
	return res
}

// A claim token is redeemed once for the password the cloud holds; a second
// redemption, an expired token, an unknown one and one issued before a rotation are
// refused; each outcome is audited; only the token's hash is stored.
func TestClaimsAreSingleUse(t *testing.T) {
	t.Parallel()
	e := provisiontest.New(t)
	addrs := e.Provision("f", provisiontest.Header+"a,connect,g,,,\nb,connect,g,,,\nc,connect,g,,,\n")
	truth := map[string]string{}
	for id, addr := range addrs {
		truth[id] = e.Addresses()[addr].Password
	}

	one := issue(t, e, store.ClaimRequest{Fleet: "f", DeviceIDs: []string{"a"}})
	require.Len(t, one.Claims, 1)
	token := one.Claims[0].Token
	require.True(t, strings.HasPrefix(token, store.ClaimTokenPrefix))
	require.Equal(t, map[string]any{"fleet": "f", "devices": 1, "device": "a"}, one.Audit.Detail)

	got := redeem(t, e, token)
	require.NoError(t, got.Err)
	require.Equal(t, store.Credentials{DeviceID: "a", Status: "ready", CloudAddress: addrs["a"], CloudPassword: truth["a"]}, got.Credentials)
	require.Equal(t, store.OutcomeOK, got.Audit.Outcome)

	again := redeem(t, e, token)
	require.ErrorIs(t, again.Err, store.ErrClaimRedeemed)
	require.Empty(t, again.Credentials.CloudPassword)
	require.Equal(t, store.OutcomeDenied, again.Audit.Outcome)
	require.Equal(t, "a", again.Audit.Detail["device"])

	require.ErrorIs(t, redeem(t, e, store.ClaimTokenPrefix+"not-issued").Err, store.ErrClaimUnknown)

	expiring := issue(t, e, store.ClaimRequest{Fleet: "f", DeviceIDs: []string{"b"}}).Claims[0].Token
	_, err := e.Pool.Exec(e.Ctx, `UPDATE credential_claims SET expires_at = now() - interval '1 second' WHERE redeemed_at IS NULL`)
	require.NoError(t, err)
	require.ErrorIs(t, redeem(t, e, expiring).Err, store.ErrClaimExpired)

	// A rotation promotes a new password: claims of the old one are void.
	beforeRotation := issue(t, e, store.ClaimRequest{Fleet: "f", DeviceIDs: []string{"c"}}).Claims[0].Token
	_, err = e.Store.ScheduleRotations(e.Ctx, "f", true, time.Hour, 0, "rotate:test")
	require.NoError(t, err)
	e.Drain("rotate:test")
	require.ErrorIs(t, redeem(t, e, beforeRotation).Err, store.ErrClaimInvalidated)
	afterRotation := issue(t, e, store.ClaimRequest{Fleet: "f", DeviceIDs: []string{"c"}}).Claims[0].Token
	fresh := redeem(t, e, afterRotation)
	require.NoError(t, fresh.Err)
	require.Equal(t, e.Addresses()[addrs["c"]].Password, fresh.Credentials.CloudPassword)
	require.NotEqual(t, truth["c"], fresh.Credentials.CloudPassword)

	var stored string
	require.NoError(t, e.Pool.QueryRow(e.Ctx, `SELECT string_agg(encode(token_hash, 'escape'), ' ') FROM credential_claims`).Scan(&stored))
	require.NotContains(t, stored, strings.TrimPrefix(token, store.ClaimTokenPrefix))
	var denied int
	require.NoError(t, e.Pool.QueryRow(e.Ctx, `SELECT count(*) FROM audit_log WHERE action = 'claim_redeem' AND outcome = 'denied'`).Scan(&denied))
	require.Equal(t, 4, denied, "redeemed twice, unknown, expired, invalidated")
}

// The bulk form issues a claim per present device of a manifest, skipping devices
// without a password; named devices that do not exist are refused whole.
func TestClaimsForAManifest(t *testing.T) {
	t.Parallel()
	e := provisiontest.New(t)
	e.Provision("f", provisiontest.Header+"a,connect,g,,,\nb,connect,g,,,\n")
	e.Ingest("f", provisiontest.Header+"a,connect,g,,,\nb,connect,g,,,\nnew,connect,g,,,\n")
	var manifest int64
	require.NoError(t, e.Pool.QueryRow(e.Ctx, `SELECT max(id) FROM manifests`).Scan(&manifest))

	out := issue(t, e, store.ClaimRequest{Fleet: "f", Manifest: manifest})
	var ids []string
	for _, c := range out.Claims {
		ids = append(ids, c.DeviceID)
	}
	require.ElementsMatch(t, []string{"a", "b"}, ids)
	require.Equal(t, []string{"new"}, out.Skipped, "no password yet")
	require.Equal(t, 2, out.Audit.Detail["devices"])
	require.Equal(t, manifest, out.Audit.Detail["manifest"])

	_, err := e.Store.IssueClaims(e.Ctx, store.ClaimRequest{Fleet: "f", DeviceIDs: []string{"a", "ghost"}, TTL: time.Minute},
		store.AuditRecord{Actor: "x", Action: "claim_issue", Detail: map[string]any{}}, "x")
	require.ErrorIs(t, err, store.ErrNotFound)
	require.ErrorContains(t, err, "ghost")
	_, err = e.Store.IssueClaims(e.Ctx, store.ClaimRequest{Fleet: "other", Manifest: manifest, TTL: time.Minute},
		store.AuditRecord{Actor: "x", Action: "claim_issue", Detail: map[string]any{}}, "x")
	require.ErrorIs(t, err, store.ErrNotFound, "a manifest of another fleet")
	var n int
	require.NoError(t, e.Pool.QueryRow(e.Ctx, `SELECT count(*) FROM credential_claims`).Scan(&n))
	require.Equal(t, 2, n, "refused requests issue nothing")
}

// Redemptions racing for one token: exactly one gets the password.
func TestClaimRedeemedOnceUnderConcurrency(t *testing.T) {
	t.Parallel()
	e := provisiontest.New(t)
	e.Provision("f", provisiontest.Header+"a,connect,g,,,\n")
	token := issue(t, e, store.ClaimRequest{Fleet: "f", DeviceIDs: []string{"a"}}).Claims[0].Token
	results := make(chan store.Redeemed, 8)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			res, err := e.Store.RedeemClaim(e.Ctx, token, store.AuditRecord{Actor: "anonymous", Action: "claim_redeem", Detail: map[string]any{}})
			require.NoError(t, err)
			results <- res
		})
	}
	wg.Wait()
	close(results)
	ok := 0
	for res := range results {
		if res.Err == nil {
			ok++
			require.NotEmpty(t, res.Credentials.CloudPassword)
		} else {
			require.ErrorIs(t, res.Err, store.ErrClaimRedeemed)
		}
	}
	require.Equal(t, 1, ok)
}
