package session

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/caddy-jit/caddy-jit/internal/testkit"
	"github.com/caddy-jit/caddy-jit/state"
	"github.com/caddyserver/certmagic"
)

// The helpers every domain package's tests share, under the names these tests use.
type fakeClock = testkit.Clock

var (
	newFakeClock = testkit.NewClock
	epoch        = testkit.Epoch
	newStorage   = testkit.Storage
	codeAt       = testkit.CodeAt
	wrongCodeAt  = testkit.WrongCodeAt
	events       = testkit.Events
	fieldsOf     = testkit.Fields
	secretForms  = testkit.SecretForms
)

const (
	rfcSecret       = testkit.RFCSecret
	lockoutDuration = 15 * time.Minute
)

// b64 is base64url without padding, as JOSE uses it.
func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func b64JSON(t *testing.T, v any) string {
	t.Helper()
	raw, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b64(raw)
}

// signEdDSA makes a compact JWS by hand: any header, any payload, signed with priv.
func signEdDSA(t *testing.T, priv ed25519.PrivateKey, header map[string]any, payload []byte) string {
	t.Helper()
	input := b64JSON(t, header) + "." + b64(payload)
	return input + "." + b64(ed25519.Sign(priv, []byte(input)))
}

// brokenStorage is a file system storage whose root is a regular file, so that every
// call fails, as when a shared volume is gone.
func brokenStorage(t *testing.T) *certmagic.FileStorage {
	t.Helper()
	path := t.TempDir() + "/not-a-dir"
	if err := os.WriteFile(path, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	return &certmagic.FileStorage{Path: path}
}

// revocationStored reports whether a revocation of the session is in storage.
func revocationStored(t *testing.T, st state.Store, id string) bool {
	t.Helper()
	keys, err := st.List(context.Background(), strings.TrimSuffix(revocationFolder, "/"), true)
	if err != nil {
		return false
	}
	for _, key := range keys {
		if got, _, ok := parseRevocationKey(key); ok && got == id {
			return true
		}
	}
	return false
}
