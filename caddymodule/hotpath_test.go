package caddymodule

import (
	"context"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddy-jit/caddy-jit/session"
	"github.com/caddyserver/certmagic"
)

// countingStorage counts every call to the storage it wraps.
type countingStorage struct {
	certmagic.Storage
	calls atomic.Int64
}

func (s *countingStorage) Load(ctx context.Context, key string) ([]byte, error) {
	s.calls.Add(1)
	return s.Storage.Load(ctx, key)
}

func (s *countingStorage) Store(ctx context.Context, key string, value []byte) error {
	s.calls.Add(1)
	return s.Storage.Store(ctx, key, value)
}

func (s *countingStorage) Delete(ctx context.Context, key string) error {
	s.calls.Add(1)
	return s.Storage.Delete(ctx, key)
}

func (s *countingStorage) Exists(ctx context.Context, key string) bool {
	s.calls.Add(1)
	return s.Storage.Exists(ctx, key)
}

func (s *countingStorage) List(ctx context.Context, path string, recursive bool) ([]string, error) {
	s.calls.Add(1)
	return s.Storage.List(ctx, path, recursive)
}

func (s *countingStorage) Stat(ctx context.Context, key string) (certmagic.KeyInfo, error) {
	s.calls.Add(1)
	return s.Storage.Stat(ctx, key)
}

func (s *countingStorage) Lock(ctx context.Context, name string) error {
	s.calls.Add(1)
	return s.Storage.Lock(ctx, name)
}

func (s *countingStorage) Unlock(ctx context.Context, name string) error {
	s.calls.Add(1)
	return s.Storage.Unlock(ctx, name)
}

// TestHotPathTouchesNoStorage: requests under a session — the token's first
// verification, cache hits, GETs and POSTs, the signed assertion for the upstream —
// make no storage call; what they need is in memory (DESIGN.md, "Hot path").
func TestHotPathTouchesNoStorage(t *testing.T) {
	st := &countingStorage{Storage: &certmagic.FileStorage{Path: t.TempDir()}}
	g := newGate(t, gateOptions{storage: st})
	g.h.Assertion = true
	// A fresh verifier cache, so that the first request verifies the token in full.
	c, err := g.h.app.authority.Verifier.Verify(g.token, session.Want{Subject: "alice", Audience: "http://console.example", Roles: []string{"admin"}}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	g.h.app.authority.Verifier.ForgetSession(c.SessionID)
	before := st.calls.Load()
	for i := range 60 {
		r := g.request(g.token)
		if i%3 == 0 {
			r.Method = http.MethodPost
			r.Body = http.NoBody
		}
		w := &benchWriter{header: http.Header{}}
		if err := g.h.ServeHTTP(w, r, g.next); err != nil || w.code != http.StatusOK {
			t.Fatalf("request %d under the session: status %d, %v", i, w.code, err)
		}
	}
	if n := st.calls.Load() - before; n != 0 {
		t.Fatalf("60 requests under a session made %d storage calls, want none", n)
	}
	// The counter counts: the enrollment and activation newGate made went through it.
	if st.calls.Load() == 0 {
		t.Fatal("the counting storage saw no call at all: it does not wrap the gate's storage")
	}
}
