package session

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/go-jose/go-jose/v4"
)

func TestKeyringIsCreatedOnceAndReloadedIdentical(t *testing.T) {
	ctx := context.Background()
	st := newStorage(t)
	clock := newFakeClock(epoch.Add(time.Hour))

	if st.Exists(ctx, keyringKey) {
		t.Fatal("a keyring exists before the first load")
	}
	k1, err := LoadKeyring(ctx, st, clock.Now)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := st.Load(ctx, keyringKey)
	if err != nil {
		t.Fatalf("the keyring was not stored: %v", err)
	}

	// A restart: a new storage value over the same folder, later.
	clock.Add(24 * time.Hour)
	k2, err := LoadKeyring(ctx, &certmagic.FileStorage{Path: st.Path}, clock.Now)
	if err != nil {
		t.Fatal(err)
	}
	if raw2, _ := st.Load(ctx, keyringKey); !bytes.Equal(raw, raw2) {
		t.Fatal("loading the keyring again rewrote it")
	}

	if len(k1.set().signing) != 1 || len(k2.set().signing) != 1 {
		t.Fatalf("signing keys: %d and %d, want 1", len(k1.set().signing), len(k2.set().signing))
	}
	a1, a2 := k1.active(), k2.active()
	if a1.ID != a2.ID || !a1.Private.Equal(a2.Private) {
		t.Fatalf("reloaded key differs: %s vs %s", a1.ID, a2.ID)
	}
	if a1.ID != keyID(a1.Private.Public().(ed25519.PublicKey)) {
		t.Fatal("the key id is not derived from the public key")
	}
	if !bytes.Equal(k1.csrf, k2.csrf) || len(k1.csrf) != 32 {
		t.Fatalf("CSRF secrets differ or have the wrong size (%d bytes)", len(k1.csrf))
	}
	if !bytes.Equal(k1.JWKS(), k2.JWKS()) {
		t.Fatalf("JWKS differ:\n%s\n%s", k1.JWKS(), k2.JWKS())
	}

	var rec keyringRecord
	if err := json.Unmarshal(raw, &rec); err != nil {
		t.Fatal(err)
	}
	if len(rec.Keys) != 1 || !rec.Keys[0].Created.Equal(epoch.Add(time.Hour)) {
		t.Fatalf("stored keys = %+v, want one created at %v", rec.Keys, epoch.Add(time.Hour))
	}

	// A token signed before the restart verifies after it, and so does a CSRF token.
	now := epoch.Add(25 * time.Hour)
	token, err := k1.Sign(validClaims(now))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := k2.verifySignature(token); err != nil {
		t.Fatalf("a token signed before the restart: %v", err)
	}
	if !k2.CheckCSRF(k1.CSRFToken("alice", audience, now), "alice", audience, now) {
		t.Fatal("a CSRF token made before the restart is refused")
	}

	// A different storage makes a different keyring.
	k3, err := LoadKeyring(ctx, newStorage(t), clock.Now)
	if err != nil {
		t.Fatal(err)
	}
	if k3.active().ID == a1.ID || bytes.Equal(k3.csrf, k1.csrf) {
		t.Fatal("two storages share a keyring")
	}
}

