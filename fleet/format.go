package fleet

import (
	"fmt"
	"io"
	"strings"

	"golang.org/x/text/encoding/charmap"
)

// This file holds what the reader knows of the files people actually have: header
// names as spreadsheets write them, near-miss and secret-like column names, and the
// separators and encoding of a spreadsheet's "CSV".

// NormalizeColumnName is how a header name is matched to a known column: surrounding
// spaces dropped, lower case, and spaces and hyphens read as underscores, so that
// "Device ID", "allow-devices" and " ALLOW_GROUPS " are known columns.
func NormalizeColumnName(h string) string {
	return strings.Map(func(r rune) rune {
		if r == ' ' || r == '-' {
			return '_'
		}
		return r
	}, strings.ToLower(strings.TrimSpace(h)))
}

// secretNameParts are the words that make a column name look like a secret. Such a
// column is refused rather than kept as metadata, which is stored and shown in
// clear: the typical case is an `export --secrets` file uploaded back as a manifest.
var secretNameParts = []string{"password", "passwd", "passphrase", "secret", "token", "credential",
	"api_key", "apikey", "private_key", "access_key"}

// unknownColumnProblem explains why an unknown column (normalised name) cannot be
// metadata, or returns "": it looks like a secret, or like a misspelt known column.
func unknownColumnProblem(name string) string {
	for _, part := range secretNameParts {
		if strings.Contains(name, part) {
			return "this column looks like it holds secrets (" + part + "), and unknown columns are stored " +
				"in clear as device metadata: remove it (an export --secrets file is not a manifest)"
		}
	}
	if known := nearMiss(name); known != "" {
		return "unknown column; did you mean " + known + "?"
	}
	return ""
}

// maxColumnEdits is how far an unknown column may be from a known one and still be
// taken for its misspelling (issue 13: an edit distance of 2 at most).
const maxColumnEdits = 2

// nearMiss is the known column an unknown one is probably a misspelling of, or "".
// The bound is the same for the short names, so a few usual metadata names are
// problems too ("site" and "status" are 2 from "state"): a misspelt column kept as
// metadata would silently lose what it says, while a metadata column is easily
// renamed to one that misspells nothing ("location" is 3 from "action").
func nearMiss(name string) string {
	for _, k := range knownColumns {
		if editDistance(name, k, maxColumnEdits) <= maxColumnEdits {
			return k
		}
	}
	return ""
}

// editDistance is the edit distance of a and b in bytes, a swap of two neighbours
// counting one edit (optimal string alignment: "actoin" is 1 from "action"), or more
// than bound as soon as it must be: header names are short, but a hostile one need
// not be.
func editDistance(a, b string, bound int) int {
	if d := len(a) - len(b); d > bound || -d > bound {
		return bound + 1
	}
	before := make([]int, len(b)+1) // row i-2
	prev := make([]int, len(b)+1)   // row i-1
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		rowMin := cur[0]
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				cur[j] = min(cur[j], before[j-2]+1)
			}
			rowMin = min(rowMin, cur[j])
		}
		if rowMin > bound {
			return bound + 1
		}
		before, prev, cur = prev, cur, before
	}
	return prev[len(b)]
}

// Separators a manifest may use: the contract's comma, and the semicolon and tab of
// the "CSV" a spreadsheet saves where the comma is the decimal mark.
var separators = []rune{',', ';', '\t'}

// ParseSeparator reads a separator as a user names it: ",", ";", "tab" or a tab.
func ParseSeparator(s string) (rune, error) {
	switch strings.ToLower(s) {
	case "", ",", "comma":
		return ',', nil
	case ";", "semicolon":
		return ';', nil
	case "\t", "tab", `\t`:
		return '\t', nil
	}
	return 0, fmt.Errorf("separator must be ',', ';' or tab, not %q", s)
}

// SeparatorName names a separator in a message.
func SeparatorName(sep rune) string {
	if sep == '\t' {
		return "tabs"
	}
	return fmt.Sprintf("`%c`", sep)
}

// separatorFlag is the --separator value that selects sep.
func separatorFlag(sep rune) string {
	if sep == '\t' {
		return "tab"
	}
	return fmt.Sprintf("'%c'", sep)
}

func separatorByte(sep rune) (byte, error) {
	for _, s := range separators {
		if s == sep {
			return byte(sep), nil
		}
	}
	return 0, fmt.Errorf("separator must be ',', ';' or tab, not %q", sep)
}

// otherSeparator reports which other separator the header (as split with sep) is
// really written with: the one that splits it into fields among which are the
// required columns.
func otherSeparator(header []string, sep rune) (rune, bool) {
	line := strings.Join(header, string(sep))
	for _, alt := range separators {
		if alt == sep || !strings.ContainsRune(line, alt) {
			continue
		}
		found := 0
		for _, name := range strings.Split(line, string(alt)) {
			switch NormalizeColumnName(strings.Trim(name, `"`)) {
			case ColDeviceID, ColAction:
				found++
			}
		}
		if found >= 2 {
			return alt, true
		}
	}
	return 0, false
}

// Encoding is a manifest's character encoding.
type Encoding string

const (
	EncodingUTF8        Encoding = "utf-8"        // the contract's, and the default
	EncodingWindows1252 Encoding = "windows-1252" // a spreadsheet's plain "CSV" on Windows in western locales
)

// ParseEncoding reads an encoding name ("" is UTF-8).
func ParseEncoding(s string) (Encoding, error) {
	switch strings.ToLower(s) {
	case "", "utf-8", "utf8":
		return EncodingUTF8, nil
	case "windows-1252", "cp1252", "windows1252":
		return EncodingWindows1252, nil
	}
	return "", fmt.Errorf("encoding must be utf-8 or windows-1252, not %q", s)
}

// decoder converts r from the encoding to UTF-8 as it is read.
func (e Encoding) decoder(r io.Reader) (io.Reader, error) {
	switch e {
	case "", EncodingUTF8:
		return r, nil
	case EncodingWindows1252:
		return charmap.Windows1252.NewDecoder().Reader(r), nil
	}
	return nil, fmt.Errorf("encoding must be utf-8 or windows-1252, not %q", string(e))
}

// isWindows1252 reports whether s, not valid UTF-8, is made only of bytes that
// Windows-1252 defines: then it is very likely a Windows-1252 file.
func isWindows1252(s string) bool {
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case 0x81, 0x8D, 0x8F, 0x90, 0x9D: // undefined in Windows-1252
			return false
		}
	}
	return true
}
