package store_test

import (
	"crypto/rand"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/vncfleet/vncfleet/internal/provisiontest"
	"github.com/vncfleet/vncfleet/internal/secretbox"
	"github.com/vncfleet/vncfleet/internal/store"
)

func newKey(t *testing.T) []byte {
	t.Helper()
	k := make([]byte, secretbox.KeySize)
	_, err := rand.Read(k)
	require.NoError(t, err)
	return k
}

// exported reads every device's password and console URL through the export.
func exported(t *testing.T, e *provisiontest.Env, st *store.Store) (passwords, urls map[string]string) {
	t.Helper()
	passwords, urls = map[string]string{}, map[string]string{}
	for row, err := range st.Export(e.Ctx, store.ExportQuery{Fleet: "f", Secrets: true}) {
		require.NoError(t, err)
		passwords[row.DeviceID], urls[row.DeviceID] = row.CloudPassword, row.VNCURL
	}
	return passwords, urls
}

// After a key rotation, keys shows what the old key still seals; rekey moves every
// secret (passwords, pending passwords, console URLs, and console URLs stored in
// clear) to the new key, after which the old key can go and everything still opens.
func TestRekeyMovesEverySecretToTheNewKey(t *testing.T) {
	t.Parallel()
	e := provisiontest.New(t)
	e.Provision("f", provisiontest.Header+"a,connect,g,,,\nb,connect,g,,,\nc,connect,g,,,\nd,connect,g,,,\n")
	truth := map[string]string{}
	for _, a := range e.Addresses() {
		truth[a.CloudAddress] = a.Password
	}
	// a gets a console URL sealed by the old key, b one stored in clear (before
	// migration 0009), c a pending password of a rotation in progress.
	_, err := e.Pool.Exec(e.Ctx, `UPDATE devices SET zenlayer_instance_id = 'zi-1' WHERE device_id = 'a'`)
	require.NoError(t, err)
	require.NoError(t, e.Store.SetConsoleURL(e.Ctx, e.Device("f", "a").PK, "zi-1", "https://console.example/a?token=t-a"))
	_, err = e.Pool.Exec(e.Ctx, `UPDATE devices SET vnc_url = 'https://console.example/b?token=t-b' WHERE device_id = 'b'`)
	require.NoError(t, err)
	_, err = e.Pool.Exec(e.Ctx, `UPDATE devices SET pending_password_ct = password_ct, pending_key_id = password_key_id WHERE device_id = 'c'`)
	require.NoError(t, err)

	oldID := e.Keys.PrimaryID()
	newKey := newKey(t)
	rotated, err := secretbox.NewKeyring(newKey, e.Key)
	require.NoError(t, err)
	st := store.New(e.Pool, rotated)
	inv, err := st.Keys(e.Ctx)
	require.NoError(t, err)
	require.Equal(t, []store.KeyUsage{{KeyID: oldID, Counts: map[string]int{store.SecretPassword: 4, store.SecretPendingPassword: 1, store.SecretConsoleURL: 1}}}, inv.Keys)
	require.Equal(t, 1, inv.PlaintextConsoleURLs)
	before, beforeURLs := exported(t, e, st)

	res, err := st.Rekey(e.Ctx, 2, nil)
	require.NoError(t, err)
	require.Equal(t, store.RekeyResult{Resealed: 6, Sealed: 1}, res)
	inv, err = st.Keys(e.Ctx)
	require.NoError(t, err)
	require.Equal(t, []store.KeyUsage{{KeyID: rotated.PrimaryID(), Counts: map[string]int{store.SecretPassword: 4, store.SecretPendingPassword: 1, store.SecretConsoleURL: 2}}}, inv.Keys)
	require.Zero(t, inv.PlaintextConsoleURLs)

	again, err := st.Rekey(e.Ctx, 2, nil)
	require.NoError(t, err)
	require.Equal(t, store.RekeyResult{}, again, "resumable: nothing left to do")

	onlyNew, err := secretbox.NewKeyring(newKey)
	require.NoError(t, err)
	after, afterURLs := exported(t, e, store.New(e.Pool, onlyNew))
	require.Equal(t, before, after)
	require.Equal(t, beforeURLs, afterURLs)
	require.Equal(t, "https://console.example/a?token=t-a", afterURLs["a"])
	require.Equal(t, "https://console.example/b?token=t-b", afterURLs["b"])
	for id, pw := range after {
		require.Equal(t, truth[e.Device("f", id).Address], pw, "device %s", id)
	}
	var clear int
	require.NoError(t, e.Pool.QueryRow(e.Ctx, `SELECT count(*) FROM devices WHERE vnc_url IS NOT NULL`).Scan(&clear))
	require.Zero(t, clear)
}

// A row sealed by a key the keyring lacks stops rekey with an error naming the fix,
// and changes nothing.
func TestRekeyWithoutTheOldKey(t *testing.T) {
	t.Parallel()
	e := provisiontest.New(t)
	e.Provision("f", provisiontest.Header+"a,connect,g,,,\n")
	stranger, err := secretbox.NewKeyring(newKey(t))
	require.NoError(t, err)
	_, err = store.New(e.Pool, stranger).Rekey(e.Ctx, 0, nil)
	require.ErrorIs(t, err, secretbox.ErrUnknownKey)
	require.ErrorContains(t, err, "VNCFLEET_OLD_SECRET_KEYS")
	inv, err := e.Store.Keys(e.Ctx)
	require.NoError(t, err)
	require.Equal(t, e.Keys.PrimaryID(), inv.Keys[0].KeyID)
}
