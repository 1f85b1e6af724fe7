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

	"github.com/caddy-jit/caddy-jit/audit"
	"github.com/caddy-jit/caddy-jit/internal/testkit"
	"github.com/caddy-jit/caddy-jit/policy"
	"github.com/caddy-jit/caddy-jit/state"
	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
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

// sessionsFixture is the sessions over a fresh store, with one role; its "activation"
// is the part of one that is this package's: a session of alice, started as the
// workflow starts one once it has said yes.
type sessionsFixture struct {
	st    *certmagic.FileStorage
	clock *fakeClock
	logs  *observer.ObservedLogs
	log   *zap.Logger // writes to logs
	a     *Sessions
	role  *policy.Role
}

func newSessionsFixture(t *testing.T) *sessionsFixture {
	t.Helper()
	f := &sessionsFixture{st: newStorage(t), clock: newFakeClock(epoch.Add(10 * time.Second))}
	core, logs := observer.New(zap.InfoLevel)
	f.logs, f.log = logs, zap.New(core)
	f.a = newTestSessions(t, f.st, f.log, f.clock.Now)
	f.role = &policy.Role{
		Name:            "console-admin",
		MaxDuration:     time.Hour,
		DefaultDuration: 15 * time.Minute,
		Eligibility:     []policy.Eligibility{{Subjects: []string{"alice"}}},
	}
	return f
}

// newTestSessions loads the state of st and makes sessions over it.
func newTestSessions(t *testing.T, st state.Store, log *zap.Logger, now Clock) *Sessions {
	t.Helper()
	loaded, err := LoadState(context.Background(), st, 0, now)
	if err != nil {
		t.Fatal(err)
	}
	return New(loaded, audit.NewWriter(log, loaded.Chain, now), "caddy-jit test", now)
}

// activation is a session of alice for the console, 15 minutes from now.
func (f *sessionsFixture) activation(t *testing.T) Spec {
	now := f.clock.Now()
	return Spec{User: "alice", Role: f.role.Name, Audience: audience, Justification: "checking the backups",
		ClientIP: "192.0.2.1", Start: now, Expires: now.Add(15 * time.Minute)}
}

// activate starts the session of spec: recorded, then signed.
func (f *sessionsFixture) activate(t *testing.T, spec Spec) (string, *Record) {
	t.Helper()
	rec := NewRecord(spec)
	if err := f.a.Records.SaveIndexed(context.Background(), rec); err != nil {
		t.Fatal(err)
	}
	token, err := f.a.SignRecord(rec, f.clock.Now())
	if err != nil {
		t.Fatal(err)
	}
	return token, rec
}