func TestJWKSHoldsOnlyThePublicKey(t *testing.T) {
	k, err := LoadKeyring(context.Background(), newStorage(t), newFakeClock(epoch).Now)
	if err != nil {
		t.Fatal(err)
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(k.JWKS(), &set); err != nil {
		t.Fatal(err)
	}
	if len(set.Keys) != 1 {
		t.Fatalf("JWKS has %d keys", len(set.Keys))
	}
	key := set.Keys[0]
	pub, ok := key.Key.(ed25519.PublicKey)
	if !ok || !key.IsPublic() || key.KeyID != k.active().ID || key.Algorithm != "EdDSA" || key.Use != "sig" {
		t.Fatalf("JWKS key = %+v", key)
	}
	if !pub.Equal(k.active().Private.Public()) {
		t.Fatal("the JWKS key is not the signing key's public half")
	}
	var generic struct {
		Keys []map[string]any `json:"keys"`
	}
	if err := json.Unmarshal(k.JWKS(), &generic); err != nil {
		t.Fatal(err)
	}
	if _, private := generic.Keys[0]["d"]; private {
		t.Fatal("the JWKS carries the private key")
	}
}

// TestLoadKeyringConcurrently starts many instances at once over one empty storage:
// they must agree on a single key.
func TestLoadKeyringConcurrently(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	clock := newFakeClock(epoch)
	const n = 8
	ids := make([]string, n)
	errs := make([]error, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			// Half share one storage value, half have their own, as separate instances would.
			st := &certmagic.FileStorage{Path: dir}
			k, err := LoadKeyring(ctx, st, clock.Now)
			errs[i] = err
			if err == nil {
				ids[i] = k.active().ID
			}
		})
	}
	close(start)
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("instance %d: %v", i, errs[i])
		}
		if ids[i] != ids[0] {
			t.Fatalf("instances disagree on the key: %s and %s", ids[0], ids[i])
		}
	}
	k, err := LoadKeyring(ctx, &certmagic.FileStorage{Path: dir}, clock.Now)
	if err != nil {
		t.Fatal(err)
	}
	if k.active().ID != ids[0] || len(k.set().signing) != 1 {
		t.Fatalf("stored keyring: %d keys, active %s; want one, %s", len(k.set().signing), k.active().ID, ids[0])
	}
}

func TestLoadKeyringRefusesACorruptKeyring(t *testing.T) {
	seed := bytes.Repeat([]byte{7}, ed25519.SeedSize)
	id := keyID(ed25519.NewKeyFromSeed(seed).Public().(ed25519.PublicKey))
	csrf := bytes.Repeat([]byte{9}, 32)
	record := func(kid string, seed, csrf []byte) []byte {
		raw, err := json.Marshal(map[string]any{
			"keys":        []map[string]any{{"kid": kid, "seed": seed, "created": epoch}},
			"csrf_secret": csrf,
		})
		if err != nil {
			t.Fatal(err)
		}
		return raw
	}
	good := record(id, seed, csrf)

	tests := []struct {
		name string
		raw  []byte
		want string // part of the error
	}{
		{"not JSON", []byte("garbage\x00\xff"), "unreadable"},
		{"empty file", []byte{}, "unreadable"},
		{"truncated", good[:len(good)/2], "unreadable"},
		{"JSON of the wrong shape", []byte(`{"keys":"nope"}`), "unreadable"},
		{"no keys", []byte(`{"keys":[],"csrf_secret":"` + strings.Repeat("A", 44) + `"}`), "no signing key"},
		{"seed too short", record(id, seed[:31], csrf), "seed of 31 bytes"},
		{"seed too long", record(id, append(seed, 0), csrf), "seed of 33 bytes"},
		{"key id does not match the key", record("AAAAAAAAAAAAAAAA", seed, csrf), "does not match its id"},
		{"CSRF secret too short", record(id, seed, csrf[:31]), "CSRF secret"},
		{"CSRF secret missing", record(id, seed, nil), "CSRF secret"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			st := newStorage(t)
			if err := st.Store(ctx, keyringKey, tt.raw); err != nil {
				t.Fatal(err)
			}
			k, err := LoadKeyring(ctx, st, newFakeClock(epoch).Now)
			if err == nil || k != nil {
				t.Fatalf("LoadKeyring = %v, %v; want an error", k, err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %q does not mention %q", err, tt.want)
			}
			// The keyring is left for the operator to repair, never silently replaced.
			if raw, _ := st.Load(ctx, keyringKey); !bytes.Equal(raw, tt.raw) {
				t.Fatal("the corrupt keyring was overwritten")
			}
		})
	}

	// The control: the well-formed record loads, with its key.
	st := newStorage(t)
	if err := st.Store(context.Background(), keyringKey, good); err != nil {
		t.Fatal(err)
	}
	k, err := LoadKeyring(context.Background(), st, newFakeClock(epoch).Now)
	if err != nil || k.active().ID != id {
		t.Fatalf("good record: %v, %v", k, err)
	}
}

