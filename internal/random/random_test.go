package random

import (
	"encoding/base64"
	"encoding/hex"
	"testing"
)

func TestShapesAndUniqueness(t *testing.T) {
	for _, tc := range []struct {
		name   string
		make   func() string
		decode func(string) ([]byte, error)
		bytes  int
	}{
		{"Token(16)", func() string { return Token(16) }, base64.RawURLEncoding.DecodeString, 16},
		{"Token(32)", func() string { return Token(32) }, base64.RawURLEncoding.DecodeString, 32},
		{"Hex(8)", func() string { return Hex(8) }, hex.DecodeString, 8},
	} {
		seen := map[string]bool{}
		for range 1000 {
			s := tc.make()
			raw, err := tc.decode(s)
			if err != nil || len(raw) != tc.bytes {
				t.Fatalf("%s = %q: decodes to %d bytes, %v", tc.name, s, len(raw), err)
			}
			if seen[s] {
				t.Fatalf("%s repeated %q within 1000 draws", tc.name, s)
			}
			seen[s] = true
		}
	}
}

func TestIsToken(t *testing.T) {
	for _, tc := range []struct {
		s    string
		n    int
		want bool
	}{
		{Token(16), 16, true},
		{Token(32), 32, true},
		{Token(16), 32, false},
		{"AAAAAAAAAAAAAAAAAAAAAA", 16, true},
		{"AAAAAAAAAAAAAAAAAAAAA", 16, false},
		{"AAAAAAAAAAAAAAAAAAAAA/", 16, false},
		{"AAAAAAAAAAAAAAAAAAAA.=", 16, false},
		{"../../../../../etc/pwd", 16, false},
		{"", 0, true},
	} {
		if got := IsToken(tc.s, tc.n); got != tc.want {
			t.Errorf("IsToken(%q, %d) = %v, want %v", tc.s, tc.n, got, tc.want)
		}
	}
}
