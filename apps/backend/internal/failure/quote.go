package failure

import (
	"strconv"
	"unicode/utf8"
)

// MaxQuoted bounds how much of a client's value an error message repeats:
// enough to recognise it, not enough to turn a 7,000-character query
// parameter into a 7,000-character answer and log line.
const MaxQuoted = 64

// Quote is s as Go's %q shows it, cut to its first MaxQuoted bytes (on a
// rune boundary) and marked with "…" when longer, for error messages
// that name a value the client sent.
func Quote(s string) string {
	if len(s) <= MaxQuoted {
		return strconv.Quote(s)
	}
	cut := MaxQuoted
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return strconv.Quote(s[:cut]) + "…"
}
