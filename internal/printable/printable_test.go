package printable

import "testing"

func TestIsControl(t *testing.T) {
	for r, want := range map[rune]bool{
		'a': false, ' ': false, 'é': false, '\u00a0': false, '\u202e': false,
		'\x00': true, '\n': true, '\x1b': true, '\x7f': true, '\u0085': true, '\u009f': true, '\u2028': true, '\u2029': true,
	} {
		if got := IsControl(r); got != want {
			t.Errorf("IsControl(%U) = %v, want %v", r, got, want)
		}
	}
}

func TestString(t *testing.T) {
	for in, want := range map[string]string{
		"alice":                    "alice",
		"Jürgen Müller":            "Jürgen Müller",
		"red\x1b[31m":              "red?[31m",
		"/restart\x1b]0;pwned\x07": "/restart?]0;pwned?",
		"evil\u202eeman":           "evil?eman",
		"a\u2066b\u2069c\u200fd":   "a?b?c?d",
		"line\u2028break":          "line?break",
	} {
		if got := String(in); got != want {
			t.Errorf("String(%+q) = %+q, want %+q", in, got, want)
		}
	}
}

func TestTruncate(t *testing.T) {
	for _, tt := range []struct {
		in   string
		n    int
		want string
	}{
		{"", 3, ""},
		{"abc", 3, "abc"},
		{"abcd", 3, "abc"},
		{"Müller", 2, "Mü"},
		{"日本語テキスト", 3, "日本語"},
	} {
		if got := Truncate(tt.in, tt.n); got != tt.want {
			t.Errorf("Truncate(%q, %d) = %q, want %q", tt.in, tt.n, got, tt.want)
		}
	}
}
