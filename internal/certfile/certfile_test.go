package certfile

import (
	"crypto/tls"
	"crypto/x509"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/vncfleet/vncfleet/internal/testcert"
)

// served is the common name of the certificate r serves now.
func served(t *testing.T, r *Reloader) string {
	t.Helper()
	c, err := r.GetCertificate(&tls.ClientHelloInfo{})
	require.NoError(t, err)
	leaf, err := x509.ParseCertificate(c.Certificate[0])
	require.NoError(t, err)
	return leaf.Subject.CommonName
}

// replace writes new contents and moves the modification time on, as a renewal does
// (a file system's clock may not tick between two writes of a test).
func replace(t *testing.T, path string, data []byte, at time.Time) {
	t.Helper()
	require.NoError(t, os.WriteFile(path, data, 0o600))
	require.NoError(t, os.Chtimes(path, at, at))
}

func TestRenewedCertificateIsServedWithoutRestart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := testcert.NewCA(t)
	certA, keyA := ca.Server(t, "first")
	certFile := testcert.Write(t, dir, "tls.crt", certA)
	keyFile := testcert.Write(t, dir, "tls.key", keyA)
	r, err := New(certFile, keyFile, nil)
	require.NoError(t, err)
	r.checkEvery = 0 // look at the files on every handshake
	require.Equal(t, "first", served(t, r))

	// Renewal half done (the new certificate, the old key): the last good pair stays.
	certB, keyB := ca.Server(t, "second")
	later := time.Now().Add(time.Minute)
	replace(t, certFile, certB, later)
	require.Equal(t, "first", served(t, r))

	replace(t, keyFile, keyB, later)
	require.Equal(t, "second", served(t, r))

	// Files gone: still the last good certificate.
	require.NoError(t, os.Remove(certFile))
	require.Equal(t, "second", served(t, r))
}

func TestBadFilesFailAtStart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := testcert.NewCA(t)
	cert, _ := ca.Server(t, "x")
	_, otherKey := ca.Server(t, "y")
	certFile := testcert.Write(t, dir, "tls.crt", cert)
	_, err := New(certFile, dir+"/missing.key", nil)
	require.ErrorContains(t, err, "TLS key")
	keyFile := testcert.Write(t, dir, "other.key", otherKey)
	_, err = New(certFile, keyFile, nil)
	require.ErrorContains(t, err, "private key does not match public key")
	require.NotContains(t, err.Error(), "PRIVATE KEY")
}

func TestHandshakeNeedsTLS12(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := testcert.NewCA(t)
	cert, key := ca.Server(t, "x")
	r, err := New(testcert.Write(t, dir, "c", cert), testcert.Write(t, dir, "k", key), nil)
	require.NoError(t, err)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", r.Config())
	require.NoError(t, err)
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_ = c.(*tls.Conn).Handshake()
			_ = c.Close()
		}
	}()
	roots := x509.NewCertPool()
	require.True(t, roots.AppendCertsFromPEM(ca.PEM))
	dial := func(version uint16) error {
		c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: roots, MinVersion: version, MaxVersion: version})
		if err == nil {
			_ = c.Close()
		}
		return err
	}
	require.Error(t, dial(tls.VersionTLS11), "TLS 1.1 is refused")
	require.NoError(t, dial(tls.VersionTLS12))
	require.NoError(t, dial(tls.VersionTLS13))
}
