package session

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddy-jit/caddy-jit/state"
	"github.com/go-jose/go-jose/v4"
)

// Keyring holds the keys a cluster shares: Ed25519 keys that sign session tokens and a
// secret for CSRF tokens. The newest signing key signs; every key verifies, so a key can
// be rotated in without logging anyone out.
type Keyring struct {
	// csrf never changes: rotating it would only void open forms.
	csrf []byte
	keys atomic.Pointer[keySet]
	// now makes the keys a store that lost them needs (Refresh).
	now Clock

	mu sync.Mutex
	// dropListeners learn of every key a new generation no longer holds, whether this
	// instance rotated it out or read another instance's rotation from storage.
	dropListeners []func(kids []string)
}

// keySet is one generation of signing keys; rotation swaps in a new one whole, so a
// request never sees half of a rotation.
type keySet struct {
	signing  []signingKey
	byID     map[string]ed25519.PublicKey
	jwksJSON []byte
}

type signingKey struct {
	ID      string
	Private ed25519.PrivateKey
}

// keyringRecord is the keyring as stored.
type keyringRecord struct {
	Keys []struct {
		ID      string    `json:"kid"`
		Seed    []byte    `json:"seed"`
		Created time.Time `json:"created"`
	} `json:"keys"`
	CSRFSecret []byte `json:"csrf_secret"`
}

// LoadKeyring reads the keyring from storage, creating it on first use. Instances that
// start together agree on one keyring: creation happens under a storage lock and
// re-reads before it writes.
func LoadKeyring(ctx context.Context, st state.Store, now Clock) (*Keyring, error) {
	var rec keyringRecord
	found, err := state.LoadJSON(ctx, st, keyringKey, &rec)
	if err != nil {
		return nil, fmt.Errorf("the signing keys are unreadable (repair or remove %s in the storage to start over, which ends every session): %w", keyringKey, err)
	}
	if !found {
		if rec, err = createKeyringRecord(ctx, st, now); err != nil {
			return nil, err
		}
	}
	k, err := keyringFromRecord(rec)
	if err != nil {
		return nil, err
	}
	k.now = now
	return k, nil
}

// createKeyringRecord makes and stores a keyring, unless another instance stored one
// first: then it returns that one.
func createKeyringRecord(ctx context.Context, st state.Store, now Clock) (keyringRecord, error) {
	return state.CreateOnce(ctx, st, keyringKey, keyringLock, func() (keyringRecord, error) { return newKeyringRecord(now()) })
}

func newKeyringRecord(now time.Time) (keyringRecord, error) {
	var rec keyringRecord
	seed := make([]byte, ed25519.SeedSize)
	rec.CSRFSecret = make([]byte, 32)
	if _, err := rand.Read(seed); err != nil {
		return rec, err
	}
	if _, err := rand.Read(rec.CSRFSecret); err != nil {
		return rec, err
	}
	rec.Keys = append(rec.Keys, struct {
		ID      string    `json:"kid"`
		Seed    []byte    `json:"seed"`
		Created time.Time `json:"created"`
	}{ID: keyID(ed25519.NewKeyFromSeed(seed).Public().(ed25519.PublicKey)), Seed: seed, Created: now.UTC()})
	return rec, nil
}

// keyID names a key by its public half, so an id can never point at another key.
func keyID(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	return base64.RawURLEncoding.EncodeToString(sum[:12])
}

func keyringFromRecord(rec keyringRecord) (*Keyring, error) {
	if len(rec.CSRFSecret) < 32 {
		return nil, errors.New("the stored keyring's CSRF secret is shorter than 32 bytes")
	}
	set, err := keySetFromRecord(rec)
	if err != nil {
		return nil, err
	}
	k := &Keyring{csrf: rec.CSRFSecret}
	k.keys.Store(set)
	return k, nil
}

func keySetFromRecord(rec keyringRecord) (*keySet, error) {
	if len(rec.Keys) == 0 {
		return nil, errors.New("the stored keyring holds no signing key")
	}
	set := &keySet{byID: make(map[string]ed25519.PublicKey)}
	var jwks jose.JSONWebKeySet
	for _, stored := range rec.Keys {
		if len(stored.Seed) != ed25519.SeedSize {
			return nil, fmt.Errorf("signing key %q has a seed of %d bytes, want %d", stored.ID, len(stored.Seed), ed25519.SeedSize)
		}
		priv := ed25519.NewKeyFromSeed(stored.Seed)
		pub := priv.Public().(ed25519.PublicKey)
		if keyID(pub) != stored.ID {
			return nil, fmt.Errorf("signing key %q does not match its id", stored.ID)
		}
		set.signing = append(set.signing, signingKey{ID: stored.ID, Private: priv})
		set.byID[stored.ID] = pub
		jwks.Keys = append(jwks.Keys, jose.JSONWebKey{Key: pub, KeyID: stored.ID, Algorithm: string(jose.EdDSA), Use: "sig"})
	}
	raw, err := json.Marshal(jwks)
	if err != nil {
		return nil, err
	}
	set.jwksJSON = raw
	return set, nil
}

// set returns the current generation of keys.
func (k *Keyring) set() *keySet { return k.keys.Load() }

