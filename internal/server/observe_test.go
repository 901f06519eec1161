package server

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestRequestID: a sane id from the caller is kept; anything that could forge or
// bloat a log line is replaced by a fresh random one.
func TestRequestID(t *testing.T) {
	t.Parallel()
	for _, kept := range []string{"abc-123", "trace_ID.7", strings.Repeat("a", 64)} {
		require.Equal(t, kept, acceptRequestID(kept))
	}
	for _, replaced := range []string{"", "a b", "x\nmsg=forged", strings.Repeat("a", 65), "é"} {
		got := acceptRequestID(replaced)
		require.NotEqual(t, replaced, got)
		require.Regexp(t, `^[0-9a-f]{16}$`, got)
	}
	require.NotEqual(t, acceptRequestID(""), acceptRequestID(""), "fresh ids differ")
}
