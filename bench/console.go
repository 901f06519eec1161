package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/vncfleet/vncfleet/internal/console"
	"github.com/vncfleet/vncfleet/internal/server"
	"github.com/vncfleet/vncfleet/internal/store"
)

// benchConsole measures what a session kept in PostgreSQL costs a console request:
// GET /ui/api/v1/me with the session cookie (the session read from the database,
// then the API's answer) against the baseline of the same answer asked for with the
// bearer token (GET /v1/me), on the same server and database, with sessions rows
// in the table.
func benchConsole(baseURL string, requests, sessions int) error {
	ctx := context.Background()
	const name = "vncfleet_bench_console"
	_, pool, err := freshDatabase(ctx, baseURL, name)
	if err != nil {
		return err
	}
	defer dropDatabase(ctx, baseURL, name)
	defer pool.Close()

	st := store.New(pool, nil)
	if _, err := pool.Exec(ctx, `
		INSERT INTO console_sessions (id_hash, csrf_hash, token_name, roles, created_at, expires_at, last_seen_at)
		SELECT decode(md5(i::text) || md5((-i)::text), 'hex'), decode(md5((i + 1)::text) || md5((-i - 1)::text), 'hex'),
		       'op', ARRAY['read'], now(), now() + interval '1 hour', now()
		FROM generate_series(1, $1) i`, sessions); err != nil {
		return err
	}
	if _, err := pool.Exec(ctx, `ANALYZE console_sessions`); err != nil {
		return err
	}
	const token = "bench-console-token-value"
	api := server.New(server.Config{Store: st, Tokens: []server.Token{{Name: "op", Value: token, Roles: []string{server.RoleRead}}}})
	ui, err := console.New(console.Config{API: api, Sessions: st})
	if err != nil {
		return err
	}
	srv := httptest.NewServer(ui)
	defer srv.Close()
	client, cookie, err := consoleSignIn(srv.URL, token)
	if err != nil {
		return err
	}
	fmt.Printf("%d console sessions in the table\n", sessions+1)

	time1 := func(path string, auth func(*http.Request)) (time.Duration, error) {
		req, err := http.NewRequest("GET", srv.URL+path, nil)
		if err != nil {
			return 0, err
		}
		auth(req)
		start := time.Now()
		resp, err := client.Do(req)
		if err != nil {
			return 0, err
		}
		body, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		took := time.Since(start)
		if resp.StatusCode != http.StatusOK || !bytes.Contains(body, []byte(`"op"`)) {
			return 0, fmt.Errorf("GET %s: HTTP %d: %s", path, resp.StatusCode, strings.TrimSpace(string(body)))
		}
		return took, nil
	}
	bearer := func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+token) }
	withCookie := func(r *http.Request) { r.AddCookie(cookie) }
	var base, sess []time.Duration
	// Interleaved, so that both see the same machine load.
	for range requests {
		b, err := time1("/v1/me", bearer)
		if err != nil {
			return err
		}
		s, err := time1("/ui/api/v1/me", withCookie)
		if err != nil {
			return err
		}
		base, sess = append(base, b), append(sess, s)
	}
	slices.Sort(base)
	slices.Sort(sess)
	pct := func(list []time.Duration, p float64) time.Duration { return list[int(p*float64(len(list)-1))] }
	for _, p := range []struct {
		name string
		q    float64
	}{{"median", 0.5}, {"p99", 0.99}} {
		b, s := pct(base, p.q), pct(sess, p.q)
		fmt.Printf("%s of %d requests: bearer token (baseline) %s, session cookie %s: %.2fx (+%s a request)\n",
			p.name, requests, b.Round(time.Microsecond), s.Round(time.Microsecond), float64(s)/float64(b), (s - b).Round(time.Microsecond))
	}
	return nil
}

// consoleSignIn signs in to the console at base with token, as the sign-in form
// does, and returns a client that follows no redirect and the session cookie.
func consoleSignIn(base, token string) (*http.Client, *http.Cookie, error) {
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.PostForm(base+"/signin", url.Values{"token": {token}})
	if err != nil {
		return nil, nil, err
	}
	_ = resp.Body.Close()
	for _, c := range resp.Cookies() {
		if c.Name == "vncfleet_session" {
			return client, c, nil
		}
	}
	return nil, nil, fmt.Errorf("sign-in gave no session cookie (HTTP %d)", resp.StatusCode)
}
