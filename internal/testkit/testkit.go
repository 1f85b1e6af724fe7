// Package testkit holds what the domain packages' tests share: a clock that moves only
// when a test moves it, a throwaway store, TOTP codes, a software passkey authenticator
// (SoftKey), and readers of audit events (including the scan that no secret reached
// the log). Only tests import it.
package testkit

import (
	"bytes"
	"encoding/base32"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/pquerna/otp"
	"github.com/pquerna/otp/totp"
	"go.uber.org/zap/zaptest/observer"

	"github.com/caddy-jit/caddy-jit/audit"
)

// Clock is a clock that moves only when a test moves it.
type Clock struct {
	mu sync.Mutex
	t  time.Time
}

// NewClock starts a clock at t.
func NewClock(t time.Time) *Clock { return &Clock{t: t} }

// Now tells the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Set moves the clock to t.
func (c *Clock) Set(t time.Time) {
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
}

// Add moves the clock by d.
func (c *Clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// Epoch is a time at the start of a TOTP step, so that tests can move within a step.
var Epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// Storage is a Caddy file storage in a folder of its own, removed after the test.
func Storage(t *testing.T) *certmagic.FileStorage {
	t.Helper()
	return &certmagic.FileStorage{Path: t.TempDir()}
}

// RFCSecret is RFC 6238's SHA1 test secret "12345678901234567890" in base32.
const RFCSecret = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"

// CodeAt is the 6-digit TOTP code of secret at t, computed by pquerna's totp package.
func CodeAt(t *testing.T, secret string, at time.Time) string {
	t.Helper()
	code, err := totp.GenerateCodeCustom(secret, at, totp.ValidateOpts{Period: 30, Digits: otp.DigitsSix, Algorithm: otp.AlgorithmSHA1})
	if err != nil {
		t.Fatal(err)
	}
	return code
}

// WrongCodeAt is a 6-digit code that matches none of the steps a check accepts at t.
func WrongCodeAt(t *testing.T, secret string, at time.Time) string {
	t.Helper()
	taken := map[string]bool{}
	for _, d := range []time.Duration{-30 * time.Second, 0, 30 * time.Second} {
		taken[CodeAt(t, secret, at.Add(d))] = true
	}
	for _, c := range []string{"000000", "111111", "222222", "333333"} {
		if !taken[c] {
			return c
		}
	}
	t.Fatal("no wrong code found")
	return ""
}

// Events returns the audit entries with the given event field.
func Events(logs *observer.ObservedLogs, event string) []observer.LoggedEntry {
	var out []observer.LoggedEntry
	for _, e := range logs.All() {
		if e.ContextMap()["event"] == event {
			out = append(out, e)
		}
	}
	return out
}

// Fields is an audit event's own fields, without those of the chain that links it
// (instance, seq, prev, time), which every event carries.
func Fields(e observer.LoggedEntry) map[string]any {
	m := e.ContextMap()
	for _, k := range []string{audit.FieldInstance, audit.FieldSeq, audit.FieldPrev, audit.FieldTime} {
		delete(m, k)
	}
	return m
}

// SecretForms are the ways a base32 TOTP secret could end up in a log.
func SecretForms(t *testing.T, secret string) []string {
	t.Helper()
	raw, err := base32.StdEncoding.WithPadding(base32.NoPadding).DecodeString(strings.ToUpper(secret))
	if err != nil {
		t.Fatal(err)
	}
	return []string{
		secret, strings.ToLower(secret),
		hex.EncodeToString(raw),
		base64.StdEncoding.EncodeToString(raw), base64.RawURLEncoding.EncodeToString(raw),
		string(raw),
	}
}

// AssertNoSecretsLogged fails if any audit entry mentions one of forbidden (codes,
// tokens) or a form of the TOTP secret in its message or any field.
func AssertNoSecretsLogged(t *testing.T, logs *observer.ObservedLogs, secret string, forbidden []string) {
	t.Helper()
	forbidden = append(append([]string{}, forbidden...), SecretForms(t, secret)...)
	entries := logs.All()
	if len(entries) == 0 {
		t.Fatal("no audit entries to scan")
	}
	for _, e := range entries {
		// Every key and value as text (a duration prints as 15m0s, not in nanoseconds,
		// so a number cannot pass for a code).
		texts := []string{e.Message, e.LoggerName}
		for k, v := range e.ContextMap() {
			texts = append(texts, k, fmt.Sprint(v))
		}
		raw, err := json.Marshal(e.ContextMap())
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range forbidden {
			if s == "" {
				continue
			}
			for _, text := range texts {
				if strings.Contains(text, s) {
					t.Errorf("audit event %q contains the secret or code %q: %s", e.Message, s, raw)
				}
			}
		}
	}
}

// SyncBuffer is a bytes.Buffer that writers in other goroutines (a process's output, a
// batched audit flusher) and the test's readers can share.
type SyncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *SyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *SyncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
