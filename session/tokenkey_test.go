package session

import (
	"strings"
	"testing"
)

func TestTokenKeyerTellsTokensApart(t *testing.T) {
	k, err := newTokenKeyer()
	if err != nil {
		t.Fatal(err)
	}
	token := strings.Repeat("eyJhbGciOiJFZERTQSJ9.", 20)
	flipped := func(i int) string {
		b := []byte(token)
		b[i] ^= 1
		return string(b)
	}
	for _, tt := range []struct {
		name  string
		other string
	}{
		{"first byte changed", flipped(0)},
		{"middle byte changed", flipped(len(token) / 2)},
		{"last byte changed", flipped(len(token) - 1)},
		// A polynomial hash that ignored the length would give these the key of
		// the token, their padding being zeros too.
		{"a zero byte added", token + "\x00"},
		{"sixteen zero bytes added", token + strings.Repeat("\x00", 16)},
		{"the last byte cut", token[:len(token)-1]},
		{"empty", ""},
	} {
		if k.key(tt.other) == k.key(token) {
			t.Errorf("%s: same key as the token", tt.name)
		}
	}

	// The key is of the bytes, wherever they are: a token read from inside a Cookie
	// header is the token verified before.
	header := "theme=dark; jit=" + token + "; x=1"
	inPlace := header[len("theme=dark; jit=") : len(header)-len("; x=1")]
	if k.key(inPlace) != k.key(strings.Clone(token)) {
		t.Fatal("a token read in place keys differently from its copy")
	}

	// Each verifier draws its own secret: a key says nothing across processes.
	other, err := newTokenKeyer()
	if err != nil {
		t.Fatal(err)
	}
	if other.key(token) == k.key(token) {
		t.Fatal("two keyers gave one token the same key")
	}

}

func TestTokenKeyerAllocations(t *testing.T) {
	if raceDetector {
		t.Skip("under -race sync.Pool drops buffers at random")
	}
	k, err := newTokenKeyer()
	if err != nil {
		t.Fatal(err)
	}
	token := strings.Repeat("x", 433)
	if n := testing.AllocsPerRun(1000, func() { _ = k.key(token) }); n != 0 {
		t.Fatalf("key allocates %v times per token, want 0", n)
	}
}
