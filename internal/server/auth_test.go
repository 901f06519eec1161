package server

import (
	"net"
	"net/http/httptest"
	"net/netip"
	"testing"

	"github.com/stretchr/testify/require"
)

// X-Forwarded-For names the client only when the connection comes from a trusted
// proxy, and then the nearest hop that is not a trusted proxy itself.
func TestClientAddr(t *testing.T) {
	t.Parallel()
	trusting := New(Config{TrustedProxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.0.2.9/32")}})
	trustingNone := New(Config{})
	for _, tc := range []struct {
		name, peer string
		xff        []string
		s          *Server
		want       string
	}{
		{"no proxies trusted: the header is ignored", "203.0.113.5:4000", []string{"198.51.100.1"}, trustingNone, "203.0.113.5"},
		{"untrusted peer: the header is ignored", "203.0.113.5:4000", []string{"198.51.100.1"}, trusting, "203.0.113.5"},
		{"trusted proxy: the client it names", "10.1.2.3:4000", []string{"198.51.100.1"}, trusting, "198.51.100.1"},
		{"a forged hop before the real client is skipped", "10.1.2.3:4000", []string{"6.6.6.6, 198.51.100.1"}, trusting, "198.51.100.1"},
		{"two trusted proxies in a row", "10.1.2.3:4000", []string{"198.51.100.1, 192.0.2.9"}, trusting, "198.51.100.1"},
		{"several header lines", "10.1.2.3:4000", []string{"198.51.100.1", "10.9.9.9"}, trusting, "198.51.100.1"},
		{"garbage hop: the last trusted proxy", "10.1.2.3:4000", []string{"not-an-address, 10.9.9.9"}, trusting, "10.9.9.9"},
		{"trusted proxy without the header", "10.1.2.3:4000", nil, trusting, "10.1.2.3"},
		{"IPv6 peer", "[2001:db8::1]:4000", []string{"198.51.100.1"}, trusting, "2001:db8::1"},
	} {
		r := httptest.NewRequest("GET", "/v1/status", nil)
		r.RemoteAddr = tc.peer
		for _, v := range tc.xff {
			r.Header.Add("X-Forwarded-For", v)
		}
		require.Equal(t, tc.want, tc.s.clientAddr(r), tc.name)
	}
}

// Each address has its own budget of failures.
func TestFailureLimiterIsPerAddress(t *testing.T) {
	t.Parallel()
	l := newFailureLimiter(3, 3)
	for range 3 {
		require.True(t, l.allowed("192.0.2.1"))
		l.failed("192.0.2.1")
	}
	require.False(t, l.allowed("192.0.2.1"))
	require.True(t, l.allowed("192.0.2.2"), "another address is not held back")
}

// Whatever a client writes in X-Forwarded-For, the address is the peer's or one that
// parses, and nothing panics.
func FuzzClientAddr(f *testing.F) {
	f.Add("10.1.2.3:4000", "198.51.100.1, 10.9.9.9")
	f.Add("203.0.113.5:1", "::ffff:1.2.3.4,,")
	f.Add("garbage", "\x00, 1.1.1.1")
	s := New(Config{TrustedProxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}})
	f.Fuzz(func(t *testing.T, peer, xff string) {
		r := httptest.NewRequest("GET", "/", nil)
		r.RemoteAddr = peer
		r.Header.Set("X-Forwarded-For", xff)
		got := s.clientAddr(r)
		host, _, err := net.SplitHostPort(peer)
		if err != nil {
			host = peer
		}
		if got == host {
			return
		}
		_, err = netip.ParseAddr(got)
		require.NoError(t, err, "%q is neither the peer nor an address", got)
		require.True(t, s.trustedProxy(netip.MustParseAddr(host)), "the header was believed from an untrusted peer %q", peer)
	})
}