func TestCSRFToken(t *testing.T) {
	k, err := LoadKeyring(context.Background(), newStorage(t), newFakeClock(epoch).Now)
	if err != nil {
		t.Fatal(err)
	}
	other, err := LoadKeyring(context.Background(), newStorage(t), newFakeClock(epoch).Now)
	if err != nil {
		t.Fatal(err)
	}
	now := epoch
	token := k.CSRFToken("alice", audience, now)
	if len(token) != csrfTokenLength {
		t.Fatalf("token length %d, want %d", len(token), csrfTokenLength)
	}
	flipped := []byte(token)
	flipped[20] ^= 1
	tests := []struct {
		name, token, user, aud string
		at                     time.Time
		want                   bool
	}{
		{"valid", token, "alice", audience, now, true},
		{"valid just before expiry", token, "alice", audience, now.Add(csrfLifetime - time.Second), true},
		{"expired", token, "alice", audience, now.Add(csrfLifetime), false},
		{"another user", token, "bob", audience, now, false},
		{"another site", token, "alice", "https://other.example", now, false},
		{"user and site boundary moved", k.CSRFToken("alic", "e"+audience, now), "alice", audience, now, false},
		{"another keyring", other.CSRFToken("alice", audience, now), "alice", audience, now, false},
		{"altered", string(flipped), "alice", audience, now, false},
		{"empty", "", "alice", audience, now, false},
		{"too long", token + "A", "alice", audience, now, false},
		{"not base64url", strings.Repeat("*", csrfTokenLength), "alice", audience, now, false},
	}
	for _, tt := range tests {
		if got := k.CheckCSRF(tt.token, tt.user, tt.aud, tt.at); got != tt.want {
			t.Errorf("%s: CheckCSRF = %v, want %v", tt.name, got, tt.want)
		}
	}
}

// TestDroppedKeyDropsItsCachedTokens: once rotations drop a key, the tokens it signed
// leave the verified-token cache and are refused on the next request, whether this
// instance rotated or another one did and this one read the keyring from storage.
func TestDroppedKeyDropsItsCachedTokens(t *testing.T) {
	for _, tt := range []struct {
		name string
		// other: the rotations happen on another instance over the same storage, and
		// this one learns of them through Refresh, as its sync loop runs it.
		other bool
	}{
		{name: "rotated by this instance"},
		{name: "rotated by another instance, read from storage", other: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			st := newStorage(t)
			clock := newFakeClock(epoch)
			k, err := LoadKeyring(ctx, st, clock.Now)
			if err != nil {
				t.Fatal(err)
			}
			rotator := k
			if tt.other {
				if rotator, err = LoadKeyring(ctx, &certmagic.FileStorage{Path: st.Path}, clock.Now); err != nil {
					t.Fatal(err)
				}
			}
			v, err := NewVerifier(k, NewRevocations(), 0)
			if err != nil {
				t.Fatal(err)
			}
			oldKid := k.active().ID
			old, err := k.Sign(validClaims(vnow))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := v.Verify(old, wantAlice(), vnow); err != nil {
				t.Fatal(err)
			}
			for i := 1; i <= maxKeys; i++ {
				clock.Add(time.Hour)
				if _, err := rotator.rotate(ctx, st, clock.Now, 0); err != nil {
					t.Fatal(err)
				}
				if err := k.Refresh(ctx, st); err != nil {
					t.Fatal(err)
				}
				dropped := i == maxKeys
				if held := k.knows(oldKid); held == dropped {
					t.Fatalf("after %d rotations the keyring holds the old key: %v", i, held)
				}
				_, cached := v.cache.Peek(v.keyer.key(old))
				if cached == dropped {
					t.Fatalf("after %d rotations the old key's token is cached: %v", i, cached)
				}
				_, err := v.Verify(old, wantAlice(), vnow)
				switch {
				case !dropped && err != nil:
					t.Fatalf("after %d rotations, the key still held: %v", i, err)
				case dropped && !errors.Is(err, ErrTokenSignature):
					t.Fatalf("after the rotation that dropped its key: %v, want %v", err, ErrTokenSignature)
				}
			}
			// A token of a key still held stays cached through the drop of another.
			fresh, err := k.Sign(validClaims(vnow))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := v.Verify(fresh, wantAlice(), vnow); err != nil {
				t.Fatal(err)
			}
			clock.Add(time.Hour)
			if _, err := rotator.rotate(ctx, st, clock.Now, 0); err != nil {
				t.Fatal(err)
			}
			if err := k.Refresh(ctx, st); err != nil {
				t.Fatal(err)
			}
			if _, cached := v.cache.Peek(v.keyer.key(fresh)); !cached {
				t.Fatal("a rotation that dropped another key dropped the newest key's token")
			}
		})
	}
}

