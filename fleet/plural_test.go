package fleet

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestPluralRule: one rule for every count, the singular for exactly 1 only, whether
// the noun is regular, irregular or followed by a verb, and whatever the count's type.
func TestPluralRule(t *testing.T) {
	for _, c := range []struct{ got, want string }{
		{Plural(0, "device"), "0 devices"},
		{Plural(1, "device"), "1 device"},
		{Plural(2, "device"), "2 devices"},
		{Plural(int64(1), "entry"), "1 entry"},
		{PluralOf(1, "entry", "entries"), "1 entry"},
		{PluralOf(int64(3), "entry", "entries"), "3 entries"},
		{PluralOf(0, "address", "addresses"), "0 addresses"},
		{PluralVerb(1, "device", "has", "have"), "1 device has"},
		{PluralVerb(2, "stored secret", "is", "are"), "2 stored secrets are"},
		{Agree(1, "it", "them"), "it"},
		{Agree(-1, "it", "them"), "them"},
		{Plural(1.0, "day"), "1 day"},
		{Plural(1.5, "day"), "1.5 days"},
	} {
		require.Equal(t, c.want, c.got)
	}
}

// A real message with a count of 1: a row of one field against a header of two.
func TestRowOfOneFieldIsSaidInTheSingular(t *testing.T) {
	_, problems := readWith(t, "device_id,action\nv1\n", ReaderOptions{})
	require.NotNil(t, problems)
	require.Len(t, problems.List, 1)
	require.Equal(t, "row has 1 field, the header has 2", problems.List[0].Reason)
	require.True(t, strings.HasPrefix(problems.List[0].Error(), "line 2, column 2"), problems.List[0].Error())
}
