package session

import (
	"context"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/caddy-jit/caddy-jit/policy"
)

const (
	audience = "https://console.example"
	testSID  = "c2Vzc2lvbi1pZC0xMjM0NQ" // 22 base64url characters
)

// vnow is the time at which the verifier tests verify.
var vnow = epoch.Add(time.Hour)

func validClaims(now time.Time) Claims {
	return Claims{Grant: Grant{Issuer: "caddy-jit test", Subject: "alice", Audience: audience, Role: "console-admin", SessionID: testSID, IssuedAt: now.Unix() - 60, NotBefore: now.Unix() - 60, Expiry: now.Unix() + 900}, Methods: []string{"otp"}}
}

// testRules are the roles as configured for the verifier tests.
var testRules = map[string]*policy.Role{
	"console-admin": {Name: "console-admin", MaxDuration: time.Hour},
}

func wantAlice() Want {
	return Want{Subject: "alice", Audience: audience, Roles: []string{"console-admin"}, Rules: testRules}
}

type verifierFixture struct {
	k        *Keyring
	priv     ed25519.PrivateKey
	pub      ed25519.PublicKey
	kid      string
	attacker ed25519.PrivateKey
}

func newVerifierFixture(t *testing.T) *verifierFixture {
	t.Helper()
	k, err := LoadKeyring(context.Background(), newStorage(t), newFakeClock(epoch).Now)
	if err != nil {
		t.Fatal(err)
	}
	_, attacker, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	active := k.active()
	return &verifierFixture{k: k, priv: active.Private, pub: k.set().byID[active.ID], kid: active.ID, attacker: attacker}
}

