// Package textcap cuts text for display to a byte budget without breaking
// a character.
package textcap

import (
	"strings"
	"unicode/utf8"
)

// Cap is s as valid UTF-8 of at most n bytes, cut on a rune boundary and
// marked with "…" when cut.
func Cap(s string, n int) string {
	s = strings.ToValidUTF8(s, "?")
	if len(s) <= n {
		return s
	}
	cut := n - len("…")
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}
