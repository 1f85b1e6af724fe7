package audit

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/caddy-jit/caddy-jit/state"
	"github.com/go-jose/go-jose/v4"
)

// The audit key: one Ed25519 key a cluster shares, kept in storage beside the session
// keys but apart from them, that signs the chain's checkpoints. It is published in
// /.jit/jwks.json with use "audit", so that a witness or an auditor off the host can
// check a checkpoint without trusting the host.

// AuditKeyUse is the JWK "use" of the audit key.
const AuditKeyUse = "audit"

const (
	auditKeyKey  = state.Prefix + "audit-key.json"
	auditKeyLock = state.Prefix + "audit-key"
)

// AuditKey signs checkpoints.
type AuditKey struct {
	ID      string
	Private ed25519.PrivateKey
}

type auditKeyRecord struct {
	ID      string    `json:"kid"`
	Seed    []byte    `json:"seed"`
	Created time.Time `json:"created"`
}

// LoadAuditKey reads the audit key from storage, creating it on first use under the
// storage lock, so that instances starting together agree on one.
func LoadAuditKey(ctx context.Context, st state.Store, now time.Time) (*AuditKey, error) {
	var rec auditKeyRecord
	found, err := state.LoadJSON(ctx, st, auditKeyKey, &rec)
	if err != nil {
		return nil, fmt.Errorf("the audit key is unreadable (repair or remove %s in the storage; checkpoints signed by the old key then verify only with its published JWK): %w", auditKeyKey, err)
	}
	if !found {
		if rec, err = createAuditKey(ctx, st, now); err != nil {
			return nil, err
		}
	}
	return auditKeyFromRecord(rec)
}

func createAuditKey(ctx context.Context, st state.Store, now time.Time) (auditKeyRecord, error) {
	return state.CreateOnce(ctx, st, auditKeyKey, auditKeyLock, func() (auditKeyRecord, error) {
		seed := make([]byte, ed25519.SeedSize)
		if _, err := rand.Read(seed); err != nil {
			return auditKeyRecord{}, err
		}
		pub := ed25519.NewKeyFromSeed(seed).Public().(ed25519.PublicKey)
		return auditKeyRecord{ID: auditKeyID(pub), Seed: seed, Created: now.UTC()}, nil
	})
}

func auditKeyFromRecord(rec auditKeyRecord) (*AuditKey, error) {
	if len(rec.Seed) != ed25519.SeedSize {
		return nil, fmt.Errorf("the stored audit key's seed is %d bytes, want %d (repair or remove %s in the storage)", len(rec.Seed), ed25519.SeedSize, auditKeyKey)
	}
	priv := ed25519.NewKeyFromSeed(rec.Seed)
	id := auditKeyID(priv.Public().(ed25519.PublicKey))
	if rec.ID != id {
		return nil, fmt.Errorf("the stored audit key's id %q is not its key's (%q): repair or remove %s in the storage", rec.ID, id, auditKeyKey)
	}
	return &AuditKey{ID: id, Private: priv}, nil
}

// auditKeyID names a key by its public half, as the session keys are named.
func auditKeyID(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	return "audit-" + base64.RawURLEncoding.EncodeToString(sum[:12])
}

// JWK is the key's public half, for publication.
func (k *AuditKey) JWK() jose.JSONWebKey {
	return jose.JSONWebKey{Key: k.Private.Public(), KeyID: k.ID, Algorithm: string(jose.EdDSA), Use: AuditKeyUse}
}

// AuditKeys are the public audit keys a verifier trusts, by key id.
type AuditKeys map[string]ed25519.PublicKey

// LoadAuditKeys reads the public half of the audit key in storage (none when there is
// no key yet).
func LoadAuditKeys(ctx context.Context, st state.Store) (AuditKeys, error) {
	var rec auditKeyRecord
	found, err := state.LoadJSON(ctx, st, auditKeyKey, &rec)
	if err != nil || !found {
		return AuditKeys{}, err
	}
	k, err := auditKeyFromRecord(rec)
	if err != nil {
		return nil, err
	}
	return AuditKeys{k.ID: k.Private.Public().(ed25519.PublicKey)}, nil
}

// ReadAuditJWKS reads the audit keys of a JWKS file (as /.jit/jwks.json serves it): its
// Ed25519 keys with use "audit". A file with none is an error, as it cannot check a
// checkpoint.
func ReadAuditJWKS(path string) (AuditKeys, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(data, &set); err != nil {
		return nil, fmt.Errorf("%s: not a JWKS (want {\"keys\": [...]} as /.jit/jwks.json serves): %w", path, err)
	}
	keys := AuditKeys{}
	for _, k := range set.Keys {
		pub, ok := k.Key.(ed25519.PublicKey)
		if k.Use != AuditKeyUse || !ok {
			continue
		}
		keys[k.KeyID] = pub
	}
	if len(keys) == 0 {
		return nil, errors.New(path + ": holds no Ed25519 key with use \"audit\"")
	}
	return keys, nil
}
