package metrics

import (
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"
)

// The labels made once are the statuses' own numbers, and a status outside them
// is still labelled by its number.
func TestStatusLabels(t *testing.T) {
	t.Parallel()
	require.Equal(t, "error", code(0))
	for _, status := range []int{1, 99, 100, 200, 201, 412, 429, 503, 599, 600, 1000} {
		require.Equal(t, strconv.Itoa(status), code(status))
	}
}