func TestKeyringReplaceReportsDroppedKeys(t *testing.T) {
	ctx := context.Background()
	st := newStorage(t)
	clock := newFakeClock(epoch)
	k, err := LoadKeyring(ctx, st, clock.Now)
	if err != nil {
		t.Fatal(err)
	}
	var told [][]string
	k.onDrop(func(kids []string) { told = append(told, kids) })
	first := k.active().ID
	for range maxKeys - 1 {
		clock.Add(time.Hour)
		if _, err := k.rotate(ctx, st, clock.Now, 0); err != nil {
			t.Fatal(err)
		}
	}
	// Nothing refreshed or rotated: nothing to tell.
	if err := k.Refresh(ctx, st); err != nil {
		t.Fatal(err)
	}
	if len(told) != 0 {
		t.Fatalf("rotations that dropped no key told %v", told)
	}
	clock.Add(time.Hour)
	if _, err := k.rotate(ctx, st, clock.Now, 0); err != nil {
		t.Fatal(err)
	}
	if len(told) != 1 || len(told[0]) != 1 || told[0][0] != first {
		t.Fatalf("the rotation that dropped %s told %v", first, told)
	}
}

// A store that lost the keys (Redis restarted without its data) loses every session
// signed by them: the keyring makes new keys, drops the old ones and so refuses their
// tokens, cached or not, instead of serving on from memory.
func TestKeysLostFromTheStoreAreReplaced(t *testing.T) {
	ctx := context.Background()
	st, clock := newStorage(t), newFakeClock(epoch)
	k, err := LoadKeyring(ctx, st, clock.Now)
	if err != nil {
		t.Fatal(err)
	}
	var told [][]string
	k.onDrop(func(kids []string) { told = append(told, kids) })
	lost := k.active().ID
	if err := st.Delete(ctx, keyringKey); err != nil {
		t.Fatal(err)
	}
	if err := k.Refresh(ctx, st); err != nil {
		t.Fatalf("Refresh after the keys vanished = %v", err)
	}
	if got := k.active().ID; got == lost {
		t.Fatal("the keyring still signs with the lost key")
	}
	if len(told) != 1 || !slices.Equal(told[0], []string{lost}) {
		t.Errorf("the drop listeners heard %v, want [[%s]]", told, lost)
	}
	// The new keys are stored, so the other instances take the same ones.
	other, err := LoadKeyring(ctx, st, clock.Now)
	if err != nil || other.active().ID != k.active().ID {
		t.Errorf("another instance loads %v (%v), want the replacement %s", other.active().ID, err, k.active().ID)
	}
}
