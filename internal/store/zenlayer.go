package store

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// ConsoleURLWanted is a device whose Zenlayer VNC console URL must be fetched.
type ConsoleURLWanted struct {
	DevicePK   int64
	InstanceID string
}

// consoleURLsWanted lists a manifest's devices that name a Zenlayer instance whose
// console URL is not known yet (new device, or the instance changed).
func consoleURLsWanted(ctx context.Context, tx pgx.Tx, manifestID int64) ([]ConsoleURLWanted, error) {
	rows, err := tx.Query(ctx, `
		SELECT id, zenlayer_instance_id FROM devices
		WHERE manifest_id = $1 AND desired_state = 'present' AND zenlayer_instance_id IS NOT NULL
		  AND vnc_url_instance IS DISTINCT FROM zenlayer_instance_id`, manifestID)
	if err != nil {
		return nil, fmt.Errorf("console URLs wanted: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (ConsoleURLWanted, error) {
		var w ConsoleURLWanted
		err := row.Scan(&w.DevicePK, &w.InstanceID)
		return w, err
	})
	if err != nil {
		return nil, fmt.Errorf("console URLs wanted: %w", err)
	}
	return out, nil
}

// consoleURLAAD binds a sealed console URL to its device row, apart from the row's
// password: the two ciphertexts cannot stand in for each other.
func consoleURLAAD(devicePK int64) []byte {
	return append(passwordAAD(devicePK), "/vnc_url"...)
}

// sealedURL is a console URL as stored: sealed (ct, keyID), or in clear (legacy) for
// rows stored before migration 0009 and not yet sealed by SealLegacyConsoleURLs.
type sealedURL struct {
	ct     []byte
	keyID  *string
	legacy *string
}

// consoleURLColumnsOf selects a sealedURL of the devices row named alias, in the
// order of its fields.
func consoleURLColumnsOf(alias string) string {
	return alias + `.vnc_url_ct, ` + alias + `.vnc_url_key_id, ` + alias + `.vnc_url`
}

// openConsoleURL decrypts a stored console URL; "" when the device has none.
func (s *Store) openConsoleURL(devicePK int64, u sealedURL) (string, error) {
	switch {
	case u.ct != nil && u.keyID != nil:
		if s.keys == nil {
			return "", ErrNoKey
		}
		pt, err := s.keys.Open(u.ct, *u.keyID, consoleURLAAD(devicePK))
		if err != nil {
			return "", fmt.Errorf("open console URL of device %d: %w", devicePK, err)
		}
		return string(pt), nil
	case u.legacy != nil:
		return *u.legacy, nil
	}
	return "", nil
}

// SetConsoleURL records, sealed, the VNC console URL of a device's Zenlayer instance,
// unless the manifest has named another instance since.
func (s *Store) SetConsoleURL(ctx context.Context, devicePK int64, instanceID, url string) error {
	if s.keys == nil {
		return ErrNoKey
	}
	ct, keyID, err := s.keys.Seal([]byte(url), consoleURLAAD(devicePK))
	if err != nil {
		return fmt.Errorf("seal console URL of device %d: %w", devicePK, err)
	}
	_, err = s.pool.Exec(ctx, `
		UPDATE devices SET vnc_url = NULL, vnc_url_ct = $3, vnc_url_key_id = $4, vnc_url_instance = $2,
		       vnc_url_error = NULL, updated_at = now()
		WHERE id = $1 AND zenlayer_instance_id = $2`, devicePK, instanceID, ct, keyID)
	if err != nil {
		return fmt.Errorf("set console URL: %w", err)
	}
	return nil
}

// SetConsoleURLError records why a device's console URL could not be fetched.
func (s *Store) SetConsoleURLError(ctx context.Context, devicePK int64, instanceID, msg string) error {
	_, err := s.pool.Exec(ctx, `
		UPDATE devices SET vnc_url = NULL, vnc_url_ct = NULL, vnc_url_key_id = NULL, vnc_url_instance = $2,
		       vnc_url_error = $3, updated_at = now()
		WHERE id = $1 AND zenlayer_instance_id = $2`, devicePK, instanceID, msg)
	if err != nil {
		return fmt.Errorf("set console URL error: %w", err)
	}
	return nil
}
