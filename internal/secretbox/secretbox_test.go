package secretbox

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func newKey(t testing.TB) []byte {
	t.Helper()
	k := make([]byte, KeySize)
	_, err := rand.Read(k)
	require.NoError(t, err)
	return k
}

func TestSealOpenRoundTrip(t *testing.T) {
	t.Parallel()
	kr, err := NewKeyring(newKey(t))
	require.NoError(t, err)
	for _, tc := range []struct{ name, plaintext, aad string }{
		{"password", "hunter2-cloud-password", "default\x00device-1"},
		{"empty plaintext", "", "default\x00device-1"},
		{"no additional data", "pw", ""},
		{"long", strings.Repeat("x", 10000), "fleet\x00dev"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ct, id, err := kr.Seal([]byte(tc.plaintext), []byte(tc.aad))
			require.NoError(t, err)
			require.Equal(t, kr.PrimaryID(), id)
			require.Len(t, ct, NonceSize+len(tc.plaintext)+16)
			if tc.plaintext != "" {
				require.NotContains(t, string(ct), tc.plaintext)
			}
			pt, err := kr.Open(ct, id, []byte(tc.aad))
			require.NoError(t, err)
			require.Equal(t, tc.plaintext, string(pt))

			ct2, _, err := kr.Seal([]byte(tc.plaintext), []byte(tc.aad))
			require.NoError(t, err)
			require.NotEqual(t, ct[:NonceSize], ct2[:NonceSize], "a fresh nonce every time")
		})
	}
}

func TestOpenRejectsTampering(t *testing.T) {
	t.Parallel()
	primary, other := newKey(t), newKey(t)
	kr, err := NewKeyring(primary, other)
	require.NoError(t, err)
	aad := []byte("default\x00device-1")
	ct, id, err := kr.Seal([]byte("pw-Xq7"), aad)
	require.NoError(t, err)
	flip := func(i int) []byte {
		c := bytes.Clone(ct)
		c[i] ^= 1
		return c
	}
	for _, tc := range []struct {
		name string
		ct   []byte
		id   string
		aad  []byte
		err  error
	}{
		{"flipped tag bit", flip(len(ct) - 1), id, aad, ErrOpen},
		{"flipped body bit", flip(NonceSize), id, aad, ErrOpen},
		{"flipped nonce bit", flip(0), id, aad, ErrOpen},
		{"other device", ct, id, []byte("default\x00device-2"), ErrOpen},
		{"other fleet", ct, id, []byte("other\x00device-1"), ErrOpen},
		{"no additional data", ct, id, nil, ErrOpen},
		{"truncated", ct[:len(ct)-1], id, aad, ErrOpen},
		{"too short", ct[:10], id, aad, ErrOpen},
		{"empty", nil, id, aad, ErrOpen},
		{"appended byte", append(bytes.Clone(ct), 0), id, aad, ErrOpen},
		{"another key of the ring", ct, KeyID(other), aad, ErrOpen},
		{"unknown key id", ct, "deadbeef", aad, ErrUnknownKey},
		{"empty key id", ct, "", aad, ErrUnknownKey},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			pt, err := kr.Open(tc.ct, tc.id, tc.aad)
			require.ErrorIs(t, err, tc.err)
			require.Nil(t, pt)
			require.NotContains(t, err.Error(), "pw-Xq7")
		})
	}
	// The untampered original still opens: the cases above failed for their change.
	pt, err := kr.Open(ct, id, aad)
	require.NoError(t, err)
	require.Equal(t, "pw-Xq7", string(pt))
}

func TestRotation(t *testing.T) {
	t.Parallel()
	oldKey, newKeyBytes := newKey(t), newKey(t)
	before, err := NewKeyring(oldKey)
	require.NoError(t, err)
	ct, oldID, err := before.Seal([]byte("pw"), []byte("row"))
	require.NoError(t, err)

	after, err := NewKeyring(newKeyBytes, oldKey)
	require.NoError(t, err)
	require.Equal(t, KeyID(newKeyBytes), after.PrimaryID())
	require.NotEqual(t, oldID, after.PrimaryID())
	require.True(t, after.Has(oldID))
	pt, err := after.Open(ct, oldID, []byte("row"))
	require.NoError(t, err, "an old key still opens what it sealed")
	require.Equal(t, "pw", string(pt))

	resealed, newID, err := after.Seal(pt, []byte("row"))
	require.NoError(t, err)
	require.Equal(t, after.PrimaryID(), newID, "new ciphertexts use the primary key")
	_, err = before.Open(resealed, newID, []byte("row"))
	require.ErrorIs(t, err, ErrUnknownKey, "the old ring cannot read the new key's rows")

	// Once the old key is dropped, its rows are unreadable, and say so.
	dropped, err := NewKeyring(newKeyBytes)
	require.NoError(t, err)
	_, err = dropped.Open(ct, oldID, []byte("row"))
	require.ErrorIs(t, err, ErrUnknownKey)
	require.Contains(t, err.Error(), oldID)
	require.Contains(t, err.Error(), dropped.PrimaryID())
}

