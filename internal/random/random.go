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
	return base64.RawURLEncoding.EncodeToString(bytes(n))
}

// Hex returns n random bytes in hexadecimal.
func Hex(n int) string {
	return hex.EncodeToString(bytes(n))
}

// bytes returns n random bytes. crypto/rand.Read never fails (since Go 1.24 it crashes
// the program rather than return an error), so neither does this.
func bytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}
