package session

import (
	"crypto/ed25519"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// fuzzKeyring is fixed, so that the committed seed corpus holds tokens it really signed.
func fuzzKeyring(t testing.TB) *Keyring {
	t.Helper()
	seed := make([]byte, ed25519.SeedSize)
	for i := range seed {
		seed[i] = byte(i + 1)
	}
	var rec keyringRecord
	rec.CSRFSecret = make([]byte, 32)
	rec.Keys = append(rec.Keys, struct {
		ID      string    `json:"kid"`
		Seed    []byte    `json:"seed"`
		Created time.Time `json:"created"`
	}{ID: keyID(ed25519.NewKeyFromSeed(seed).Public().(ed25519.PublicKey)), Seed: seed})
	k, err := keyringFromRecord(rec)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

var fuzzNow = time.Unix(1_900_000_000, 0)

func fuzzWant() Want {
	return Want{Subject: "alice", Audience: "https://console.example", Roles: []string{"admin"}}
}

// FuzzVerify feeds the cookie value parser and verifier anything at all. It must never
// panic, and it must never accept a token whose signature our key did not make over
// exactly the claims it returns.
func FuzzVerify(f *testing.F) {
	k := fuzzKeyring(f)
	valid, err := k.Sign(Claims{Grant: Grant{Issuer: "caddy-jit", Subject: "alice", Audience: "https://console.example", Role: "admin", SessionID: "AAAAAAAAAAAAAAAAAAAAAA", IssuedAt: fuzzNow.Unix() - 10, NotBefore: fuzzNow.Unix() - 10, Expiry: fuzzNow.Unix() + 3600}, Methods: []string{"otp"}})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(valid)
	parts := strings.Split(valid, ".")
	f.Add(parts[0] + "." + parts[1] + ".")
	f.Add("eyJhbGciOiJub25lIn0." + parts[1] + ".")
	f.Add(valid + ".x")
	f.Add(strings.Repeat("a", MaxTokenSize+1))

	pub := k.set().byID[k.active().ID]
	f.Fuzz(func(t *testing.T, token string) {
		v, err := NewVerifier(k, NewRevocations(), 16)
		if err != nil {
			t.Fatal(err)
		}
		claims, err := v.Verify(token, fuzzWant(), fuzzNow)
		if err != nil {
			if claims != nil {
				t.Fatalf("refused with %v but returned claims", err)
			}
			if v.cache.Len() != 0 {
				t.Fatalf("a refused token (%v) was cached", err)
			}
			return
		}
		// Accepted: an independent check must agree that our key signed these claims.
		jws, perr := jose.ParseSignedCompact(token, []jose.SignatureAlgorithm{jose.EdDSA})
		if perr != nil {
			t.Fatalf("accepted a token go-jose cannot parse: %v", perr)
		}
		payload, verr := jws.Verify(pub)
		if verr != nil {
			t.Fatalf("accepted a token whose signature does not verify: %v", verr)
		}
		var independent Claims
		if err := json.Unmarshal(payload, &independent); err != nil || independent.SessionID != claims.SessionID ||
			independent.Subject != "alice" || independent.Role != "admin" || independent.Expiry <= fuzzNow.Unix() {
			t.Fatalf("accepted claims %+v that the signed payload %q does not carry", claims, payload)
		}
	})
}

// FuzzCheckCSRF: no string but one CSRFToken made is accepted.
func FuzzCheckCSRF(f *testing.F) {
	k := fuzzKeyring(f)
	good := k.CSRFToken("alice", "https://console.example", fuzzNow)
	f.Add(good)
	f.Add(good[:len(good)-1] + "A")
	f.Add("")
	f.Fuzz(func(t *testing.T, token string) {
		if k.CheckCSRF(token, "alice", "https://console.example", fuzzNow) && token != good {
			t.Fatalf("accepted a CSRF token that was never issued: %q", token)
		}
	})
}
