package main

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestParseSince(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 12, 10, 15, 4, 5, 0, time.UTC)
	for _, tc := range []struct {
		in   string
		want time.Time
	}{
		{"", time.Time{}},
		{"24h", now.Add(-24 * time.Hour)},
		{"90m", now.Add(-90 * time.Minute)},
		{"0s", now},
		{"7d", time.Date(2026, 12, 3, 15, 4, 5, 0, time.UTC)},
		{"0d", now},
		{"2026-12-01T00:00:00Z", time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)},
		{"2026-12-01T02:00:00+02:00", time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)},
	} {
		got, err := parseSince(tc.in, now)
		require.NoError(t, err, tc.in)
		require.True(t, tc.want.Equal(got), "%q: got %s, want %s", tc.in, got, tc.want)
	}
	for _, bad := range []string{"yesterday", "-1h", "-2d", "1.5d", "7 d", "d", "2026-12-01", "24"} {
		_, err := parseSince(bad, now)
		require.EqualError(t, err, `--since "`+bad+`": want an RFC 3339 time (2026-12-01T00:00:00Z) or a duration back from now (24h, 7d)`)
	}
}
