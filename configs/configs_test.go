package configs_test

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/vncfleet/vncfleet/configs"
	"github.com/vncfleet/vncfleet/fleet"
)

// The example manifest is what `vncfleet demo` provisions and what the README has a
// new operator upload first: it must read without a problem, metadata columns included.
func TestExampleManifestReadsWithoutProblems(t *testing.T) {
	t.Parallel()
	r, err := fleet.NewReader(bytes.NewReader(configs.ExampleManifest), fleet.ReaderOptions{})
	require.NoError(t, err)
	rows := 0
	for {
		d, err := r.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(t, err)
		require.Len(t, d.Metadata, 2, "line %d: location and serial", d.Line)
		rows++
	}
	require.Zero(t, r.Problems().Len(), r.Problems())
	require.Positive(t, rows)
}
