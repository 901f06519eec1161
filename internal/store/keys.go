package store

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// Kinds of sealed secrets, as KeyUsage counts them.
const (
	SecretPassword        = "passwords"         // devices.password_ct
	SecretPendingPassword = "pending passwords" // devices.pending_password_ct: a rotation waiting for readiness
	SecretConsoleURL      = "console URLs"      // devices.vnc_url_ct
)

// KeyUsage is how many stored secrets of each kind one key sealed.
type KeyUsage struct {
	KeyID  string
	Counts map[string]int // by Secret* kind
}

// Total is the number of secrets the key sealed.
func (u KeyUsage) Total() int {
	n := 0
	for _, c := range u.Counts {
		n += c
	}
	return n
}

// KeyInventory is what `vncfleet keys` shows.
type KeyInventory struct {
	Keys []KeyUsage // by key id
	// PlaintextConsoleURLs are console URLs stored in clear before migration 0009,
	// which Rekey seals.
	PlaintextConsoleURLs int
}

// Keys counts the stored secrets by the key that sealed them.
func (s *Store) Keys(ctx context.Context) (KeyInventory, error) {
	var inv KeyInventory
	rows, err := s.pool.Query(ctx, `
		SELECT key_id, kind, count(*) FROM (
			SELECT password_key_id AS key_id, $1 AS kind FROM devices WHERE password_ct IS NOT NULL
			UNION ALL SELECT pending_key_id, $2 FROM devices WHERE pending_password_ct IS NOT NULL
			UNION ALL SELECT vnc_url_key_id, $3 FROM devices WHERE vnc_url_ct IS NOT NULL
		) sealed GROUP BY key_id, kind ORDER BY key_id`, SecretPassword, SecretPendingPassword, SecretConsoleURL)
	if err != nil {
		return inv, fmt.Errorf("keys: %w", err)
	}
	for rows.Next() {
		var id *string
		var kind string
		var n int
		if err := rows.Scan(&id, &kind, &n); err != nil {
			rows.Close()
			return inv, fmt.Errorf("keys: %w", err)
		}
		keyID := ""
		if id != nil {
			keyID = *id
		}
		if len(inv.Keys) == 0 || inv.Keys[len(inv.Keys)-1].KeyID != keyID {
			inv.Keys = append(inv.Keys, KeyUsage{KeyID: keyID, Counts: map[string]int{}})
		}
		inv.Keys[len(inv.Keys)-1].Counts[kind] = n
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return inv, fmt.Errorf("keys: %w", err)
	}
	if err := s.pool.QueryRow(ctx, `SELECT count(*) FROM devices WHERE vnc_url IS NOT NULL`).Scan(&inv.PlaintextConsoleURLs); err != nil {
		return inv, fmt.Errorf("keys: %w", err)
	}
	return inv, nil
}

// RekeyResult counts what Rekey did.
type RekeyResult struct {
	// Resealed counts the secrets moved to the primary key.
	Resealed int
	// Sealed counts console URLs that were stored in clear and are now sealed.
	Sealed int
	// Raced counts rows that changed between being read and being written (a
	// rotation promoted a password, a console URL was fetched): they were read again.
	Raced int
}

// DefaultRekeyBatch is how many device rows Rekey reads and writes per transaction:
// small enough that no lock is held for long while serve works on the same rows.
const DefaultRekeyBatch = 500

// maxRekeyPasses bounds the passes over the table: each pass after the first only
// retries rows that raced with a concurrent change.
const maxRekeyPasses = 10

// ErrRekeyRaced means rows kept changing under Rekey for maxRekeyPasses passes; run
// it again.
var ErrRekeyRaced = errors.New("rows kept changing during rekey; run it again")

// sealedRow is a device row's secrets as Rekey read them.
type sealedRow struct {
	pk                int64
	password, pending []byte
	passwordKey       *string
	pendingKey        *string
	url               sealedURL
}

// Rekey re-seals every stored secret that is not sealed by the primary key (and
// seals console URLs stored in clear), batch rows at a time (≤ 0: DefaultRekeyBatch),
// calling progress after each batch. It is resumable (a row already under the primary
// key is not read again) and safe while serve runs: each row is written only if its
// ciphertexts are still the ones read, so a password that a rotation promoted in
// between is never overwritten with the old one; such a row is read again.
func (s *Store) Rekey(ctx context.Context, batch int, progress func(RekeyResult)) (RekeyResult, error) {
	var res RekeyResult
	if s.keys == nil {
		return res, ErrNoKey
	}
	if batch <= 0 {
		batch = DefaultRekeyBatch
	}
	for range maxRekeyPasses {
		raced := res.Raced
		var cursor int64
		for {
			rows, err := s.staleRows(ctx, cursor, batch)
			if err != nil {
				return res, err
			}
			if len(rows) == 0 {
				break
			}
			if err := s.reseal(ctx, rows, &res); err != nil {
				return res, err
			}
			cursor = rows[len(rows)-1].pk
			if progress != nil {
				progress(res)
			}
		}
		if res.Raced == raced {
			return res, nil
		}
	}
	return res, ErrRekeyRaced
}

