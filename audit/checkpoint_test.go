package audit

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/go-jose/go-jose/v4"
)

func TestCheckpointSignatureTable(t *testing.T) {
	key, other := testAuditKey(t), testAuditKey(t)
	trusted := AuditKeys{key.ID: key.Private.Public().(ed25519.PublicKey)}
	cp := Checkpoint{Instance: "i", Seq: 1000, Head: strings.Repeat("ab", 32), FromSeq: 1, Count: 1000, Time: "2026-12-04T10:00:00Z"}
	good, err := key.SignCheckpoint(cp)
	if err != nil {
		t.Fatal(err)
	}
	byOther, _ := other.SignCheckpoint(cp)
	// signed is cp signed by key as SignCheckpoint does but with opts, in the form
	// serialize gives.
	signed := func(opts *jose.SignerOptions, serialize func(*jose.JSONWebSignature) (string, error)) string {
		signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.EdDSA, Key: key.Private}, opts.WithHeader(jose.HeaderKey("kid"), key.ID))
		if err != nil {
			t.Fatal(err)
		}
		payload, _ := json.Marshal(cp)
		jws, err := signer.Sign(payload)
		if err != nil {
			t.Fatal(err)
		}
		out, err := serialize(jws)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	compact := func(jws *jose.JSONWebSignature) (string, error) { return jws.CompactSerialize() }
	full := func(jws *jose.JSONWebSignature) (string, error) { return jws.FullSerialize(), nil }
	edited := func(f func(*Checkpoint)) Checkpoint { c := cp; f(&c); return c }
	for _, tc := range []struct {
		name      string
		cp        Checkpoint
		signature string
		wantErr   string
	}{
		{"as signed", cp, good, ""},
		{"signed by another key", cp, byOther, "not a trusted key"},
		{"seq edited", edited(func(c *Checkpoint) { c.Seq++ }), good, "not what audit key"},
		{"head edited", edited(func(c *Checkpoint) { c.Head = strings.Repeat("cd", 32) }), good, "not what audit key"},
		{"count edited", edited(func(c *Checkpoint) { c.Count-- }), good, "not what audit key"},
		{"instance edited", edited(func(c *Checkpoint) { c.Instance = "j" }), good, "not what audit key"},
		{"signature garbled", cp, good[:len(good)-4] + "AAAA", "does not verify"},
		{"not a JWS", cp, "hello", "not a compact EdDSA JWS"},
		{"the JSON form, which may carry unprotected headers", cp, signed((&jose.SignerOptions{}).WithType(CheckpointType), full), "not a compact EdDSA JWS"},
		{"typed as something else", cp, signed((&jose.SignerOptions{}).WithType("JWT"), compact), `typ is "JWT", not "` + CheckpointType + `"`},
		{"untyped", cp, signed(&jose.SignerOptions{}, compact), `typ is "", not "` + CheckpointType + `"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := VerifyCheckpoint(trusted, tc.cp, tc.signature)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("want valid, got %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("want an error with %q, got %v", tc.wantErr, err)
			}
		})
	}
}

func TestAuditKeyIsSharedAndPublished(t *testing.T) {
	ctx := context.Background()
	st := &certmagic.FileStorage{Path: t.TempDir()}
	k1, err := LoadAuditKey(ctx, st, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	k2, err := LoadAuditKey(ctx, st, time.Now())
	if err != nil || k2.ID != k1.ID || !k2.Private.Equal(k1.Private) {
		t.Fatalf("a second load made another key: %v", err)
	}
	stored, err := LoadAuditKeys(ctx, st)
	if err != nil || len(stored) != 1 || stored[k1.ID] == nil {
		t.Fatalf("LoadAuditKeys: %v %v", stored, err)
	}
	set, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{k1.JWK()}})
	if strings.Contains(string(set), `"d"`) || !strings.Contains(string(set), `"use":"audit"`) {
		t.Fatalf("the published key is not a public audit key: %s", set)
	}
	path := filepath.Join(t.TempDir(), "jwks.json")
	if err := os.WriteFile(path, set, 0o600); err != nil {
		t.Fatal(err)
	}
	read, err := ReadAuditJWKS(path)
	if err != nil || !read[k1.ID].Equal(stored[k1.ID]) {
		t.Fatalf("ReadAuditJWKS: %v %v", read, err)
	}
	if err := os.WriteFile(path, []byte(`{"keys":[]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadAuditJWKS(path); err == nil || !strings.Contains(err.Error(), `use "audit"`) {
		t.Fatalf("a JWKS without an audit key: %v", err)
	}
	if err := st.Store(ctx, auditKeyKey, []byte(`{"kid":"x","seed":"AAAA"}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadAuditKey(ctx, st, time.Now()); err == nil || !strings.Contains(err.Error(), auditKeyKey) {
		t.Fatalf("a broken stored key: %v, want an error naming %s", err, auditKeyKey)
	}
}
