// Package random makes the unguessable strings caddy-jit names things with: session
// ids, pickup secrets, enrollment tokens, storage keys and message ids.
package random

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
)

// Token returns n random bytes in base64url without padding.
func Token(n int) string {
	return base64.RawURLEncoding.EncodeToString(Bytes(n))
}

// Hex returns n random bytes in hexadecimal.
func Hex(n int) string {
	return hex.EncodeToString(Bytes(n))
}

// Bytes returns n random bytes. crypto/rand.Read never fails (since Go 1.24 it crashes
// the program rather than return an error), so neither does this.
func Bytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

// IsToken reports whether s has the shape of Token(n): the right length, and only
// base64url characters. It is how an id or a secret from a cookie, a form or a URL is
// refused before it names a storage key.
func IsToken(s string, n int) bool {
	if len(s) != base64.RawURLEncoding.EncodedLen(n) {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}
