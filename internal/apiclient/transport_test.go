package apiclient_test

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/vncfleet/vncfleet/internal/apiclient"
	"github.com/vncfleet/vncfleet/internal/testcert"
)

func TestTokenNeverTravelsInClearAcrossANetwork(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		url, token string
		insecure   bool
		refused    bool
	}{
		{"http://vncfleet.example:8080", token, false, true},
		{"http://10.1.2.3:8080", token, false, true},
		{"http://vncfleet.example:8080", token, true, false}, // --insecure
		{"http://vncfleet.example:8080", "", false, false},   // no token to leak
		{"https://vncfleet.example", token, false, false},
		{"http://127.0.0.1:8080", token, false, false},
		{"http://[::1]:8080", token, false, false},
		{"http://localhost:8080", token, false, false},
	} {
		_, err := apiclient.NewWithConfig(apiclient.Config{BaseURL: tc.url, Token: tc.token, Insecure: tc.insecure})
		if tc.refused {
			require.ErrorIs(t, err, apiclient.ErrPlainHTTP, tc.url)
			require.NotContains(t, err.Error(), token)
			require.Contains(t, err.Error(), "--insecure")
		} else {
			require.NoError(t, err, tc.url)
		}
	}
}

func TestCAFileIsTrustedBesidesTheSystemRoots(t *testing.T) {
	t.Parallel()
	ca := testcert.NewCA(t)
	certPEM, keyPEM := ca.Server(t, "vncfleet")
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	require.NoError(t, err)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		require.Equal(t, "Bearer "+token, r.Header.Get("Authorization"))
		_, _ = io.WriteString(w, "device_id\n")
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{pair}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	ctx := context.Background()

	// The system roots alone do not know the test CA.
	plain, err := apiclient.NewWithConfig(apiclient.Config{BaseURL: srv.URL, Token: token})
	require.NoError(t, err)
	err = plain.Export(ctx, "", false, io.Discard)
	require.True(t, apiclient.IsUnreachable(err), "%v", err)
	require.ErrorContains(t, err, "certificate")

	caFile := testcert.Write(t, t.TempDir(), "ca.pem", ca.PEM)
	trusting, err := apiclient.NewWithConfig(apiclient.Config{BaseURL: srv.URL, Token: token, CAFile: caFile})
	require.NoError(t, err)
	var out strings.Builder
	require.NoError(t, trusting.Export(ctx, "", false, &out))
	require.Equal(t, "device_id\n", out.String())

	_, err = apiclient.NewWithConfig(apiclient.Config{BaseURL: srv.URL, CAFile: testcert.Write(t, t.TempDir(), "x.pem", []byte("not PEM"))})
	require.ErrorContains(t, err, "no PEM certificate")
}

func TestBrokenStreamIsIncomplete(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, strings.Repeat("row\n", 5000))
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler) // as the server aborts an answer that failed midway
	}))
	t.Cleanup(srv.Close)
	c, err := apiclient.NewWithConfig(apiclient.Config{BaseURL: srv.URL, Token: token})
	require.NoError(t, err)
	err = c.Export(context.Background(), "", true, io.Discard)
	require.True(t, errors.Is(err, apiclient.ErrIncomplete), "%v", err)
	err = c.Report(context.Background(), 1, io.Discard)
	require.True(t, errors.Is(err, apiclient.ErrIncomplete), "%v", err)
}
