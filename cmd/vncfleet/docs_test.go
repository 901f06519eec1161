package main

import (
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// contractCommands reads the commands table of docs/contract.md: the text of each row,
// by the command path its first cell names ("upload", "audit verify"; a cell may
// name several, as "`keys`, `rekey`").
func contractCommands(t *testing.T, doc string) map[string]string {
	t.Helper()
	_, table, ok := strings.Cut(doc, "### Commands\n")
	require.True(t, ok, "docs/contract.md has a ### Commands section")
	table, _, _ = strings.Cut(table, "\n\n")
	word := regexp.MustCompile(`^[a-z][a-z-]*$`)
	rows := map[string]string{}
	for _, line := range strings.Split(table, "\n") {
		cells := strings.SplitN(strings.TrimPrefix(line, "|"), "|", 2)
		if len(cells) < 2 || !strings.HasPrefix(strings.TrimSpace(cells[0]), "`") {
			continue // the header and its rule
		}
		for i, span := range strings.Split(cells[0], "`") {
			if i%2 == 0 {
				continue // outside the backticks
			}
			var path []string
			for _, w := range strings.Fields(span) {
				if word.MatchString(w) {
					path = append(path, w)
				}
			}
			rows[strings.Join(path, " ")] = cells[1]
		}
	}
	return rows
}

// TestContractNamesEveryFlag: docs/contract.md, the command reference that scripts
// are written against, has a row for every command and names every flag of it in
// that row, and the flags every command takes somewhere; a flag added to the CLI and
// not to the page fails here. Every omission is listed, not only the first.
func TestContractNamesEveryFlag(t *testing.T) {
	t.Parallel()
	raw, err := os.ReadFile("../../docs/contract.md")
	require.NoError(t, err)
	doc := string(raw)
	rows := contractCommands(t, doc)
	names := func(text, flag string) bool {
		return regexp.MustCompile(`--` + regexp.QuoteMeta(flag) + `([^a-z0-9-]|$)`).MatchString(text)
	}

	root := newRootCmd()
	root.PersistentFlags().VisitAll(func(f *pflag.Flag) {
		assert.True(t, names(doc, f.Name), "docs/contract.md names --%s, which every command takes", f.Name)
	})
	var walk func(c *cobra.Command, path string)
	walk = func(c *cobra.Command, path string) {
		row, ok := rows[path]
		assert.True(t, ok, "docs/contract.md has a row for `%s`", path)
		c.LocalNonPersistentFlags().VisitAll(func(f *pflag.Flag) {
			assert.True(t, names(row, f.Name), "docs/contract.md's row for `%s` names --%s", path, f.Name)
		})
		for _, sub := range c.Commands() {
			walk(sub, path+" "+sub.Name())
		}
	}
	for _, c := range root.Commands() {
		walk(c, c.Name())
	}
}