// active is the key that signs new tokens: the newest.
func (k *Keyring) active() signingKey {
	set := k.set()
	return set.signing[len(set.signing)-1]
}

// JWKS returns the public keys as a JSON Web Key Set.
func (k *Keyring) JWKS() []byte { return k.set().jwksJSON }

// KeyIDs lists the key ids, oldest first; the last one signs.
func (k *Keyring) KeyIDs() []string {
	set := k.set()
	ids := make([]string, len(set.signing))
	for i, key := range set.signing {
		ids[i] = key.ID
	}
	return ids
}

// maxKeys is how many signing keys a keyring keeps. The oldest is dropped by the
// rotation after next, so a token lives through at least one rotation; when its key
// is dropped its session ends on every instance (cached or not), so rotate less often
// than half the longest session (max_duration, or max_total), counting from the
// signing of a scheduled session's token.
const maxKeys = 3

// rotate adds a new signing key, which signs from now on; the previous keys still
// verify. With ifOlder set it rotates only if the newest key is at least that old,
// deciding under the storage lock, so that the instances of a cluster rotating on a
// schedule rotate once. It returns the new key's id, or "" when none was due.
func (k *Keyring) rotate(ctx context.Context, st state.Store, now Clock, ifOlder time.Duration) (string, error) {
	if err := st.Lock(ctx, keyringLock); err != nil {
		return "", fmt.Errorf("locking the signing keys: %w", err)
	}
	defer func() { _ = st.Unlock(context.WithoutCancel(ctx), keyringLock) }()
	var rec keyringRecord
	found, err := state.LoadJSON(ctx, st, keyringKey, &rec)
	if err != nil {
		return "", err
	}
	if !found {
		return "", errors.New("the stored keyring is gone: restart caddy to create one")
	}
	if ifOlder > 0 && now().Sub(rec.Keys[len(rec.Keys)-1].Created) < ifOlder {
		return "", nil
	}
	fresh, err := newKeyringRecord(now())
	if err != nil {
		return "", err
	}
	rec.Keys = append(rec.Keys, fresh.Keys[0])
	if len(rec.Keys) > maxKeys {
		rec.Keys = rec.Keys[len(rec.Keys)-maxKeys:]
	}
	set, err := keySetFromRecord(rec)
	if err != nil {
		return "", err
	}
	if err := state.StoreJSON(ctx, st, keyringKey, rec); err != nil {
		return "", err
	}
	k.replace(set)
	return fresh.Keys[0].ID, nil
}

// newestKeyCreated returns when the signing key was made, from storage.
func newestKeyCreated(ctx context.Context, st state.Store) (time.Time, error) {
	var rec keyringRecord
	if _, err := state.LoadJSON(ctx, st, keyringKey, &rec); err != nil || len(rec.Keys) == 0 {
		return time.Time{}, err
	}
	return rec.Keys[len(rec.Keys)-1].Created, nil
}

// Refresh picks up a rotation made by another instance (or the CLI).
func (k *Keyring) Refresh(ctx context.Context, st state.Store) error {
	var rec keyringRecord
	found, err := state.LoadJSON(ctx, st, keyringKey, &rec)
	if err != nil {
		return err
	}
	if !found {
		// The store lost the keys (a Redis restarted without its data, a storage
		// folder emptied): with them went the records and revocations of every
		// session signed by them, so none of those sessions may be admitted again.
		// New keys replace them, here and on every instance that reads them; the
		// tokens signed before are refused (unknown kid) from now on.
		now := k.now
		if now == nil {
			now = time.Now
		}
		if rec, err = createKeyringRecord(ctx, st, now); err != nil {
			return fmt.Errorf("the signing keys vanished from the store, and new ones could not be made: %w", err)
		}
	}
	current := k.set()
	if len(rec.Keys) == len(current.signing) && rec.Keys[len(rec.Keys)-1].ID == current.signing[len(current.signing)-1].ID {
		return nil
	}
	set, err := keySetFromRecord(rec)
	if err != nil {
		return err
	}
	k.replace(set)
	return nil
}

// replace swaps in a new generation of keys, then tells the listeners which keys it
// dropped. Swapping first matters: a token verified with a dropped key after the
// listeners ran is caught by the verifier's own look at the new generation.
func (k *Keyring) replace(set *keySet) {
	old := k.keys.Swap(set)
	if old == nil {
		return
	}
	var dropped []string
	for id := range old.byID {
		if _, kept := set.byID[id]; !kept {
			dropped = append(dropped, id)
		}
	}
	if len(dropped) == 0 {
		return
	}
	k.mu.Lock()
	listeners := k.dropListeners
	k.mu.Unlock()
	for _, drop := range listeners {
		drop(dropped)
	}
}

// onDrop registers a function told the ids of the keys each new generation drops.
func (k *Keyring) onDrop(f func(kids []string)) {
	k.mu.Lock()
	k.dropListeners = append(k.dropListeners, f)
	k.mu.Unlock()
}

// knows reports whether the current generation holds the key.
func (k *Keyring) knows(kid string) bool {
	_, ok := k.set().byID[kid]
	return ok
}
