package zenlayer_test

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/vncfleet/vncfleet/zenlayer"
)

const (
	keyID    = "AKID-test"
	password = "zenlayer-password-value"
)

// TestSignatureVector builds the signature step by step from the documented
// recipe and checks CanonicalRequest, StringToSign and Sign against each step,
// and the result against a value computed independently with openssl:
//
//	bh=$(printf '%s' '{"instanceId":"instanceId1"}' | openssl dgst -sha256 -r | cut -d' ' -f1)
//	cr=$(printf 'POST\n/\n\ncontent-type:application/json\nhost:console.zenlayer.com\n\ncontent-type;host\n%s' "$bh")
//	crh=$(printf '%s' "$cr" | openssl dgst -sha256 -r | cut -d' ' -f1)
//	printf 'ZC2-HMAC-SHA256\n1700000000\n%s' "$crh" | openssl dgst -sha256 -hmac zenlayer-password-value -r
func TestSignatureVector(t *testing.T) {
	t.Parallel()
	body := []byte(`{"instanceId":"instanceId1"}`)
	const host, ct, ts = "console.zenlayer.com", "application/json", int64(1700000000)

	bodyHash := sha256.Sum256(body)
	require.Equal(t, "3c1c1053a9e04ad3e9ed5edc0e1a712f37eb13d5918ba91758877b9a4c5b7486", hex.EncodeToString(bodyHash[:]))
	canonical := "POST\n" + "/\n" + "\n" +
		"content-type:application/json\n" + "host:console.zenlayer.com\n" + "\n" +
		"content-type;host\n" + hex.EncodeToString(bodyHash[:])
	require.Equal(t, canonical, zenlayer.CanonicalRequest(host, ct, body))

	crHash := sha256.Sum256([]byte(canonical))
	require.Equal(t, "663cdca909954cc8a66b4d68a0ffd688801723b2b540e9bc95b3258a9f8ac8a3", hex.EncodeToString(crHash[:]))
	toSign := "ZC2-HMAC-SHA256\n" + "1700000000\n" + hex.EncodeToString(crHash[:])
	require.Equal(t, toSign, zenlayer.StringToSign(ts, canonical))

	mac := hmac.New(sha256.New, []byte(password))
	mac.Write([]byte(toSign))
	want := hex.EncodeToString(mac.Sum(nil))
	require.Equal(t, "628187b3aa27b08b59e5175e55378c693b24eba4421009ba1f409e1e1dfd9800", want, "openssl and crypto/hmac agree")
	require.Equal(t, want, zenlayer.Sign(zenlayer.SignInput{Host: host, ContentType: ct, Body: body, Timestamp: ts, AccessKeyPassword: password}))

	// Header values are trimmed before signing.
	require.Equal(t, want, zenlayer.Sign(zenlayer.SignInput{Host: " " + host + " ", ContentType: ct + " ", Body: body, Timestamp: ts, AccessKeyPassword: password}))
}

// TestSignDependsOnEveryInput: changing any one input changes the signature, so
// none of them can be tampered with unnoticed.
func TestSignDependsOnEveryInput(t *testing.T) {
	t.Parallel()
	base := zenlayer.SignInput{Host: "h:1", ContentType: "application/json", Body: []byte(`{"instanceId":"a"}`), Timestamp: 1, AccessKeyPassword: "p"}
	ref := zenlayer.Sign(base)
	for name, mut := range map[string]func(*zenlayer.SignInput){
		"host":         func(in *zenlayer.SignInput) { in.Host = "h:2" },
		"content type": func(in *zenlayer.SignInput) { in.ContentType = "text/plain" },
		"body":         func(in *zenlayer.SignInput) { in.Body = []byte(`{"instanceId":"b"}`) },
		"timestamp":    func(in *zenlayer.SignInput) { in.Timestamp = 2 },
		"password":     func(in *zenlayer.SignInput) { in.AccessKeyPassword = "q" },
	} {
		in := base
		mut(&in)
		require.NotEqual(t, ref, zenlayer.Sign(in), name)
	}
}

func TestParseAuthorization(t *testing.T) {
	t.Parallel()
	id, signed, sig, err := zenlayer.ParseAuthorization(zenlayer.Authorization("AKID1", "abc123"))
	require.NoError(t, err)
	require.Equal(t, []string{"AKID1", "content-type;host", "abc123"}, []string{id, signed, sig})

	id, signed, sig, err = zenlayer.ParseAuthorization("  ZC2-HMAC-SHA256 Signature=ff,Credential=K ,  SignedHeaders=host  ")
	require.NoError(t, err, "order and spacing do not matter")
	require.Equal(t, []string{"K", "host", "ff"}, []string{id, signed, sig})

	for _, h := range []string{
		"",
		"Basic dXNlcjpwYXNz",
		"ZC2-HMAC-SHA1 Credential=K, SignedHeaders=content-type;host, Signature=ff",
		"ZC2-HMAC-SHA256",
		"ZC2-HMAC-SHA256 Credential=K, SignedHeaders=content-type;host",
		"ZC2-HMAC-SHA256 Credential=K, SignedHeaders=content-type;host, Signature=",
		"ZC2-HMAC-SHA256 Credential=K, SignedHeaders=content-type;host, Signature=ff, Signature=ee",
		"ZC2-HMAC-SHA256 Credential=K, SignedHeaders=content-type;host, Signature=ff, Extra=1",
		"ZC2-HMAC-SHA256 Credential=K, SignedHeaders=content-type;host, Signatureff",
	} {
		_, _, _, err := zenlayer.ParseAuthorization(h)
		require.ErrorIs(t, err, zenlayer.ErrMalformedAuthorization, "%q", h)
	}
}