func TestNewKeyring(t *testing.T) {
	t.Parallel()
	key := newKey(t)
	for _, tc := range []struct {
		name    string
		primary []byte
		old     [][]byte
		wantErr string
	}{
		{"short primary", key[:31], nil, "primary key has 31 bytes"},
		{"long primary", append(bytes.Clone(key), 0), nil, "primary key has 33 bytes"},
		{"nil primary", nil, nil, "primary key has 0 bytes"},
		{"short old key", key, [][]byte{key[:16]}, "old key 1 has 16 bytes"},
		{"duplicate is fine", key, [][]byte{key}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			kr, err := NewKeyring(tc.primary, tc.old...)
			if tc.wantErr == "" {
				require.NoError(t, err)
				require.Equal(t, fmt.Sprintf("secretbox.Keyring{primary: %s}", KeyID(key)), kr.String())
				return
			}
			require.ErrorIs(t, err, ErrInvalidKey)
			require.ErrorContains(t, err, tc.wantErr)
		})
	}
}

func TestParseKey(t *testing.T) {
	t.Parallel()
	// Bytes that give both '+' '/' and '-' '_' characters in the two alphabets.
	key := bytes.Repeat([]byte{0xfb, 0xff, 0xbf}, 11)[:KeySize]
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		s := enc.EncodeToString(key)
		t.Run(s, func(t *testing.T) {
			t.Parallel()
			got, err := ParseKey(" " + s + "\n")
			require.NoError(t, err)
			require.Equal(t, key, got)
		})
	}
	short := base64.StdEncoding.EncodeToString(key[:16])
	mixed := strings.Replace(base64.StdEncoding.EncodeToString(key), "+", "-", 1)
	for _, tc := range []struct{ name, in, want string }{
		{"16 bytes", short, "decodes to 16 bytes, want 32"},
		{"33 bytes", base64.StdEncoding.EncodeToString(append(bytes.Clone(key), 1)), "decodes to 33 bytes"},
		{"not base64", "not base64 at all!", "not base64"},
		{"mixed alphabets", mixed, "not base64"},
		{"empty", "  \n", "empty"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := ParseKey(tc.in)
			require.ErrorIs(t, err, ErrInvalidKey)
			require.ErrorContains(t, err, tc.want)
			if strings.TrimSpace(tc.in) != "" {
				require.NotContains(t, err.Error(), strings.TrimSpace(tc.in), "the key never appears in an error")
			}
		})
	}
}

func TestKeyringNeverPrintsKeys(t *testing.T) {
	t.Parallel()
	primary, old := newKey(t), newKey(t)
	kr, err := NewKeyring(primary, old)
	require.NoError(t, err)
	var logged bytes.Buffer
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("keys", "keyring", kr, "by_value", *kr)
	outputs := []string{logged.String()}
	for _, format := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%d"} {
		outputs = append(outputs, fmt.Sprintf(format, kr), fmt.Sprintf(format, *kr), fmt.Sprintf(format, []*Keyring{kr}))
	}
	for _, out := range outputs {
		for _, key := range [][]byte{primary, old} {
			require.NotContains(t, out, base64.StdEncoding.EncodeToString(key))
			require.NotContains(t, out, string(key))
			require.NotContains(t, out, fmt.Sprintf("%x", key))
		}
		require.Contains(t, out, kr.PrimaryID(), out)
		require.Contains(t, out, KeyID(old), out)
	}
}

func TestNilKeyring(t *testing.T) {
	t.Parallel()
	var kr *Keyring
	_, _, err := kr.Seal([]byte("pw"), nil)
	require.ErrorIs(t, err, ErrNoKeyring)
	_, err = kr.Open([]byte("x"), "id", nil)
	require.ErrorIs(t, err, ErrNoKeyring)
	require.Empty(t, kr.PrimaryID())
	require.False(t, kr.Has(""))
}

// FuzzOpen: no input makes Open panic, and nothing but a real ciphertext with its key
// id and additional data opens.
func FuzzOpen(f *testing.F) {
	kr, err := NewKeyring(bytes.Repeat([]byte{7}, KeySize), bytes.Repeat([]byte{8}, KeySize))
	require.NoError(f, err)
	ct, id, err := kr.Seal([]byte("password"), []byte("aad"))
	require.NoError(f, err)
	f.Add(ct, id, []byte("aad"))
	f.Add(ct[:NonceSize+16], id, []byte("aad"))
	f.Add([]byte{}, "", []byte{})
	f.Add(ct, KeyID(bytes.Repeat([]byte{8}, KeySize)), []byte("aad"))
	f.Fuzz(func(t *testing.T, c []byte, keyID string, aad []byte) {
		pt, err := kr.Open(c, keyID, aad)
		if err != nil {
			require.Nil(t, pt)
			return
		}
		// Only "password" under "aad" was ever sealed with this key (here, or in
		// earlier runs whose ciphertexts the fuzz cache keeps).
		if keyID != id || string(aad) != "aad" || string(pt) != "password" {
			t.Fatalf("forged input opened: %x %q %q -> %q", c, keyID, aad, pt)
		}
	})
}

// FuzzParseKey: no input panics, and a key that parses is KeySize bytes.
func FuzzParseKey(f *testing.F) {
	f.Add(base64.StdEncoding.EncodeToString(make([]byte, KeySize)))
	f.Add("====")
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		key, err := ParseKey(s)
		if err == nil && len(key) != KeySize {
			t.Fatalf("parsed a %d-byte key", len(key))
		}
	})
}
