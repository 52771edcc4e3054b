package textcap

import (
	"testing"
	"unicode/utf8"
)

func TestCap(t *testing.T) {
	for _, c := range []struct {
		in   string
		n    int
		want string
	}{
		{"short", 10, "short"},
		{"exactly10!", 10, "exactly10!"},
		{"abcdefghijkl", 10, "abcdefg…"},
		{"ééééé", 7, "éé…"},
		{"bad\xffbyte", 20, "bad?byte"},
	} {
		got := Cap(c.in, c.n)
		if got != c.want || len(got) > max(c.n, len(c.want)) || !utf8.ValidString(got) {
			t.Errorf("Cap(%q, %d) = %q, want %q", c.in, c.n, got, c.want)
		}
	}
}
