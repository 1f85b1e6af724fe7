package session

import (
	"strings"
	"testing"

	"github.com/go-jose/go-jose/v4"
)

// BenchmarkVerify measures the verifier alone, against its baseline: one go-jose
// parse and Ed25519 verification of the same token, the least any check can cost.
func BenchmarkVerify(b *testing.B) {
	k := fuzzKeyring(b)
	want := fuzzWant()
	token, err := k.Sign(Claims{Grant: Grant{Issuer: "caddy-jit", Subject: "alice", Audience: want.Audience, Role: "admin", SessionID: "AAAAAAAAAAAAAAAAAAAAAA", IssuedAt: fuzzNow.Unix(), NotBefore: fuzzNow.Unix(), Expiry: fuzzNow.Unix() + 3600}, Methods: []string{"otp"}})
	if err != nil {
		b.Fatal(err)
	}
	i := strings.LastIndexByte(token, '.')
	forged := token[:i+1] + strings.Repeat("A", len(token)-i-1)
	pub := k.set().byID[k.active().ID]

	b.Run("baseline: one go-jose verification", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			jws, err := jose.ParseSignedCompact(token, []jose.SignatureAlgorithm{jose.EdDSA})
			if err != nil {
				b.Fatal(err)
			}
			if _, err := jws.Verify(pub); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("cache hit", func(b *testing.B) {
		v, _ := NewVerifier(k, NewRevocations(), 0)
		if _, err := v.Verify(token, want, fuzzNow); err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		for b.Loop() {
			if _, err := v.Verify(token, want, fuzzNow); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("malformed", func(b *testing.B) {
		v, _ := NewVerifier(k, NewRevocations(), 0)
		malformed := strings.Replace(token, ".", "!", 1)
		b.ReportAllocs()
		for b.Loop() {
			if _, err := v.Verify(malformed, want, fuzzNow); err != ErrTokenMalformed {
				b.Fatal(err)
			}
		}
	})
	b.Run("forged, well-formed", func(b *testing.B) {
		v, _ := NewVerifier(k, NewRevocations(), 0)
		b.ReportAllocs()
		for b.Loop() {
			if _, err := v.Verify(forged, want, fuzzNow); err != ErrTokenSignature {
				b.Fatal(err)
			}
		}
	})
}
