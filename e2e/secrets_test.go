package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/vncfleet/vncfleet/internal/secretbox"
)

func randomKey(t *testing.T) (b64, id string) {
	t.Helper()
	k := make([]byte, secretbox.KeySize)
	_, err := rand.Read(k)
	require.NoError(t, err)
	return base64.StdEncoding.EncodeToString(k), secretbox.KeyID(k)
}

func (c *cluster) pool() *pgxpool.Pool {
	c.t.Helper()
	pool, err := pgxpool.New(context.Background(), c.dbURL)
	require.NoError(c.t, err)
	c.t.Cleanup(pool.Close)
	return pool
}

// stopServes ends every serve process of the cluster.
func (c *cluster) stopServes() {
	c.t.Helper()
	for _, p := range c.serves {
		require.Equal(c.t, 0, p.terminate(c.t, 30*time.Second))
	}
	c.serves, c.apiURLs = nil, nil
}

// TestRekeyWhileServing rotates VNCFLEET_SECRET_KEY as the README says: serve runs
// with the new key and the old one in VNCFLEET_OLD_SECRET_KEYS, rekey re-seals while
// serve is rotating passwords, keys then shows only the new key, and after the old key
// is dropped every password is still readable and is the one the cloud holds.
func TestRekeyWhileServing(t *testing.T) {
	t.Parallel()
	oldKey, oldID := randomKey(t)
	newKey, newID := randomKey(t)
	c := newCluster(t, clusterOpts{rate: 200, config: fastConfig, simArgs: []string{"--ready-delay", "200ms"},
		extra: []string{"VNCFLEET_SECRET_KEY=" + oldKey}})
	c.startServe()
	devices := factoryManifest(10, 3, 3)
	c.upload("--wait", writeFile(t, "fleet.csv", manifestCSV(devices)))
	c.stopServes()

	// Step 1: the new key seals, the old one still opens.
	c.env = append(c.env, "VNCFLEET_SECRET_KEY="+newKey, "VNCFLEET_OLD_SECRET_KEYS="+oldKey)
	c.startServe()
	out, errOut, code := c.run("keys")
	require.Equal(t, 0, code, "keys: %s\n%s", out, errOut)
	require.Regexp(t, oldID+`\s+old: run rekey\s+60\s`, out)

	// Step 2: rekey while serve rotates every password.
	out, errOut, code = c.run("rotate", "--all")
	require.Equal(t, 0, code, "rotate: %s\n%s", out, errOut)
	out, errOut, code = c.run("rekey", "--batch", "7")
	require.Equal(t, 0, code, "rekey: %s\n%s", out, errOut)
	require.Contains(t, out, "re-sealed under key "+newID)
	c.waitSettled(2 * time.Minute)
	out, errOut, code = c.run("keys")
	require.Equal(t, 0, code, "keys: %s\n%s", out, errOut)
	require.NotContains(t, out, oldID, "nothing is sealed by the old key any more")
	require.Regexp(t, newID+`\s+primary\s+60\s+0\s+0`, out)

	// Step 3: the old key is dropped; every password still opens and is right.
	c.stopServes()
	c.env = append(c.env, "VNCFLEET_OLD_SECRET_KEYS=")
	c.startServe()
	verifyFleet(t, c, devices)
	for _, a := range c.addresses() {
		require.Greater(t, a.Version, 1, "the rotation ran while rekey did")
	}
	out, _, code = c.run("keys")
	require.Equal(t, 0, code, out)
}

