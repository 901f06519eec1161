package fleet

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
)

// Problem is one reason a manifest is rejected, located by line and column (both
// 1-based; the column is the position of the header field).
type Problem struct {
	Line       int
	Column     int
	ColumnName string
	Reason     string
}

func (p Problem) Error() string {
	if p.ColumnName != "" {
		return fmt.Sprintf("line %d, column %d (%s): %s", p.Line, p.Column, p.ColumnName, p.Reason)
	}
	return fmt.Sprintf("line %d, column %d: %s", p.Line, p.Column, p.Reason)
}

// DefaultMaxProblems caps the problems listed; Total still counts all of them.
const DefaultMaxProblems = 1000

// Problems collects a manifest's problems. It is an error when non-empty.
type Problems struct {
	List  []Problem
	Total int
	Cap   int
}

// Add records a problem, keeping at most Cap of them.
func (p *Problems) Add(pr Problem) {
	p.Total++
	if len(p.List) < p.limit() {
		p.List = append(p.List, pr)
	}
}

func (p *Problems) limit() int {
	if p.Cap <= 0 {
		return DefaultMaxProblems
	}
	return p.Cap
}

// Merge adds the problems of other, found by another pass over the same manifest,
// and keeps the list sorted by line, then column, and capped: the problems listed
// are those of the first lines, whichever pass found them. Each of p and other must
// list its first problems by line (as a pass in line order does), so that the
// problems left out of either are never among the first of both.
func (p *Problems) Merge(other *Problems) {
	p.Total += other.Total
	p.List = append(p.List, other.List...)
	slices.SortStableFunc(p.List, func(a, b Problem) int {
		return cmp.Or(cmp.Compare(a.Line, b.Line), cmp.Compare(a.Column, b.Column))
	})
	if len(p.List) > p.limit() {
		p.List = p.List[:p.limit()]
	}
}

// Len is the number of problems found, listed or not.
func (p *Problems) Len() int { return p.Total }

func (p *Problems) Error() string {
	var b strings.Builder
	b.WriteString("manifest rejected: " + Plural(p.Total, "problem"))
	for _, pr := range p.List {
		b.WriteString("\n")
		b.WriteString(pr.Error())
	}
	if more := p.Total - len(p.List); more > 0 {
		fmt.Fprintf(&b, "\n... and %d more", more)
	}
	return b.String()
}

// Counts in messages follow one rule, Agree's: a count takes the singular only when it
// is exactly 1 ("0 devices", "1 device", "2 devices"), and so does a verb whose
// subject it is. Every message that counts says it by these functions.

// Count is a count of things (the database's counts are int64, the program's int),
// or a measure counted like one ("1.5 days").
type Count interface {
	~int | ~int32 | ~int64 | ~float64
}

// Plural renders a count with its noun, "1 problem", "2 problems", for a noun whose
// plural adds an s.
func Plural[N Count](n N, noun string) string { return PluralOf(n, noun, noun+"s") }

// PluralOf renders a count with a noun whose plural is irregular: PluralOf(n, "entry",
// "entries"), PluralOf(n, "address", "addresses").
func PluralOf[N Count](n N, singular, plural string) string {
	return fmt.Sprint(n) + " " + Agree(n, singular, plural)
}

// PluralVerb renders a count with its noun and a verb that agrees with it: PluralVerb(n,
// "device", "has", "have") is "1 device has", "2 devices have".
func PluralVerb[N Count](n N, noun, verbOne, verbMany string) string {
	return Plural(n, noun) + " " + Agree(n, verbOne, verbMany)
}

// Agree is the word of the two that agrees with count n: one when n is 1, else many.
// For a word apart from its count: "%d of %s %s", matched, Plural(total, "password"),
// Agree(matched, "equals", "equal").
func Agree[N Count](n N, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
