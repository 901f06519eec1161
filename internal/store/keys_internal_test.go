package store

import (
	"context"
	"crypto/rand"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/vncfleet/vncfleet/internal/dbtest"
	"github.com/vncfleet/vncfleet/internal/secretbox"
)

// A rotation that promotes a new password between rekey's read and its write wins:
// the row is not overwritten with the re-sealed old password, and counts as raced.
func TestRekeyNeverOverwritesAConcurrentRotation(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, _ := dbtest.New(t)
	oldKey, newKey := make([]byte, secretbox.KeySize), make([]byte, secretbox.KeySize)
	_, _ = rand.Read(oldKey)
	_, _ = rand.Read(newKey)
	oldRing, err := secretbox.NewKeyring(oldKey)
	require.NoError(t, err)
	newRing, err := secretbox.NewKeyring(newKey, oldKey)
	require.NoError(t, err)
	before, during := New(pool, oldRing), New(pool, newRing)

	var pk int64
	require.NoError(t, pool.QueryRow(ctx, `
		WITH f AS (INSERT INTO fleets (name) VALUES ('f') RETURNING id)
		INSERT INTO devices (fleet_id, device_id, action, spec_hash, cloud_address, status)
		SELECT id, 'd', 'connect', '\x00', 'addr-1', 'ready' FROM f RETURNING id`).Scan(&pk))
	setPassword := func(st *Store, pw string) {
		ct, id, err := st.seal(pk, pw)
		require.NoError(t, err)
		_, err = pool.Exec(ctx, `UPDATE devices SET password_ct = $2, password_key_id = $3, password_set_at = now() WHERE id = $1`, pk, ct, id)
		require.NoError(t, err)
	}
	setPassword(before, "old-password")

	rows, err := during.staleRows(ctx, 0, 10)
	require.NoError(t, err)
	require.Len(t, rows, 1)
	setPassword(during, "rotated-password") // serve promotes a rotation meanwhile
	var res RekeyResult
	require.NoError(t, during.reseal(ctx, rows, &res))
	require.Equal(t, RekeyResult{Raced: 1}, res)

	c, err := during.GetCredentials(ctx, "f", "d")
	require.NoError(t, err)
	require.Equal(t, "rotated-password", c.CloudPassword, "the rotation is not lost")
	res, err = during.Rekey(ctx, 0, nil)
	require.NoError(t, err)
	require.Equal(t, RekeyResult{}, res, "the rotated row is under the new key already")
}
