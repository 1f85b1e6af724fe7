package testkit

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"

	"github.com/fxamacker/cbor/v2"
)

// What an attacker does with, or instead of, a SoftKey, for the security suite: answer
// at a look-alike origin or for another RP ID, answer without verifying the user (a
// stolen key without its PIN), copy the key (a clone, whose counter lags), or sign with
// another key under the credential id that a ceremony's options name. Each answer is
// still well formed and really signed, so that only the check under test can refuse
// it.

// GetAt answers navigator.credentials.get(options) as a browser at origin would
// report it, e.g. a look-alike page that relays the real site's options.
func (k *SoftKey) GetAt(options []byte, origin string) []byte {
	k.t.Helper()
	saved := k.Origin
	k.Origin = origin
	defer func() { k.Origin = saved }()
	return k.Get(options)
}

// CreateAt is Create as a browser at origin would report it.
func (k *SoftKey) CreateAt(options []byte, origin string) []byte {
	k.t.Helper()
	saved := k.Origin
	k.Origin = origin
	defer func() { k.Origin = saved }()
	return k.Create(options)
}

// GetForRPID answers the options as if they named the RP ID rpID: the authenticator
// data then carries the hash of rpID, as it does for a page that asked for its own.
func (k *SoftKey) GetForRPID(options []byte, rpID string) []byte {
	k.t.Helper()
	return k.Get(k.withOption(options, rpID, "rpId"))
}

// CreateForRPID is Create for the RP ID rpID instead of the options' rp.id.
func (k *SoftKey) CreateForRPID(options []byte, rpID string) []byte {
	k.t.Helper()
	return k.Create(k.withOption(options, rpID, "rp", "id"))
}

// GetWithoutUV answers without the user verified flag (UV), as a security key used
// without its PIN does; the signature covers the changed flags.
func (k *SoftKey) GetWithoutUV(options []byte) []byte {
	k.t.Helper()
	var resp map[string]any
	if err := json.Unmarshal(k.Get(options), &resp); err != nil {
		k.t.Fatal(err)
	}
	r := resp["response"].(map[string]any)
	auth := k.decode(r["authenticatorData"])
	cdj := k.decode(r["clientDataJSON"])
	auth[32] &^= FlagUV
	cdHash := sha256.Sum256(cdj)
	digest := sha256.Sum256(append(append([]byte{}, auth...), cdHash[:]...))
	sig, err := ecdsa.SignASN1(rand.Reader, k.priv, digest[:])
	if err != nil {
		k.t.Fatal(err)
	}
	r["authenticatorData"] = b64.EncodeToString(auth)
	r["signature"] = b64.EncodeToString(sig)
	return k.json(resp)
}

// CreateWithoutUV registers without the user verified flag; a "none" attestation
// has no signature to redo.
func (k *SoftKey) CreateWithoutUV(options []byte) []byte {
	k.t.Helper()
	var resp map[string]any
	if err := json.Unmarshal(k.Create(options), &resp); err != nil {
		k.t.Fatal(err)
	}
	r := resp["response"].(map[string]any)
	var att struct {
		Fmt      string         `cbor:"fmt"`
		AttStmt  map[string]any `cbor:"attStmt"`
		AuthData []byte         `cbor:"authData"`
	}
	if err := cbor.Unmarshal(k.decode(r["attestationObject"]), &att); err != nil {
		k.t.Fatalf("the attestation object: %v", err)
	}
	att.AuthData[32] &^= FlagUV
	r["attestationObject"] = b64.EncodeToString(k.cbor(map[string]any{"fmt": att.Fmt, "attStmt": att.AttStmt, "authData": att.AuthData}))
	return k.json(resp)
}

// Clone is a copy of the authenticator made now: the same private key, credential id,
// user handle and counter, which from now on each count on their own. Once both
// have signed, one of them reports a count the server has seen already.
func (k *SoftKey) Clone() *SoftKey {
	c := *k
	c.handle = append([]byte(nil), k.handle...)
	c.id = append([]byte(nil), k.id...)
	return &c
}

// NextCount makes the next assertion report the signature counter n (the ones after
// it n+1, …): a counter set back, or reset to zero.
func (k *SoftKey) NextCount(n uint32) { k.count, k.frozen = n-1, false }

// FreezeCount makes every assertion from now on report the signature counter n, as an
// authenticator without a counter (0) or a broken one does.
func (k *SoftKey) FreezeCount(n uint32) { k.count, k.frozen = n, true }

// Count is the signature counter the last assertion reported (0 before any; one
// less than n after NextCount(n)).
func (k *SoftKey) Count() uint32 { return k.count }

// Impostor is another authenticator that claims this one's credential id and user
// handle, which an attacker reads from a ceremony's options and a registration, but
// signs with a key of its own: everything an attacker can learn except the private key.
func (k *SoftKey) Impostor() *SoftKey {
	k.t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		k.t.Fatal(err)
	}
	c := k.Clone()
	c.priv = priv
	return c
}

// withOption sets the string at the path under the options' publicKey.
func (k *SoftKey) withOption(options []byte, value string, path ...string) []byte {
	k.t.Helper()
	var o map[string]any
	if err := json.Unmarshal(options, &o); err != nil {
		k.t.Fatalf("options: %v: %s", err, options)
	}
	m, ok := o["publicKey"].(map[string]any)
	if !ok {
		k.t.Fatalf("options without publicKey: %s", options)
	}
	for _, p := range path[:len(path)-1] {
		if m, ok = m[p].(map[string]any); !ok {
			k.t.Fatalf("options without publicKey.%s: %s", p, options)
		}
	}
	m[path[len(path)-1]] = value
	return k.json(o)
}

func (k *SoftKey) decode(v any) []byte {
	k.t.Helper()
	s, _ := v.(string)
	out, err := b64.DecodeString(s)
	if err != nil {
		k.t.Fatalf("a base64url field of the answer: %v", err)
	}
	return out
}
