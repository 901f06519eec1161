package zenlayer

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strconv"
	"strings"
)

// SignatureMethod is the only signing scheme of Zenlayer Cloud API 2.0; it is
// sent in X-ZC-Signature-Method and opens the Authorization header.
const SignatureMethod = "ZC2-HMAC-SHA256"

// SignedHeaders names the headers the signature covers, in canonical order.
const SignedHeaders = "content-type;host"

// ErrMalformedAuthorization is returned by ParseAuthorization for any header
// that is not exactly a ZC2-HMAC-SHA256 Credential/SignedHeaders/Signature list.
var ErrMalformedAuthorization = errors.New("zenlayer: malformed Authorization header")

// CanonicalRequest is the request as it is signed: the method, the canonical URI
// "/", an empty query, the signed headers (names lower-cased, values trimmed), the
// list of their names and the hex SHA-256 of the body.
//
// The canonical URI is "/" whatever path the request goes to (/api/v2/zec): that
// is how Zenlayer's reference describes it, so a server must sign the same way.
func CanonicalRequest(host, contentType string, body []byte) string {
	sum := sha256.Sum256(body)
	var b strings.Builder
	b.WriteString("POST\n/\n\n")
	b.WriteString("content-type:" + strings.TrimSpace(contentType) + "\n")
	b.WriteString("host:" + strings.TrimSpace(host) + "\n\n")
	b.WriteString(SignedHeaders + "\n")
	b.WriteString(hex.EncodeToString(sum[:]))
	return b.String()
}

// StringToSign binds a canonical request to the timestamp sent in X-ZC-Timestamp,
// so a captured signature is only good while the server accepts that timestamp.
func StringToSign(timestamp int64, canonicalRequest string) string {
	sum := sha256.Sum256([]byte(canonicalRequest))
	return SignatureMethod + "\n" + strconv.FormatInt(timestamp, 10) + "\n" + hex.EncodeToString(sum[:])
}

// SignInput is everything a signature depends on. The method is always POST and
// the URI always "/", so neither appears here.
type SignInput struct {
	// Host is the Host header as sent: the URL host, with the port only when it
	// is not the scheme's default.
	Host string
	// ContentType is the Content-Type header exactly as sent.
	ContentType string
	// Body is the request body, byte for byte.
	Body []byte
	// Timestamp is the X-ZC-Timestamp value, in unix seconds.
	Timestamp int64
	// AccessKeyPassword is the HMAC key. It is the secret half of the access key.
	AccessKeyPassword string
}

// Sign returns the hex HMAC-SHA256, keyed with the access key password, of the
// string to sign of in. It is a pure function, shared by the client and the
// simulator so both sides sign by the same recipe.
func Sign(in SignInput) string {
	mac := hmac.New(sha256.New, []byte(in.AccessKeyPassword))
	mac.Write([]byte(StringToSign(in.Timestamp, CanonicalRequest(in.Host, in.ContentType, in.Body))))
	return hex.EncodeToString(mac.Sum(nil))
}

// Authorization is the Authorization header value that carries a signature.
func Authorization(accessKeyID, signature string) string {
	return SignatureMethod + " Credential=" + accessKeyID + ", SignedHeaders=" + SignedHeaders + ", Signature=" + signature
}

// ParseAuthorization splits an Authorization header into its access key id, its
// signed header list and its signature. Each of the three parts must appear
// exactly once and nothing else may: a server that ignored unknown or repeated
// parts could be made to check a signature other than the one it logs.
func ParseAuthorization(h string) (accessKeyID, signedHeaders, signature string, err error) {
	rest, ok := strings.CutPrefix(strings.TrimSpace(h), SignatureMethod+" ")
	if !ok {
		return "", "", "", ErrMalformedAuthorization
	}
	seen := map[string]bool{}
	for part := range strings.SplitSeq(rest, ",") {
		name, value, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok || value == "" || seen[name] {
			return "", "", "", ErrMalformedAuthorization
		}
		seen[name] = true
		switch name {
		case "Credential":
			accessKeyID = value
		case "SignedHeaders":
			signedHeaders = value
		case "Signature":
			signature = value
		default:
			return "", "", "", ErrMalformedAuthorization
		}
	}
	if accessKeyID == "" || signedHeaders == "" || signature == "" {
		return "", "", "", ErrMalformedAuthorization
	}
	return accessKeyID, signedHeaders, signature, nil
}

// SignatureEqual compares two hex signatures in constant time, so a server does
// not tell an attacker how many leading characters of a forgery were right.
func SignatureEqual(a, b string) bool { return hmac.Equal([]byte(a), []byte(b)) }