func (f *verifierFixture) newVerifier(t *testing.T, size int) *Verifier {
	t.Helper()
	v, err := NewVerifier(f.k, NewRevocations(), size)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func (f *verifierFixture) sign(t *testing.T, c Claims) string {
	t.Helper()
	token, err := f.k.Sign(c)
	if err != nil {
		t.Fatal(err)
	}
	return token
}

func (f *verifierFixture) header() map[string]any {
	return map[string]any{"alg": "EdDSA", "kid": f.kid, "typ": TokenType}
}

// signOurs signs a payload by hand with our own key, under the given header.
func (f *verifierFixture) signOurs(t *testing.T, header map[string]any, payload any) string {
	t.Helper()
	raw, ok := payload.([]byte)
	if !ok {
		var err error
		if raw, err = json.Marshal(payload); err != nil {
			t.Fatal(err)
		}
	}
	return signEdDSA(t, f.priv, header, raw)
}

func with(h map[string]any, kv ...any) map[string]any {
	out := map[string]any{}
	for k, v := range h {
		out[k] = v
	}
	for i := 0; i < len(kv); i += 2 {
		if kv[i+1] == nil {
			delete(out, kv[i].(string))
		} else {
			out[kv[i].(string)] = kv[i+1]
		}
	}
	return out
}

func claimsMap(t *testing.T, c Claims, kv ...any) map[string]any {
	t.Helper()
	raw, _ := json.Marshal(c)
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	return with(m, kv...)
}

func parts(token string) (header, payload, sig string) {
	p := strings.Split(token, ".")
	return p[0], p[1], p[2]
}

func goJoseSign(t *testing.T, key jose.SigningKey, opts *jose.SignerOptions, payload []byte) *jose.JSONWebSignature {
	t.Helper()
	signer, err := jose.NewSigner(key, opts)
	if err != nil {
		t.Fatal(err)
	}
	obj, err := signer.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	return obj
}

func compact(t *testing.T, obj *jose.JSONWebSignature) string {
	t.Helper()
	s, err := obj.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestVerifierRefusesForgeries: every forged, altered or inapplicable token is refused
// for the right reason, and none of them enters the verified-token cache.
func TestVerifierRefusesForgeries(t *testing.T) {
	f := newVerifierFixture(t)
	claims := validClaims(vnow)
	valid := f.sign(t, claims)
	vh, vp, vs := parts(valid)
	claimsJSON, _ := json.Marshal(claims)
	attackerPub := f.attacker.Public().(ed25519.PublicKey)
	attackerJWK := map[string]any{"kty": "OKP", "crv": "Ed25519", "x": b64(attackerPub)}

	hs256 := func(header map[string]any, key []byte) string {
		input := b64JSON(t, header) + "." + b64(claimsJSON)
		mac := hmac.New(sha256.New, key)
		mac.Write([]byte(input))
		return input + "." + b64(mac.Sum(nil))
	}
	edited := func(change ...any) string {
		return vh + "." + b64JSON(t, claimsMap(t, claims, change...)) + "." + vs
	}
	// A validly signed token larger than MaxTokenSize: only the size check refuses it.
	big := claims
	big.Methods = []string{strings.Repeat("x", MaxTokenSize)}
	oversize := f.sign(t, big)
	if obj, err := jose.ParseSignedCompact(oversize, []jose.SignatureAlgorithm{jose.EdDSA}); err != nil {
		t.Fatal(err)
	} else if _, err := obj.Verify(f.pub); err != nil {
		t.Fatalf("the oversize token should carry a valid signature: %v", err)
	}

	tests := []struct {
		name  string
		token string
		want  error
		want2 Want // zero means wantAlice()
		at    time.Time
	}{
		// Algorithms.
		{name: "alg none, empty signature", token: b64JSON(t, with(f.header(), "alg", "none")) + "." + vp + ".", want: ErrTokenMalformed},
		{name: "alg none, with the original signature", token: b64JSON(t, with(f.header(), "alg", "none")) + "." + vp + "." + vs, want: ErrTokenMalformed},
		{name: "alg None", token: b64JSON(t, with(f.header(), "alg", "None")) + "." + vp + "." + vs, want: ErrTokenMalformed},
		{name: "alg missing", token: f.signOurs(t, with(f.header(), "alg", nil), claims), want: ErrTokenMalformed},
		{name: "HS256 keyed with our public key, by hand", token: hs256(with(f.header(), "alg", "HS256"), f.pub), want: ErrTokenMalformed},
		{name: "HS256 keyed with our public key's JWK x, by hand", token: hs256(with(f.header(), "alg", "HS256"), []byte(b64(f.pub))), want: ErrTokenMalformed},
		{
			name: "HS256 keyed with our public key, go-jose",
			token: compact(t, goJoseSign(t, jose.SigningKey{Algorithm: jose.HS256, Key: []byte(f.pub)},
				(&jose.SignerOptions{}).WithType(TokenType).WithHeader(jose.HeaderKey("kid"), f.kid), claimsJSON)),
			want: ErrTokenMalformed,
		},
		{
			name: "ES256 by an attacker",
			token: func() string {
				return b64JSON(t, with(f.header(), "alg", "ES256")) + "." + vp + "." + b64(make([]byte, 64))
			}(),
			want: ErrTokenMalformed,
		},

		// Keys.
		{name: "embedded jwk with the attacker's key and our kid", token: signEdDSA(t, f.attacker, with(f.header(), "jwk", attackerJWK), claimsJSON), want: ErrTokenMalformed},
		{name: "embedded jwk with the attacker's key, no kid", token: signEdDSA(t, f.attacker, with(f.header(), "jwk", attackerJWK, "kid", nil), claimsJSON), want: ErrTokenMalformed},
		{
			name: "embedded jwk, go-jose EmbedJWK",
			token: compact(t, goJoseSign(t, jose.SigningKey{Algorithm: jose.EdDSA, Key: f.attacker},
				(&jose.SignerOptions{EmbedJWK: true}).WithType(TokenType), claimsJSON)),
			want: ErrTokenMalformed,
		},
		{name: "unknown kid, signed with our key", token: f.signOurs(t, with(f.header(), "kid", "unknown"), claims), want: ErrTokenSignature},
		{name: "kid naming the attacker's key", token: signEdDSA(t, f.attacker, with(f.header(), "kid", keyID(attackerPub)), claimsJSON), want: ErrTokenSignature},
		{name: "kid with a path", token: f.signOurs(t, with(f.header(), "kid", "../keys/signing.json"), claims), want: ErrTokenSignature},
		{name: "kid not a string", token: f.signOurs(t, with(f.header(), "kid", 1), claims), want: ErrTokenMalformed},
		{name: "missing kid, signed with our key", token: f.signOurs(t, with(f.header(), "kid", nil), claims), want: ErrTokenSignature},
		{name: "jku header pointing elsewhere, attacker's key", token: signEdDSA(t, f.attacker, with(f.header(), "jku", "https://evil.example/jwks.json"), claimsJSON), want: ErrTokenSignature},
		{name: "x5c header, attacker's key", token: signEdDSA(t, f.attacker, with(f.header(), "x5c", []string{b64(attackerPub)}), claimsJSON), want: ErrTokenMalformed},

		// Header type and critical extensions, signed with our own key.
		{name: "typ JWT", token: f.signOurs(t, with(f.header(), "typ", "JWT"), claims), want: ErrTokenMalformed},
		{name: "typ missing", token: f.signOurs(t, with(f.header(), "typ", nil), claims), want: ErrTokenMalformed},
		{name: "typ in capitals", token: f.signOurs(t, with(f.header(), "typ", strings.ToUpper(TokenType)), claims), want: ErrTokenMalformed},
		{name: "typ not a string", token: f.signOurs(t, with(f.header(), "typ", []string{TokenType}), claims), want: ErrTokenMalformed},
		{name: "unknown crit header", token: f.signOurs(t, with(f.header(), "crit", []string{"exp"}, "exp", vnow.Unix()+99999), claims), want: ErrTokenSignature},
		{name: "crit not an array", token: f.signOurs(t, with(f.header(), "crit", "exp"), claims), want: ErrTokenSignature},

		// Serialization and shape.
		{
			name: "JSON serialization of a valid signature",
			token: goJoseSign(t, jose.SigningKey{Algorithm: jose.EdDSA, Key: jose.JSONWebKey{Key: f.priv, KeyID: f.kid}},
				(&jose.SignerOptions{}).WithType(TokenType), claimsJSON).FullSerialize(),
			want: ErrTokenMalformed,
		},
		{name: "four parts", token: valid + "." + vs, want: ErrTokenMalformed},
		{name: "many dots", token: strings.Repeat("a.", 40) + "a", want: ErrTokenMalformed},
		{name: "two dots in a row", token: vh + ".." + vs, want: ErrTokenMalformed},
		{name: "leading dot", token: "." + valid, want: ErrTokenMalformed},
		{name: "trailing dot", token: valid + ".", want: ErrTokenMalformed},
		{name: "two parts", token: vh + "." + vp, want: ErrTokenMalformed},
		{name: "oversize, validly signed", token: oversize, want: ErrTokenMalformed},
		{name: "oversize junk", token: strings.Repeat("A", MaxTokenSize) + ".A.A", want: ErrTokenMalformed},
		{name: "empty", token: "", want: ErrTokenMalformed},
		{name: "short", token: "a.b.c", want: ErrTokenMalformed},
		{name: "base64 padding", token: valid + "==", want: ErrTokenMalformed},
		{name: "standard base64 alphabet", token: vh + "." + vp + "." + strings.NewReplacer("-", "+", "_", "/").Replace(vs) + "+/", want: ErrTokenMalformed},
		{name: "surrounding space", token: " " + valid + " ", want: ErrTokenMalformed},
		{name: "quoted", token: `"` + valid + `"`, want: ErrTokenMalformed},
		{name: "header not JSON", token: b64([]byte("not json")) + "." + vp + "." + vs, want: ErrTokenMalformed},

		// Truncation.
		{name: "truncated by one character (signature not base64)", token: valid[:len(valid)-1], want: ErrTokenMalformed},
		{name: "truncated by two characters (63-byte signature)", token: valid[:len(valid)-2], want: ErrTokenSignature},
		{name: "signature truncated to half", token: vh + "." + vp + "." + vs[:len(vs)/2], want: ErrTokenSignature},
		{name: "payload truncated", token: vh + "." + vp[:len(vp)-4] + "." + vs, want: ErrTokenSignature},

		// Altered payloads keep the original signature.
		{name: "payload edited: another user", token: edited("sub", "mallory"), want: ErrTokenSignature, want2: Want{Subject: "mallory", Audience: audience, Roles: []string{"console-admin"}}},
		{name: "payload edited: another role", token: edited("role", "root"), want: ErrTokenSignature, want2: Want{Subject: "alice", Audience: audience, Roles: []string{"root"}}},
		{name: "payload edited: later expiry", token: edited("exp", vnow.Unix()+86400), want: ErrTokenSignature},
		{name: "payload edited: whitespace only", token: vh + "." + b64(append(claimsJSON, ' ')) + "." + vs, want: ErrTokenSignature},
		{name: "header re-encoded with the same members", token: b64([]byte(fmt.Sprintf(`{"typ":%q, "alg":"EdDSA", "kid":%q}`, TokenType, f.kid))) + "." + vp + "." + vs, want: ErrTokenSignature},
		{name: "signature of another valid token", token: vh + "." + vp + "." + func() string { _, _, s := parts(f.sign(t, validClaims(vnow.Add(time.Second)))); return s }(), want: ErrTokenSignature},

		// Signed by another key under our kid.
		{name: "another Ed25519 key with our kid", token: signEdDSA(t, f.attacker, f.header(), claimsJSON), want: ErrTokenSignature},
		{
			name: "another Ed25519 key with our kid, go-jose",
			token: compact(t, goJoseSign(t, jose.SigningKey{Algorithm: jose.EdDSA, Key: jose.JSONWebKey{Key: f.attacker, KeyID: f.kid}},
				(&jose.SignerOptions{}).WithType(TokenType), claimsJSON)),
			want: ErrTokenSignature,
		},

		// Claims, validly signed with our key.
		{name: "missing exp", token: f.signOurs(t, f.header(), claimsMap(t, claims, "exp", nil)), want: ErrTokenClaims},
		{name: "exp zero", token: f.signOurs(t, f.header(), claimsMap(t, claims, "exp", 0)), want: ErrTokenClaims},
		{name: "exp a string", token: f.signOurs(t, f.header(), claimsMap(t, claims, "exp", fmt.Sprint(claims.Expiry))), want: ErrTokenClaims},
		{name: "missing nbf", token: f.signOurs(t, f.header(), claimsMap(t, claims, "nbf", nil)), want: ErrTokenClaims},
		{name: "missing sid", token: f.signOurs(t, f.header(), claimsMap(t, claims, "sid", nil)), want: ErrTokenClaims},
		// Only an id of our shape can be revoked by id, so no other id admits.
		{name: "sid too short to be ours", token: f.sign(t, with2(claims, func(c *Claims) { c.SessionID = "forged-001" })), want: ErrTokenClaims},
		{name: "sid with a character outside base64url", token: f.sign(t, with2(claims, func(c *Claims) { c.SessionID = testSID[:21] + "." })), want: ErrTokenClaims},
		{name: "missing sub", token: f.signOurs(t, f.header(), claimsMap(t, claims, "sub", nil)), want: ErrTokenClaims, want2: Want{Audience: audience, Roles: []string{"console-admin"}}},
		{name: "missing aud", token: f.signOurs(t, f.header(), claimsMap(t, claims, "aud", nil)), want: ErrTokenClaims, want2: Want{Subject: "alice", Roles: []string{"console-admin"}}},
		{name: "missing role", token: f.signOurs(t, f.header(), claimsMap(t, claims, "role", nil)), want: ErrTokenClaims, want2: Want{Subject: "alice", Audience: audience, Roles: []string{""}}},
		{name: "aud an array", token: f.signOurs(t, f.header(), claimsMap(t, claims, "aud", []string{audience})), want: ErrTokenClaims},
		{name: "payload not JSON", token: f.signOurs(t, f.header(), []byte("not json")), want: ErrTokenClaims},
		{name: "payload a JSON array", token: f.signOurs(t, f.header(), []byte("[]")), want: ErrTokenClaims},
		{name: "expired a second ago", token: f.sign(t, with2(claims, func(c *Claims) { c.Expiry = vnow.Unix() - 1 })), want: ErrTokenExpired},
		{name: "expires right now", token: f.sign(t, with2(claims, func(c *Claims) { c.Expiry = vnow.Unix() })), want: ErrTokenExpired},
		{name: "nbf 6 s ahead, beyond the 5 s leeway", token: f.sign(t, with2(claims, func(c *Claims) { c.NotBefore = vnow.Unix() + 6 })), want: ErrTokenNotYet},
		{name: "nbf an hour ahead", token: f.sign(t, with2(claims, func(c *Claims) { c.NotBefore = vnow.Unix() + 3600 })), want: ErrTokenNotYet},
		{name: "another site", token: f.sign(t, with2(claims, func(c *Claims) { c.Audience = "https://other.example" })), want: ErrTokenAudience},
		{name: "same site with its default port", token: f.sign(t, with2(claims, func(c *Claims) { c.Audience = audience + ":443" })), want: ErrTokenAudience},
		{name: "same site over http", token: valid, want: ErrTokenAudience, want2: Want{Subject: "alice", Audience: "http://console.example", Roles: []string{"console-admin"}}},
		{name: "another role", token: valid, want: ErrTokenRole, want2: Want{Subject: "alice", Audience: audience, Roles: []string{"db-admin", "root"}}},
		{name: "no role admits", token: valid, want: ErrTokenRole, want2: Want{Subject: "alice", Audience: audience}},
		{name: "another user's token", token: valid, want: ErrTokenSubject, want2: Want{Subject: "bob", Audience: audience, Roles: []string{"console-admin"}}},
		{name: "user name differs in case", token: valid, want: ErrTokenSubject, want2: Want{Subject: "Alice", Audience: audience, Roles: []string{"console-admin"}}},
		{name: "valid token, verified after its expiry", token: valid, want: ErrTokenExpired, at: time.Unix(claims.Expiry, 0)},
	}
	// asked is what a case asks of its token, alice's session now unless it says.
	asked := func(want Want, at time.Time) (Want, time.Time) {
		if want.Subject == "" && want.Audience == "" && want.Roles == nil {
			want = wantAlice()
		}
		if at.IsZero() {
			at = vnow
		}
		return want, at
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := f.newVerifier(t, 0)
			want, at := asked(tt.want2, tt.at)
			c, err := v.Verify(tt.token, want, at)
			if !errors.Is(err, tt.want) || c != nil {
				t.Fatalf("Verify = %+v, %v; want nil, %v", c, err, tt.want)
			}
			if n := v.cache.Len(); n != 0 {
				t.Fatalf("a refused token entered the cache (Len = %d)", n)
			}
			// Refused again, for the same reason.
			if _, err := v.Verify(tt.token, want, at); !errors.Is(err, tt.want) {
				t.Fatalf("second Verify = %v, want %v", err, tt.want)
			}
		})
	}

	// The control: the untouched token verifies under the same fixture.
	v := f.newVerifier(t, 0)
	if _, err := v.Verify(valid, wantAlice(), vnow); err != nil {
		t.Fatalf("the valid token: %v", err)
	}

	// With the valid token cached, every other token is refused just the same: a hit is
	// the very bytes verified, never a token that shares its signature or its header
	// (the edited payloads above keep both).
	for _, tt := range tests {
		if tt.token == valid {
			continue
		}
		want, at := asked(tt.want2, tt.at)
		if c, err := v.Verify(tt.token, want, at); !errors.Is(err, tt.want) || c != nil {
			t.Errorf("%s, the valid token cached: Verify = %+v, %v; want nil, %v", tt.name, c, err, tt.want)
		}
	}
	if n := v.cache.Len(); n != 1 {
		t.Fatalf("after the refusals the cache holds %d tokens, want the valid one", n)
	}
}