// staleRows reads the next rows after cursor holding a secret not sealed by the
// primary key, or a console URL in clear.
func (s *Store) staleRows(ctx context.Context, cursor int64, limit int) ([]sealedRow, error) {
	rows, err := s.pool.Query(ctx, `
		SELECT id, password_ct, password_key_id, pending_password_ct, pending_key_id, vnc_url_ct, vnc_url_key_id, vnc_url
		FROM devices
		WHERE id > $1 AND ((password_ct IS NOT NULL AND password_key_id IS DISTINCT FROM $2)
		                OR (pending_password_ct IS NOT NULL AND pending_key_id IS DISTINCT FROM $2)
		                OR (vnc_url_ct IS NOT NULL AND vnc_url_key_id IS DISTINCT FROM $2)
		                OR vnc_url IS NOT NULL)
		ORDER BY id LIMIT $3`, cursor, s.keys.PrimaryID(), limit)
	if err != nil {
		return nil, fmt.Errorf("rekey: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (sealedRow, error) {
		var r sealedRow
		err := row.Scan(&r.pk, &r.password, &r.passwordKey, &r.pending, &r.pendingKey, &r.url.ct, &r.url.keyID, &r.url.legacy)
		return r, err
	})
	if err != nil {
		return nil, fmt.Errorf("rekey: %w", err)
	}
	return out, nil
}

// reseal writes rows under the primary key in one transaction, each row only if its
// stored ciphertexts are still the ones read.
func (s *Store) reseal(ctx context.Context, rows []sealedRow, res *RekeyResult) error {
	primary := s.keys.PrimaryID()
	b := &pgx.Batch{}
	counts := make([]RekeyResult, len(rows))
	for i, r := range rows {
		password, passwordKey, n, err := s.resealOne(r.pk, r.password, r.passwordKey, passwordAAD(r.pk), primary)
		if err != nil {
			return err
		}
		counts[i].Resealed += n
		pending, pendingKey, n, err := s.resealOne(r.pk, r.pending, r.pendingKey, passwordAAD(r.pk), primary)
		if err != nil {
			return err
		}
		counts[i].Resealed += n
		url, urlKey := r.url.ct, r.url.keyID
		if r.url.legacy != nil && r.url.ct == nil {
			if url, urlKey, err = s.sealURL(r.pk, *r.url.legacy); err != nil {
				return err
			}
			counts[i].Sealed++
		} else if url, urlKey, n, err = s.resealOne(r.pk, r.url.ct, r.url.keyID, consoleURLAAD(r.pk), primary); err != nil {
			return err
		} else {
			counts[i].Resealed += n
		}
		b.Queue(`
			UPDATE devices SET password_ct = $2, password_key_id = $3, pending_password_ct = $4, pending_key_id = $5,
			       vnc_url_ct = $6, vnc_url_key_id = $7, vnc_url = NULL
			WHERE id = $1 AND password_ct IS NOT DISTINCT FROM $8 AND pending_password_ct IS NOT DISTINCT FROM $9
			  AND vnc_url_ct IS NOT DISTINCT FROM $10 AND vnc_url IS NOT DISTINCT FROM $11`,
			r.pk, password, passwordKey, pending, pendingKey, url, urlKey, r.password, r.pending, r.url.ct, r.url.legacy)
	}
	return s.inTx(ctx, func(tx pgx.Tx) error {
		br := tx.SendBatch(ctx, b)
		defer br.Close()
		for i := range rows {
			tag, err := br.Exec()
			if err != nil {
				return fmt.Errorf("rekey: %w", err)
			}
			if tag.RowsAffected() == 0 {
				res.Raced++
				continue
			}
			res.Resealed += counts[i].Resealed
			res.Sealed += counts[i].Sealed
		}
		return br.Close()
	})
}

// resealOne opens ct (sealed by keyID) and seals it again under the primary key;
// a nil ct, or one the primary key sealed, is returned as it is (n = 0).
func (s *Store) resealOne(pk int64, ct []byte, keyID *string, aad []byte, primary string) ([]byte, *string, int, error) {
	if ct == nil || (keyID != nil && *keyID == primary) {
		return ct, keyID, 0, nil
	}
	id := ""
	if keyID != nil {
		id = *keyID
	}
	pt, err := s.keys.Open(ct, id, aad)
	if err != nil {
		return nil, nil, 0, fmt.Errorf("rekey device %d: %w (add the key that sealed it to VNCFLEET_OLD_SECRET_KEYS)", pk, err)
	}
	out, newID, err := s.keys.Seal(pt, aad)
	if err != nil {
		return nil, nil, 0, fmt.Errorf("rekey device %d: %w", pk, err)
	}
	return out, &newID, 1, nil
}

func (s *Store) sealURL(pk int64, url string) ([]byte, *string, error) {
	ct, id, err := s.keys.Seal([]byte(url), consoleURLAAD(pk))
	if err != nil {
		return nil, nil, fmt.Errorf("seal console URL of device %d: %w", pk, err)
	}
	return ct, &id, nil
}
