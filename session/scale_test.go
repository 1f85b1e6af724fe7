package session

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
)

// scale is how many sessions and revocations BenchmarkScale puts in storage:
// JIT_SCALE, default 100 000. .ci/run uses a small number to prove it still works.
func scale(b *testing.B) int {
	if s := os.Getenv("JIT_SCALE"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			b.Fatalf("JIT_SCALE=%q: want a positive number", s)
		}
		return n
	}
	return 100_000
}

// BenchmarkScale measures caddy-jit's in-memory state with n active sessions (all in
// the verified-token cache) and n revocations in storage: the heap it holds, the time
// of one revocation sync, and the start-up (LoadState) time.
func BenchmarkScale(b *testing.B) {
	n := scale(b)
	ctx := context.Background()
	dir := b.TempDir()
	st := &certmagic.FileStorage{Path: dir}
	now := time.Now()
	clock := func() time.Time { return now }

	k, err := LoadKeyring(ctx, st, clock)
	if err != nil {
		b.Fatal(err)
	}
	// Revocations written straight to files, as many instances would have made them
	// over the last hour.
	start := time.Now()
	for i := range n {
		at := now.Add(-time.Duration(i%3600) * time.Second)
		rev := revocation{SessionID: fmt.Sprintf("r%021d", i), Expires: now.Add(time.Hour), At: at}
		path := filepath.Join(dir, filepath.FromSlash(revocationKey(rev)))
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			b.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(`{}`), 0o600); err != nil {
			b.Fatal(err)
		}
	}
	b.Logf("wrote %d revocations in %s", n, time.Since(start).Round(time.Millisecond))

	b.Run("startup", func(b *testing.B) {
		for b.Loop() {
			s, err := LoadState(ctx, st, n, clock)
			if err != nil {
				b.Fatal(err)
			}
			if s.Revocations.Len() != n {
				b.Fatalf("loaded %d revocations, want %d", s.Revocations.Len(), n)
			}
		}
	})

	state, err := LoadState(ctx, st, n, clock)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("sync", func(b *testing.B) {
		for b.Loop() {
			if err := state.Sync(ctx, now); err != nil {
				b.Fatal(err)
			}
		}
	})

	b.Run("memory", func(b *testing.B) {
		for b.Loop() {
			runtime.GC()
			var before runtime.MemStats
			runtime.ReadMemStats(&before)
			s, err := LoadState(ctx, st, n, clock)
			if err != nil {
				b.Fatal(err)
			}
			want := Want{Subject: "alice", Audience: "https://console.example", Roles: []string{"admin"}}
			for i := range n {
				token, err := k.Sign(Claims{Grant: Grant{Issuer: "caddy-jit", Subject: "alice", Audience: want.Audience, Role: "admin", SessionID: fmt.Sprintf("s%021d", i), IssuedAt: now.Unix(), NotBefore: now.Unix(), Expiry: now.Add(time.Hour).Unix()}, Methods: []string{"otp"}})
				if err != nil {
					b.Fatal(err)
				}
				if _, err := s.Verifier.Verify(token, want, now); err != nil {
					b.Fatal(err)
				}
			}
			runtime.GC()
			var after runtime.MemStats
			runtime.ReadMemStats(&after)
			b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/(1<<20), "MiB-held")
			runtime.KeepAlive(s)
		}
	})
}
