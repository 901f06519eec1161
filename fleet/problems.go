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

// Plural renders a count with its noun, "1 problem", "2 problems": every message that
// counts says it so.
func Plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}
