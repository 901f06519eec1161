package app_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// provisioned uploads n connect devices to fleet f and waits until they are ready.
func (e *env) provisioned(n int) {
	e.t.Helper()
	var b strings.Builder
	b.WriteString(header)
	for i := range n {
		fmt.Fprintf(&b, "dev-%04d,connect,a,,,\n", i)
	}
	status, resp := e.do("POST", "/v1/manifests?fleet=f", uploadToken, b.String())
	require.Equal(e.t, http.StatusCreated, status, string(resp))
	var up struct{ Manifest struct{ ID int64 } }
	require.NoError(e.t, json.Unmarshal(resp, &up))
	e.waitDone(up.Manifest.ID)
}

// spoil makes the stored password of a device impossible to decrypt.
func (e *env) spoil(deviceID string) {
	e.t.Helper()
	tag, err := e.pool.Exec(context.Background(), `UPDATE devices SET password_ct = 'not a sealed box' WHERE device_id = $1`, deviceID)
	require.NoError(e.t, err)
	require.EqualValues(e.t, 1, tag.RowsAffected())
}

func (e *env) get(path string) (*http.Response, []byte, error) {
	e.t.Helper()
	req, err := http.NewRequest("GET", e.api.URL+path, nil)
	require.NoError(e.t, err)
	req.Header.Set("Authorization", "Bearer "+adminToken)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(e.t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp, body, err
}

func TestExportThatFailsMidwayIsBrokenOff(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	// Export writes 64 KiB at a time: the spoilt row comes after several writes' worth.
	e.provisioned(1500)
	e.spoil("dev-1400")

	resp, body, err := e.get("/v1/export?secrets=true")
	require.Equal(t, http.StatusOK, resp.StatusCode, "the answer had begun")
	require.ErrorIs(t, err, io.ErrUnexpectedEOF, "the client sees a broken answer, not a clean end")
	require.Contains(t, string(body), "dev-0100,")
	require.NotContains(t, string(body), "dev-1400,")
	id := resp.Header.Get("X-Request-Id")
	require.Contains(t, e.logs.String(), "answer aborted midway")
	require.Contains(t, e.logs.String(), "request_id="+id)
}

func TestExportThatFailsAtOnceIsAnInternalError(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.provisioned(3)
	e.spoil("dev-0000")

	resp, body, err := e.get("/v1/export?secrets=true")
	require.NoError(t, err)
	require.Equal(t, http.StatusInternalServerError, resp.StatusCode)
	id := resp.Header.Get("X-Request-Id")
	require.Contains(t, string(body), id)
	require.NotContains(t, string(body), "open password", "the cause stays in the log")
	require.NotContains(t, string(body), "dev-0001")
	require.Contains(t, e.logs.String(), "open password")
}
