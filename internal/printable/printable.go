// Package printable owns what makes a string that others chose safe to show or to
// keep: which characters have no place in a name (controls that could break a log
// line or a header), which could rewrite what a terminal shows (those and the bidi
// controls), and a bound on length. The gate checks names with it; the `caddy jit`
// commands clean what they print with it. It imports nothing of caddy-jit, so any
// package may use it.
package printable

import (
	"strings"
	"unicode"
)

// IsControl matches the characters that have no place in a name: they could break a
// log line or a header.
func IsControl(r rune) bool {
	return r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) || r == '\u2028' || r == '\u2029'
}

// String replaces the control and bidi characters of s, which could rewrite what an
// operator's terminal shows, with '?'.
func String(s string) string {
	return strings.Map(func(r rune) rune {
		if IsControl(r) || unicode.Is(unicode.Bidi_Control, r) {
			return '?'
		}
		return r
	}, s)
}

// Truncate returns the first n runes of s.
func Truncate(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n])
}
