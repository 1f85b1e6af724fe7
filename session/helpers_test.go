package session

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddy-jit/caddy-jit/audit"
	"github.com/caddy-jit/caddy-jit/state"
	"github.com/caddyserver/certmagic"
	"github.com/pquerna/otp"
	"github.com/pquerna/otp/totp"
	"go.uber.org/zap/zaptest/observer"
)

// fakeClock is a Clock that moves only when a test moves it.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock(t time.Time) *fakeClock { return &fakeClock{t: t} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Set(t time.Time) {
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// epoch is a time at the start of a TOTP step, so that tests can move within a step.
var epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func newStorage(t *testing.T) *certmagic.FileStorage {
	t.Helper()
	return &certmagic.FileStorage{Path: t.TempDir()}
}

// rfcSecret is RFC 6238's SHA1 test secret "12345678901234567890" in base32.
const rfcSecret = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"

// codeAt is the 6-digit TOTP code of secret at t, computed by pquerna's totp package.
func codeAt(t *testing.T, secret string, at time.Time) string {
	t.Helper()
	code, err := totp.GenerateCodeCustom(secret, at, totp.ValidateOpts{Period: 30, Digits: otp.DigitsSix, Algorithm: otp.AlgorithmSHA1})
	if err != nil {
		t.Fatal(err)
	}
	return code
}

// wrongCodeAt is a 6-digit code that matches none of the steps Check accepts at t.
func wrongCodeAt(t *testing.T, secret string, at time.Time) string {
	t.Helper()
	taken := map[string]bool{}
	for _, d := range []time.Duration{-30 * time.Second, 0, 30 * time.Second} {
		taken[codeAt(t, secret, at.Add(d))] = true
	}
	for _, c := range []string{"000000", "111111", "222222", "333333"} {
		if !taken[c] {
			return c
		}
	}
	t.Fatal("no wrong code found")
	return ""
}

// enrollSecret stores an enrollment with a known secret, as Enroll would.
func enrollSecret(t *testing.T, st state.Store, user, secret string) {
	t.Helper()
	if err := state.StoreJSON(context.Background(), st, enrollmentKey(user), enrollment{User: user, Secret: secret, Created: epoch}); err != nil {
		t.Fatal(err)
	}
}

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

// storedLockout reads a user's lockout record as stored.
func storedLockout(t *testing.T, st state.Store, user string) (lockout, bool) {
	t.Helper()
	var l lockout
	found, err := state.LoadJSON(context.Background(), st, lockoutKey(user), &l)
	if err != nil {
		t.Fatal(err)
	}
	return l, found
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

// fieldsOf is an audit event's own fields, without those of the chain that links it
// (instance, seq, prev, time), which every event carries.
func fieldsOf(e observer.LoggedEntry) map[string]any {
	m := e.ContextMap()
	for _, k := range []string{audit.FieldInstance, audit.FieldSeq, audit.FieldPrev, audit.FieldTime} {
		delete(m, k)
	}
	return m
}
