package store

import (
	"context"
	"crypto/rand"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/vncfleet/vncfleet/internal/dbtest"
	"github.com/vncfleet/vncfleet/internal/secretbox"
)

// BenchmarkRekey re-seals 10,000 passwords from one key to the next per iteration:
// ns/op divided by 10,000 is the time per device row (go test -run '^$' -bench Rekey
// ./internal/store/).
func BenchmarkRekey(b *testing.B) {
	const rows = 10_000
	ctx := context.Background()
	pool, _ := dbtest.New(b)
	key := make([]byte, secretbox.KeySize)
	_, _ = rand.Read(key)
	ring, err := secretbox.NewKeyring(key)
	if err != nil {
		b.Fatal(err)
	}
	st := New(pool, ring)
	if _, err := pool.Exec(ctx, `
		WITH f AS (INSERT INTO fleets (name) VALUES ('f') RETURNING id)
		INSERT INTO devices (fleet_id, device_id, action, spec_hash, cloud_address, status, password_set_at)
		SELECT f.id, 'd' || g, 'connect', '\x00', 'addr-' || g, 'ready', now() FROM f, generate_series(1, $1) g`, rows); err != nil {
		b.Fatal(err)
	}
	pks, err := column[int64](ctx, pool, "devices", `SELECT id FROM devices`)
	if err != nil {
		b.Fatal(err)
	}
	batch := &pgx.Batch{}
	for _, pk := range pks {
		ct, id, err := st.seal(pk, "a-cloud-password")
		if err != nil {
			b.Fatal(err)
		}
		batch.Queue(`UPDATE devices SET password_ct = $2, password_key_id = $3 WHERE id = $1`, pk, ct, id)
	}
	if err := pool.SendBatch(ctx, batch).Close(); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for b.Loop() {
		next := make([]byte, secretbox.KeySize)
		_, _ = rand.Read(next)
		if ring, err = secretbox.NewKeyring(next, key); err != nil {
			b.Fatal(err)
		}
		key, st = next, New(pool, ring)
		res, err := st.Rekey(ctx, 0, nil)
		if err != nil || res.Resealed != rows {
			b.Fatalf("rekey: %+v, %v", res, err)
		}
	}
}