// TestAuditAndClaims: reveals and claim redemptions land in the audit log, vncfleet
// audit lists them, audit verify passes, then catches an edited and a deleted entry;
// claims issues a CSV whose tokens redeem once each.
func TestAuditAndClaims(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterOpts{config: fastConfig})
	c.startServe()
	out := c.upload("--wait", writeFile(t, "fleet.csv", "device_id,action\nd1,connect\nd2,connect\n"))
	var manifest int64
	_, err := fmt.Sscanf(out[strings.Index(out, "manifest #")+len("manifest #"):], "%d", &manifest)
	require.NoError(t, err, out)
	c.export("--secrets")

	claims, errOut, code := c.run("claims", "--manifest", fmt.Sprint(manifest))
	require.Equal(t, 0, code, errOut)
	records, err := csv.NewReader(strings.NewReader(claims)).ReadAll()
	require.NoError(t, err)
	require.Equal(t, []string{"device_id", "claim_token", "expires_at"}, records[0])
	require.Len(t, records, 3)
	truth := map[string]string{}
	for _, a := range c.addresses() {
		truth[a.CloudAddress] = a.Password
	}
	redeem := func(token string) (int, map[string]string) {
		resp, err := http.Post(c.apiURLs[0]+"/v1/claims/redeem", "application/json", bytes.NewReader([]byte(`{"token":"`+token+`"}`)))
		require.NoError(t, err)
		defer resp.Body.Close()
		var body map[string]string
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&body))
		return resp.StatusCode, body
	}
	for _, r := range records[1:] {
		status, creds := redeem(r[1])
		require.Equal(t, http.StatusOK, status, creds)
		require.Equal(t, truth[creds["cloudAddress"]], creds["cloudPassword"])
	}
	status, _ := redeem(records[1][1])
	require.Equal(t, http.StatusGone, status, "a second redemption is refused")

	out, errOut, code = c.run("audit", "--since", "1h")
	require.Equal(t, 0, code, errOut)
	var actions []string
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var e struct{ Action, Outcome string }
		require.NoError(t, json.Unmarshal([]byte(line), &e), line)
		actions = append(actions, e.Action+":"+e.Outcome)
	}
	require.Equal(t, []string{"export_secrets:started", "export_secrets:ok", "claim_issue:ok",
		"claim_redeem:ok", "claim_redeem:ok", "claim_redeem:denied"}, actions)

	out, errOut, code = c.run("audit", "verify")
	require.Equal(t, 0, code, "%s\n%s", out, errOut)
	require.Contains(t, out, "audit log intact: 6 entries")

	// Someone with the table owner's rights edits an entry, then puts it back, then
	// removes one.
	pool := c.pool()
	ctx := context.Background()
	owner := func(sql string) {
		_, err := pool.Exec(ctx, `ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only;`+sql+`;ALTER TABLE audit_log ENABLE TRIGGER audit_log_append_only`)
		require.NoError(t, err)
	}
	owner(`UPDATE audit_log SET detail = detail || '{"devices": 0}' WHERE seq = 2`)
	out, _, code = c.run("audit", "verify")
	require.Equal(t, 1, code, out)
	require.Contains(t, out, "entry 2: its content does not match its hash")
	owner(`UPDATE audit_log SET detail = detail || '{"devices": 2}' WHERE seq = 2`)
	out, _, code = c.run("audit", "verify")
	require.Equal(t, 0, code, "restored: %s", out)
	owner(`DELETE FROM audit_log WHERE seq = 6`)
	out, _, code = c.run("audit", "verify")
	require.Equal(t, 1, code, out)
	require.Contains(t, out, "entries removed from the end")
	owner(`DELETE FROM audit_log WHERE seq = 4`)
	out, _, code = c.run("audit", "verify")
	require.Equal(t, 1, code, out)
	require.Contains(t, out, "entry 4: entry 4 is missing")

	// The application itself cannot rewrite the log.
	_, err = pool.Exec(ctx, `DELETE FROM audit_log WHERE seq = 1`)
	require.ErrorContains(t, err, "append-only")
}

// TestAuditSinceLeavesOutOlderEntries: `vncfleet audit --since` lists the entries
// from that time on and none older, to a token of the secrets role (not only the
// admin's); a reader's token is refused.
func TestAuditSinceLeavesOutOlderEntries(t *testing.T) {
	t.Parallel()
	const secretsTok, readTok = "e2e-secrets-token-value", "e2e-read-token-value"
	c := newCluster(t, clusterOpts{config: fastConfig + `
tokens:
  - {name: vault, token: "` + secretsTok + `", roles: [secrets]}
  - {name: viewer, token: "` + readTok + `", roles: [read]}
`})
	c.startServe()
	c.upload("--wait", writeFile(t, "fleet.csv", "device_id,action\nd1,connect\n"))
	for range 3 {
		c.export("--secrets") // two entries each: started, ok
	}
	// Entries 1-2 ten days old and 3-4 three days old, as the table's owner could make
	// them (the application cannot): the log is days long without the test taking days.
	_, err := c.pool().Exec(context.Background(), `ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only;
		UPDATE audit_log SET at = at - interval '10 days' WHERE seq <= 2;
		UPDATE audit_log SET at = at - interval '3 days' WHERE seq IN (3, 4);
		ALTER TABLE audit_log ENABLE TRIGGER audit_log_append_only`)
	require.NoError(t, err)

	vault := *c
	vault.env = append(append([]string{}, c.env...), "VNCFLEET_TOKEN="+secretsTok)
	seqs := func(args ...string) []int64 {
		t.Helper()
		out, errOut, code := vault.run(append([]string{"audit"}, args...)...)
		require.Equal(t, 0, code, "audit %v: %s", args, errOut)
		var got []int64
		for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
			var e struct{ Seq int64 }
			require.NoError(t, json.Unmarshal([]byte(line), &e), line)
			got = append(got, e.Seq)
		}
		return got
	}
	require.Equal(t, []int64{1, 2, 3, 4, 5, 6}, seqs())
	require.Equal(t, []int64{5, 6}, seqs("--since", "24h"))
	require.Equal(t, []int64{3, 4, 5, 6}, seqs("--since", "7d"))
	require.Equal(t, []int64{3, 4, 5, 6}, seqs("--since", time.Now().Add(-5*24*time.Hour).UTC().Format(time.RFC3339)))

	viewer := *c
	viewer.env = append(append([]string{}, c.env...), "VNCFLEET_TOKEN="+readTok)
	_, errOut, code := viewer.run("audit", "--since", "24h")
	require.Equal(t, 2, code, errOut)
	require.Contains(t, lastLine(errOut), "token viewer lacks the secrets role")
}
