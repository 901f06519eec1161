// Package secretbox encrypts cloud passwords at rest with AES-256-GCM.
//
// A Keyring has one primary key, which seals, and older keys, which only open: to
// rotate VNCFLEET_SECRET_KEY, the new key becomes primary and the old one moves to
// VNCFLEET_OLD_SECRET_KEYS until every row has been re-sealed. Each ciphertext is
// stored beside the id of the key that sealed it, so Open knows which key to use
// without trying them all, and a row still sealed by an old key is easy to find.
//
// A key id is the first 8 hex digits of the SHA-256 of the key: short enough to store
// in every row and read in a log, and revealing nothing useful about the key (4 bytes
// of a hash of 32 random bytes).
//
// A ciphertext is nonce (12 random bytes) || AES-GCM output (sealed text and 16-byte
// tag). Random nonces are safe for far more than 2^32 seals per key; a fleet re-seals
// a password only when it rotates it.
//
// The additional data given to Seal must be given again to Open. It is not stored; it
// binds the ciphertext to its row (the caller passes fleet name and device_id), so a
// ciphertext copied onto another device's row does not open.
package secretbox

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
)

// KeySize is the length of an AES-256 key.
const KeySize = 32

// NonceSize is the length of the random nonce that starts every ciphertext.
const NonceSize = 12

// Errors callers branch on. Messages never include key material or plaintext.
var (
	// ErrInvalidKey is a key that is not base64 or not KeySize bytes long.
	ErrInvalidKey = errors.New("secretbox: invalid key")
	// ErrUnknownKey is a ciphertext sealed by a key this keyring does not hold: the
	// key was dropped from VNCFLEET_OLD_SECRET_KEYS too early, or the row is foreign.
	ErrUnknownKey = errors.New("secretbox: ciphertext sealed by a key not in the keyring")
	// ErrOpen is a ciphertext that does not authenticate: tampered, truncated, or
	// bound to other additional data (another device's row).
	ErrOpen = errors.New("secretbox: ciphertext does not authenticate")
	// ErrNoKeyring is a nil *Keyring asked to seal or open.
	ErrNoKeyring = errors.New("secretbox: no keyring")
)

// ParseKey decodes a base64 key: standard or URL alphabet, padded or not, surrounding
// white space ignored (a key read from a file ends in a newline). It must decode to
// exactly KeySize bytes. Errors never include the key material.
func ParseKey(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, fmt.Errorf("%w: empty", ErrInvalidKey)
	}
	// Padding is optional: strip it and decode with the raw encodings. The alphabets
	// differ only in "+/" versus "-_", so at most one of them accepts the string.
	raw := strings.TrimRight(s, "=")
	for _, enc := range []*base64.Encoding{base64.RawStdEncoding, base64.RawURLEncoding} {
		key, err := enc.Strict().DecodeString(raw)
		if err != nil {
			continue
		}
		if len(key) != KeySize {
			return nil, fmt.Errorf("%w: decodes to %d bytes, want %d (generate one with: openssl rand -base64 32)", ErrInvalidKey, len(key), KeySize)
		}
		return key, nil
	}
	return nil, fmt.Errorf("%w: not base64 (generate one with: openssl rand -base64 32)", ErrInvalidKey)
}

// KeyID names a key without revealing it: the first 8 hex digits of its SHA-256.
func KeyID(key []byte) string {
	sum := sha256.Sum256(key)
	return hex.EncodeToString(sum[:4])
}

// Keyring seals with its primary key and opens with any of its keys. It is safe for
// concurrent use. Printing or logging it shows key ids only.
type Keyring struct {
	primary string
	old     []string // ids of the decrypt-only keys, in the order given
	aeads   map[string]cipher.AEAD
}

