package server

import (
	"bytes"
	"errors"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/vncfleet/vncfleet/fleet"
)

// FuzzUploadBody drives the upload handler's body parsing — the raw or multipart
// body (manifestBody), the query's separator and encoding (readerOptions) and the
// manifest reader under small cell and column limits — with arbitrary input. It
// must never panic, and whatever it accepts must hold to the limits and the cell
// rules: no cell over the limit, no device_id that a spreadsheet reads as a formula
// or that holds a format character, no secret-like column kept as metadata.
func FuzzUploadBody(f *testing.F) {
	f.Add([]byte("device_id,action,groups,location\nv1,connect, a ;b ,x\n"), false, "", "")
	f.Add([]byte("device_id;action\nv1;connect\n"), false, ";", "")
	f.Add([]byte("device_id,action,n\nv1,connect,Ger\xe4t\n"), true, "", "windows-1252")
	f.Add([]byte("device_id,action,n\nv1,connect,\""+strings.Repeat("x\n", 40)+"\"\n"), true, "", "")
	f.Add([]byte("device_id,action,password\nv1,connect,x\n"), false, "tab", "utf-8")
	f.Fuzz(func(t *testing.T, body []byte, multi bool, separator, encoding string) {
		const maxCell, maxCols = 16, 8
		s := New(Config{ManifestLimits: fleet.ReaderOptions{MaxCellBytes: maxCell, MaxColumns: maxCols}})
		q := url.Values{"separator": {separator}, "encoding": {encoding}}
		opts, err := s.readerOptions(q)
		if err != nil {
			return // answered 400
		}
		opts.MaxProblems = 20
		req := httptest.NewRequest(http.MethodPost, "/v1/manifests?"+q.Encode(), bytes.NewReader(body))
		if multi {
			var b bytes.Buffer
			mw := multipart.NewWriter(&b)
			part, _ := mw.CreateFormFile("manifest", "devices.csv")
			_, _ = part.Write(body)
			_ = mw.Close()
			req = httptest.NewRequest(http.MethodPost, "/v1/manifests?"+q.Encode(), &b)
			req.Header.Set("Content-Type", mw.FormDataContentType())
		}
		src, err := manifestBody(httptest.NewRecorder(), req, 1<<20, DefaultUploadIdleTimeout)
		if err != nil {
			return // answered 400
		}
		r, err := fleet.NewReader(src, opts)
		if err != nil {
			var p *fleet.Problems
			if !errors.As(err, &p) || p.Len() == 0 {
				t.Fatalf("a header error that is not a located problem: %v", err)
			}
			return
		}
		if n := len(r.Header()); n > maxCols {
			t.Fatalf("a header of %d columns passed the limit of %d", n, maxCols)
		}
		for _, h := range r.Header() {
			name := fleet.NormalizeColumnName(h)
			if strings.Contains(name, "password") || strings.Contains(name, "secret") || strings.Contains(name, "token") {
				t.Fatalf("secret-like column %q accepted", h)
			}
		}
		for {
			d, err := r.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("Next: %v", err)
			}
			id := d.DeviceID
			if id == "" || strings.ContainsRune(fleet.FormulaStart, rune(id[0])) || !utf8.ValidString(id) {
				t.Fatalf("device_id %q accepted", id)
			}
			for _, c := range id {
				if unicode.Is(unicode.Cf, c) || unicode.IsControl(c) {
					t.Fatalf("device_id %+q with a format or control character accepted", id)
				}
			}
			if id != fleet.TrimValue(id) {
				t.Fatalf("device_id %q not trimmed", id)
			}
			for _, v := range append(append([]string{id, d.ZenlayerInstanceID}, d.Groups...), d.AllowGroups...) {
				if len(v) > maxCell {
					t.Fatalf("a value of %d bytes passed the cell limit of %d", len(v), maxCell)
				}
			}
			for _, m := range d.Metadata {
				if len(m.Value) > maxCell || !utf8.ValidString(m.Value) {
					t.Fatalf("metadata %q accepted", m.Value)
				}
			}
		}
	})
}
