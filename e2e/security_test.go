package e2e

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/vncfleet/vncfleet/internal/testcert"
)

// stalledUpload starts an upload of the first row of a body that announces more,
// then sends nothing; finish sends the rest.
func stalledUpload(t *testing.T, apiURL, fleet string) (conn net.Conn, finish func()) {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(apiURL, "http://"))
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	head, rest := "device_id,action\nslow-1,connect\n", "slow-2,connect\n"
	_, err = fmt.Fprintf(conn, "POST /v1/manifests?fleet=%s HTTP/1.1\r\nHost: vncfleet\r\nAuthorization: Bearer %s\r\n"+
		"Content-Type: text/csv\r\nContent-Length: %d\r\n\r\n%s", fleet, adminTok, len(head)+len(rest), head)
	require.NoError(t, err)
	return conn, func() {
		_, err := io.WriteString(conn, rest)
		require.NoError(t, err)
	}
}

func readAnswer(t *testing.T, conn net.Conn) (int, string) {
	t.Helper()
	_ = conn.SetReadDeadline(time.Now().Add(2 * time.Minute)) // a hang fails this test only
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

func TestStalledUploadNeitherBlocksTheFleetNorLasts(t *testing.T) {
	t.Parallel()
	// Long enough that the second upload is done well within it on a loaded machine.
	c := newCluster(t, clusterOpts{extra: []string{"VNCFLEET_UPLOAD_IDLE_TIMEOUT=20s"}})
	c.startServe()

	// An upload to fleet f stalls mid-body; another upload to f is stored meanwhile,
	// and the first, once its body comes, is stored too: it was pending throughout.
	slow, finish := stalledUpload(t, c.apiURLs[0], "f")
	out := c.upload("--fleet", "f", writeFile(t, "fast.csv", "device_id,action\nfast-1,connect\n"))
	require.Contains(t, out, "manifest")
	finish()
	status, body := readAnswer(t, slow)
	require.Equal(t, http.StatusCreated, status, body)

	// An upload that stays silent is answered 408, and leaves nothing.
	silent, _ := stalledUpload(t, c.apiURLs[0], "g")
	status, body = readAnswer(t, silent)
	require.Equal(t, http.StatusRequestTimeout, status, body)
	require.Contains(t, body, "nothing was stored")
	var devices, manifests, fleets int
	require.NoError(t, c.db().QueryRow(context.Background(),
		`SELECT (SELECT count(*) FROM devices), (SELECT count(*) FROM manifests), (SELECT count(*) FROM fleets)`).
		Scan(&devices, &manifests, &fleets))
	require.Equal(t, []int{3, 2, 1}, []int{devices, manifests, fleets}, "fleet f's two uploads, nothing of g's")
}

// db is a connection to the cluster's database, closed when the test ends.
func (c *cluster) db() *pgx.Conn {
	c.t.Helper()
	conn, err := pgx.Connect(context.Background(), c.dbURL)
	require.NoError(c.t, err)
	c.t.Cleanup(func() { _ = conn.Close(context.Background()) })
	return conn
}

// spoil makes a stored password impossible to decrypt.
func (c *cluster) spoil(deviceID string) {
	c.t.Helper()
	tag, err := c.db().Exec(context.Background(), `UPDATE devices SET password_ct = 'not a sealed box' WHERE device_id = $1`, deviceID)
	require.NoError(c.t, err)
	require.EqualValues(c.t, 1, tag.RowsAffected())
}

func TestExportWithAnUndecryptableRowFailsTheCLI(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterOpts{rate: 500})
	c.startServe()
	var b strings.Builder
	b.WriteString("device_id,action,groups\n")
	for i := range 1500 {
		fmt.Fprintf(&b, "dev-%04d,connect,line-a\n", i)
	}
	c.upload("--wait", writeFile(t, "m.csv", b.String()))

	// Midway: the answer has begun (export writes 64 KiB at a time; this row comes
	// several writes in).
	c.spoil("dev-1400")
	out, errOut, code := c.run("export", "--secrets")
	require.Equal(t, 3, code, "stdout: %d bytes; stderr: %s", len(out), errOut)
	require.Contains(t, errOut, "incomplete")
	require.NotContains(t, out, "dev-1400,")

	c.spoil("dev-0000") // at once: an error answer, with the request id to look up
	_, errOut, code = c.run("export", "--secrets")
	require.Equal(t, 3, code, errOut)
	require.Contains(t, errOut, "request id")
	require.NotContains(t, errOut, "open password", "the cause is for the server's log")
	require.Contains(t, c.serves[0].out.String(), "open password")
}