// NewKeyring builds a keyring: primary seals and opens, old keys only open. A key
// given twice counts once.
func NewKeyring(primary []byte, old ...[]byte) (*Keyring, error) {
	k := &Keyring{aeads: map[string]cipher.AEAD{}}
	seen := map[string][]byte{}
	for i, key := range append([][]byte{primary}, old...) {
		which := "primary key"
		if i > 0 {
			which = fmt.Sprintf("old key %d", i)
		}
		if len(key) != KeySize {
			return nil, fmt.Errorf("%w: %s has %d bytes, want %d", ErrInvalidKey, which, len(key), KeySize)
		}
		id := KeyID(key)
		if prev, dup := seen[id]; dup {
			if string(prev) != string(key) {
				// 1 in 4 billion, but a silent mix-up would make rows unreadable.
				return nil, fmt.Errorf("%w: %s has the same id %s as another key; generate a new one", ErrInvalidKey, which, id)
			}
			continue
		}
		block, err := aes.NewCipher(key)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %w", ErrInvalidKey, which, err)
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %w", ErrInvalidKey, which, err)
		}
		seen[id] = slices.Clone(key)
		k.aeads[id] = aead
		if i == 0 {
			k.primary = id
		} else {
			k.old = append(k.old, id)
		}
	}
	return k, nil
}

// PrimaryID is the id of the key that seals; a row sealed by any other id is due for
// re-sealing.
func (k *Keyring) PrimaryID() string {
	if k == nil {
		return ""
	}
	return k.primary
}

// Has reports whether the keyring holds the key named id, i.e. can open its rows.
func (k *Keyring) Has(id string) bool {
	if k == nil {
		return false
	}
	_, ok := k.aeads[id]
	return ok
}

// Seal encrypts plaintext under the primary key, bound to additionalData, and returns
// nonce || ciphertext and the primary key's id, both to be stored.
func (k *Keyring) Seal(plaintext, additionalData []byte) (ciphertext []byte, keyID string, err error) {
	if k == nil {
		return nil, "", ErrNoKeyring
	}
	aead := k.aeads[k.primary]
	out := make([]byte, NonceSize, NonceSize+len(plaintext)+aead.Overhead())
	if _, err := rand.Read(out); err != nil {
		return nil, "", fmt.Errorf("secretbox: nonce: %w", err)
	}
	return aead.Seal(out, out, plaintext, additionalData), k.primary, nil
}

// Open decrypts what Seal returned, with the key named keyID and the same
// additionalData. It fails with ErrUnknownKey or ErrOpen, never panics on any input.
func (k *Keyring) Open(ciphertext []byte, keyID string, additionalData []byte) ([]byte, error) {
	if k == nil {
		return nil, ErrNoKeyring
	}
	aead, ok := k.aeads[keyID]
	if !ok {
		// %q: the id comes from the database and might be anything.
		return nil, fmt.Errorf("%w (key id %q; the keyring has %s)", ErrUnknownKey, truncate(keyID, 16), k.ids())
	}
	if len(ciphertext) < NonceSize+aead.Overhead() {
		return nil, fmt.Errorf("%w: %d bytes is too short", ErrOpen, len(ciphertext))
	}
	pt, err := aead.Open(nil, ciphertext[:NonceSize], ciphertext[NonceSize:], additionalData)
	if err != nil {
		return nil, ErrOpen
	}
	return pt, nil
}

func (k *Keyring) ids() string {
	return strings.Join(append([]string{k.primary}, k.old...), ", ")
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

// String names the keys by id only, so a keyring printed or logged by mistake reveals
// nothing. Value receiver: a Keyring printed by value must not dump its ciphers.
func (k Keyring) String() string {
	if len(k.old) == 0 {
		return fmt.Sprintf("secretbox.Keyring{primary: %s}", k.primary)
	}
	return fmt.Sprintf("secretbox.Keyring{primary: %s, old: [%s]}", k.primary, strings.Join(k.old, " "))
}

// GoString is String: %#v must not dump the ciphers either.
func (k Keyring) GoString() string { return k.String() }

// Format prints String for every verb (%v, %+v, %#v, %s, %q, %x...), since the
// default formatting of the struct would print the expanded keys.
func (k Keyring) Format(f fmt.State, verb rune) {
	if verb == 'q' {
		fmt.Fprintf(f, "%q", k.String())
		return
	}
	_, _ = f.Write([]byte(k.String()))
}

// LogValue logs the key ids only.
func (k Keyring) LogValue() slog.Value {
	return slog.GroupValue(slog.String("primary", k.primary), slog.Any("old", k.old))
}
