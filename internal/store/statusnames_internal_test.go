package store

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/vncfleet/vncfleet/fleet"
)

// Status names come from one place, fleet.Statuses: the database's CHECK constraint
// on devices.status lists exactly them, so a write of any other name fails.
func TestStatusConstraintIsFleetsStatuses(t *testing.T) {
	t.Parallel()
	s, ctx := newLifeStore(t)
	var def string
	require.NoError(t, s.pool.QueryRow(ctx, `
		SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'devices_status_check'`).Scan(&def))
	var inDB []fleet.Status
	for _, m := range regexp.MustCompile(`'([a-z_]+)'`).FindAllStringSubmatch(def, -1) {
		inDB = append(inDB, fleet.Status(m[1]))
	}
	want := slices.Clone(fleet.Statuses)
	slices.Sort(want)
	slices.Sort(inDB)
	require.Equal(t, want, inDB, "devices_status_check: %s", def)
}

// statusComparison finds a status column compared with names in SQL text: `status =
// 'x'`, `d.status <> 'x'`, `status IN ('x', 'y')`.
var statusComparison = regexp.MustCompile(`\bstatus\s*(?:=|<>|!=)\s*'([a-z_]+)'|\bstatus\s+(?:NOT\s+)?IN\s*\(([^)]*)\)`)

// Every status name the SQL of the repository compares with (the store's queries, the
// jobs, the migrations) is one of fleet.Statuses: a misspelt name in a WHERE would
// match nothing, silently, where the constraint only guards writes.
func TestSQLComparesOnlyFleetStatuses(t *testing.T) {
	t.Parallel()
	root := filepath.Join("..", "..")
	seen := 0
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (strings.HasPrefix(d.Name(), ".") && path != root || d.Name() == "sim") {
			return filepath.SkipDir // the simulator's statuses are the cloud's, not a device's
		}
		isGo := strings.HasSuffix(path, ".go") && !strings.HasSuffix(path, "_test.go")
		if d.IsDir() || !(isGo || strings.HasSuffix(path, ".sql")) {
			return nil
		}
		text, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, m := range statusComparison.FindAllStringSubmatch(string(text), -1) {
			names := []string{m[1]}
			if m[2] != "" {
				names = nil
				for _, q := range regexp.MustCompile(`'([a-z_]+)'`).FindAllStringSubmatch(m[2], -1) {
					names = append(names, q[1])
				}
			}
			for _, n := range names {
				seen++
				require.Contains(t, fleet.Statuses, fleet.Status(n), "%s: %q", path, m[0])
			}
		}
		return nil
	})
	require.NoError(t, err)
	require.Greater(t, seen, 50, "the scan must find the store's status comparisons")
}