// tlsFiles writes a server certificate named cn, signed by ca, to the files the
// serve process reads, replacing them.
func tlsFiles(t *testing.T, ca *testcert.CA, cn, certFile, keyFile string) {
	t.Helper()
	cert, key := ca.Server(t, cn)
	at := time.Now().Add(time.Duration(len(cn)) * time.Minute) // each renewal looks newer
	for path, data := range map[string][]byte{certFile: cert, keyFile: key} {
		require.NoError(t, os.WriteFile(path+".new", data, 0o600))
		require.NoError(t, os.Chtimes(path+".new", at, at))
		require.NoError(t, os.Rename(path+".new", path))
	}
}

// servedName is the common name of the certificate the server at addr presents.
func servedName(t *testing.T, addr string, roots *x509.CertPool) string {
	t.Helper()
	conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: roots})
	require.NoError(t, err)
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].Subject.CommonName
}

func TestTLSWithAPrivateCA(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := testcert.NewCA(t)
	certFile, keyFile := dir+"/tls.crt", dir+"/tls.key"
	tlsFiles(t, ca, "first", certFile, keyFile)
	caFile := testcert.Write(t, dir, "ca.pem", ca.PEM)
	roots := x509.NewCertPool()
	require.True(t, roots.AppendCertsFromPEM(ca.PEM))

	c := newCluster(t, clusterOpts{})
	addr := freeAddr(t)
	p := start(t, "serve-tls", append(c.env, "VNCFLEET_LISTEN="+addr,
		"VNCFLEET_TLS_CERT_FILE="+certFile, "VNCFLEET_TLS_KEY_FILE="+keyFile), "serve")
	url := "https://" + addr
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}
	waitHealthyWith(t, p, url, client)
	c.serves, c.apiURLs = append(c.serves, p), append(c.apiURLs, url)

	// Plain HTTP on the TLS port gets nowhere.
	resp, err := http.Get("http://" + addr + "/healthz")
	if err == nil {
		_ = resp.Body.Close()
		require.Equal(t, http.StatusBadRequest, resp.StatusCode, "Go answers plain HTTP on a TLS port with 400")
	}

	manifest := writeFile(t, "m.csv", "device_id,action\nc1,connect\n")
	c.env = append(c.env, "VNCFLEET_CA_FILE="+caFile)
	out, errOut, code := c.run("upload", "--dry-run", manifest)
	require.Equal(t, 0, code, "%s %s", out, errOut)
	require.Contains(t, out, "1 to create")

	resp, err = client.Get(url + "/healthz")
	require.NoError(t, err)
	_ = resp.Body.Close()
	require.Contains(t, resp.Header.Get("Strict-Transport-Security"), "max-age=")

	// Without the CA file the CLI does not trust the server, and says so.
	c.env = c.env[:len(c.env)-1]
	_, errOut, code = c.run("upload", "--dry-run", manifest)
	require.Equal(t, 3, code, errOut)
	require.Contains(t, errOut, "certificate")

	// A renewed certificate is served without a restart.
	require.Equal(t, "first", servedName(t, addr, roots))
	tlsFiles(t, ca, "second", certFile, keyFile)
	eventually(t, 30*time.Second, "the renewed certificate", func() bool { return servedName(t, addr, roots) == "second" })
}

func TestCLIRefusesATokenOverPlainHTTPToANetworkHost(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterOpts{})
	c.apiURLs = []string{"http://vncfleet.invalid:8080"}
	_, errOut, code := c.run("status")
	require.Equal(t, 2, code, errOut)
	require.Contains(t, errOut, "plain HTTP")
	require.Contains(t, errOut, "--insecure")
	require.NotContains(t, errOut, adminTok)

	// --insecure lets it try (and fail to reach a host that does not exist).
	_, errOut, code = c.run("status", "--insecure")
	require.Equal(t, 3, code, errOut)
	require.NotContains(t, errOut, "plain HTTP")
}
