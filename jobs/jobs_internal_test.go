package jobs

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestBatchLimitFitsTheLease(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		rate  float64
		lease time.Duration
		want  int
	}{
		{"no rate limit", 0, 2 * time.Minute, 250},
		{"a high rate", 500, 2 * time.Minute, 250},
		{"20/s and the default lease", 20, 2 * time.Minute, 150},      // 20/4 chains * 30 s
		{"a short lease", 60, 8 * time.Second, 30},                    // 60/4 * (8-2)/3 s
		{"never below ten", 1, 8 * time.Second, 10},                   // 1 * 2 s
		{"a slow rate and the default lease", 1, 2 * time.Minute, 10}, // 1/4 * 30 s
	} {
		c := Config{Rate: tc.rate, ClaimLease: tc.lease}
		if tc.lease == 8*time.Second {
			c.CallTimeout = 2 * time.Second
		}
		c.setDefaults()
		require.Equal(t, tc.want, c.batchLimit(), tc.name)
	}
}
