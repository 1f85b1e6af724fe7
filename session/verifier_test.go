package session

import (
	"context"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
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
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := f.newVerifier(t, 0)
			want := tt.want2
			if want.Subject == "" && want.Audience == "" && want.Roles == nil {
				want = wantAlice()
			}
			at := tt.at
			if at.IsZero() {
				at = vnow
			}
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
}

func with2(c Claims, change func(*Claims)) Claims {
	change(&c)
	return c
}

func TestVerifierAcceptsAndCachesAValidToken(t *testing.T) {
	f := newVerifierFixture(t)
	claims := validClaims(vnow)
	token := f.sign(t, claims)
	v := f.newVerifier(t, 0)

	got, err := v.Verify(token, wantAlice(), vnow)
	if err != nil {
		t.Fatal(err)
	}
	if got.Subject != "alice" || got.Role != "console-admin" || got.SessionID != testSID || got.Audience != audience ||
		got.Expiry != claims.Expiry || got.NotBefore != claims.NotBefore || got.IssuedAt != claims.IssuedAt ||
		got.Issuer != claims.Issuer || len(got.Methods) != 1 || got.Methods[0] != "otp" {
		t.Fatalf("claims = %+v, want %+v", got, claims)
	}
	if !got.Expires().Equal(time.Unix(claims.Expiry, 0)) {
		t.Fatalf("Expires() = %v", got.Expires())
	}
	if n := v.cache.Len(); n != 1 {
		t.Fatalf("cache Len = %d, want 1", n)
	}
	again, err := v.Verify(token, wantAlice(), vnow)
	if err != nil || again != got || v.cache.Len() != 1 {
		t.Fatalf("second Verify = %p, %v (Len %d); want the cached %p", again, err, v.cache.Len(), got)
	}

	// Any of the roles admits.
	if _, err := v.Verify(token, Want{Subject: "alice", Audience: audience, Roles: []string{"db-admin", "console-admin"}}, vnow); err != nil {
		t.Fatalf("with two roles: %v", err)
	}

	// Cached or not, every claim is checked on every call.
	for _, tt := range []struct {
		name string
		want Want
		at   time.Time
		err  error
	}{
		{"another user", Want{Subject: "bob", Audience: audience, Roles: []string{"console-admin"}}, vnow, ErrTokenSubject},
		{"another site", Want{Subject: "alice", Audience: "https://other.example", Roles: []string{"console-admin"}}, vnow, ErrTokenAudience},
		{"another role", Want{Subject: "alice", Audience: audience, Roles: []string{"root"}}, vnow, ErrTokenRole},
		{"before nbf minus the leeway", wantAlice(), time.Unix(claims.NotBefore-6, 0), ErrTokenNotYet},
	} {
		if _, err := v.Verify(token, tt.want, tt.at); !errors.Is(err, tt.err) {
			t.Errorf("cached, %s: Verify = %v, want %v", tt.name, err, tt.err)
		}
	}
	if n := v.cache.Len(); n != 1 {
		t.Fatalf("cache Len = %d after refusals of a cached token, want 1", n)
	}

	// Forget drops it.
	v.Forget(token)
	if n := v.cache.Len(); n != 0 {
		t.Fatalf("cache Len after Forget = %d", n)
	}
}

func TestVerifierLeewayForNotBefore(t *testing.T) {
	f := newVerifierFixture(t)
	// Issued by an instance whose clock runs 5 s ahead: iat and nbf both ahead.
	token := f.sign(t, with2(validClaims(vnow), func(c *Claims) { c.NotBefore, c.IssuedAt = vnow.Unix()+5, vnow.Unix()+5 }))
	v := f.newVerifier(t, 0)
	if _, err := v.Verify(token, wantAlice(), vnow); err != nil {
		t.Fatalf("nbf 5 s ahead, within the leeway: %v", err)
	}
	// A scheduled session (nbf after iat) starts to the second: no leeway.
	scheduled := f.sign(t, with2(validClaims(vnow), func(c *Claims) { c.IssuedAt, c.NotBefore = vnow.Unix()-60, vnow.Unix()+1 }))
	if _, err := v.Verify(scheduled, wantAlice(), vnow); !errors.Is(err, ErrTokenNotYet) {
		t.Fatalf("scheduled 1 s ahead: %v, want %v", err, ErrTokenNotYet)
	}
	if _, err := v.Verify(scheduled, wantAlice(), vnow.Add(time.Second)); err != nil {
		t.Fatalf("scheduled, at its start: %v", err)
	}
	// But never any leeway for the end.
	if _, err := v.Verify(token, wantAlice(), time.Unix(validClaims(vnow).Expiry, 0)); !errors.Is(err, ErrTokenExpired) {
		t.Fatalf("at exp: %v, want %v", err, ErrTokenExpired)
	}
}

func TestVerifierRefusesACachedTokenAfterExpiry(t *testing.T) {
	f := newVerifierFixture(t)
	claims := validClaims(vnow)
	token := f.sign(t, claims)
	v := f.newVerifier(t, 0)
	if _, err := v.Verify(token, wantAlice(), vnow); err != nil || v.cache.Len() != 1 {
		t.Fatalf("Verify = %v, Len %d", err, v.cache.Len())
	}
	if _, err := v.Verify(token, wantAlice(), time.Unix(claims.Expiry-1, 0)); err != nil {
		t.Fatalf("a second before expiry: %v", err)
	}
	if _, err := v.Verify(token, wantAlice(), time.Unix(claims.Expiry, 0)); !errors.Is(err, ErrTokenExpired) {
		t.Fatalf("at expiry: %v, want %v", err, ErrTokenExpired)
	}
	if n := v.cache.Len(); n != 0 {
		t.Fatalf("an expired token stayed in the cache (Len %d)", n)
	}
	if _, err := v.Verify(token, wantAlice(), time.Unix(claims.Expiry+1, 0)); !errors.Is(err, ErrTokenExpired) {
		t.Fatalf("after expiry, uncached: %v, want %v", err, ErrTokenExpired)
	}
}

func TestVerifierRefusesACachedTokenAfterRevocation(t *testing.T) {
	f := newVerifierFixture(t)
	claims := validClaims(vnow)
	token := f.sign(t, claims)
	revocations := NewRevocations()
	v, err := NewVerifier(f.k, revocations, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(token, wantAlice(), vnow); err != nil || v.cache.Len() != 1 {
		t.Fatalf("Verify = %v, Len %d", err, v.cache.Len())
	}
	revocations.Add(testSID, claims.Expires())
	for range 2 {
		if c, err := v.Verify(token, wantAlice(), vnow); !errors.Is(err, ErrTokenRevoked) || c != nil {
			t.Fatalf("after revocation: %+v, %v; want nil, %v", c, err, ErrTokenRevoked)
		}
	}
	// Another session of the same user is unaffected.
	other := f.sign(t, with2(claims, func(c *Claims) { c.SessionID = "b3RoZXItc2Vzc2lvbi1pZA" }))
	if _, err := v.Verify(other, wantAlice(), vnow); err != nil {
		t.Fatalf("another session: %v", err)
	}
}

// TestVerifierNeverCachesARevokedToken: a token whose session was revoked before it was
// first presented is refused and, like every refused token, stays out of the cache
// (SECURITY.md: cache only successful verifications).
func TestVerifierNeverCachesARevokedToken(t *testing.T) {
	f := newVerifierFixture(t)
	claims := validClaims(vnow)
	token := f.sign(t, claims)
	revocations := NewRevocations()
	revocations.Add(testSID, claims.Expires())
	v, err := NewVerifier(f.k, revocations, 0)
	if err != nil {
		t.Fatal(err)
	}
	if c, err := v.Verify(token, wantAlice(), vnow); !errors.Is(err, ErrTokenRevoked) || c != nil {
		t.Fatalf("Verify = %+v, %v; want nil, %v", c, err, ErrTokenRevoked)
	}
	if n := v.cache.Len(); n != 0 {
		t.Errorf("a revoked token entered the cache (Len = %d): Verify adds to the cache before it checks the revocation", n)
	}
}

// TestVerifierCacheCannotBeFlooded: forged-but-well-formed tokens neither grow the
// cache nor evict a real session from it.
func TestVerifierCacheCannotBeFlooded(t *testing.T) {
	f := newVerifierFixture(t)
	v := f.newVerifier(t, 2)
	token := f.sign(t, validClaims(vnow))
	if _, err := v.Verify(token, wantAlice(), vnow); err != nil {
		t.Fatal(err)
	}
	claimsJSON, _ := json.Marshal(validClaims(vnow))
	for i := range 200 {
		forged := signEdDSA(t, f.attacker, with(f.header(), "n", i), claimsJSON)
		if _, err := v.Verify(forged, wantAlice(), vnow); !errors.Is(err, ErrTokenSignature) {
			t.Fatalf("forgery %d: %v", i, err)
		}
	}
	if n := v.cache.Len(); n != 1 || !v.cache.Contains(sha256.Sum256([]byte(token))) {
		t.Fatalf("after a flood of forgeries: Len %d, real token cached %v", n, v.cache.Contains(sha256.Sum256([]byte(token))))
	}
}

func TestSignedTokenShape(t *testing.T) {
	f := newVerifierFixture(t)
	token := f.sign(t, validClaims(vnow))
	if !wellFormed(token) || len(token) > 600 {
		t.Fatalf("token of %d bytes, well formed %v", len(token), wellFormed(token))
	}
	h, _, _ := parts(token)
	raw, err := base64.RawURLEncoding.DecodeString(h)
	if err != nil {
		t.Fatal(err)
	}
	var header map[string]any
	if err := json.Unmarshal(raw, &header); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"alg": "EdDSA", "kid": f.kid, "typ": TokenType}
	if len(header) != len(want) {
		t.Fatalf("header = %v, want %v", header, want)
	}
	for k, v := range want {
		if header[k] != v {
			t.Fatalf("header = %v, want %v", header, want)
		}
	}
}

func TestRevocationsPrune(t *testing.T) {
	r := NewRevocations()
	r.Add("a", vnow.Add(-time.Second))
	r.Add("b", vnow)
	r.Add("c", vnow.Add(time.Second))
	r.Prune(vnow)
	if r.Len() != 1 || r.Revoked("a") || r.Revoked("b") || !r.Revoked("c") {
		t.Fatalf("after Prune: Len %d, a %v, b %v, c %v", r.Len(), r.Revoked("a"), r.Revoked("b"), r.Revoked("c"))
	}
}

// TestVerifierBoundsTokenLifetimeByRole: a token lasting longer than its role allows
// (max_duration, or max_total for an extendable role) is refused, as is a token of a
// role the config does not declare; real sessions, scheduled or extended, pass.
func TestVerifierBoundsTokenLifetimeByRole(t *testing.T) {
	f := newVerifierFixture(t)
	now := vnow.Unix()
	rules := map[string]*policy.Role{
		"console-admin": {Name: "console-admin", MaxDuration: time.Hour},
		// Extendable: sessions may last up to max_total from their start.
		"db-admin": {Name: "db-admin", MaxDuration: time.Hour, MaxTotal: 4 * time.Hour},
		// max_total not above max_duration: not extendable, max_duration bounds.
		"viewer": {Name: "viewer", MaxDuration: 2 * time.Hour, MaxTotal: time.Hour},
		// A duration in part seconds: tokens carry whole seconds, so it rounds up.
		"odd": {Name: "odd", MaxDuration: 90*time.Second + 500*time.Millisecond},
	}
	token := func(role string, iat, nbf, exp int64) string {
		return f.sign(t, with2(validClaims(vnow), func(c *Claims) { c.Role, c.IssuedAt, c.NotBefore, c.Expiry = role, iat, nbf, exp }))
	}
	tests := []struct {
		name  string
		token string
		role  string
		at    int64 // default now
		want  error
	}{
		{"exactly max_duration", token("console-admin", now-60, now-60, now-60+3600), "console-admin", 0, nil},
		{"a second over max_duration", token("console-admin", now-60, now-60, now-60+3601), "console-admin", 0, ErrTokenLifetime},
		{"ten years, made with the stored key", token("console-admin", now, now, now+10*365*86400), "console-admin", 0, ErrTokenLifetime},
		{"nbf long ago to stretch a short exp", token("console-admin", now, 1, now+60), "console-admin", 0, ErrTokenLifetime},
		{"scheduled: issued a day before its start", token("console-admin", now-86400, now, now+3600), "console-admin", 0, nil},
		{"scheduled: at its start, issued just now", token("console-admin", now, now+600, now+600+3600), "console-admin", now + 600, nil},
		{"extended: re-signed now, nbf the session's start", token("db-admin", now, now-3*3600, now+3600), "db-admin", 0, nil},
		{"extended to exactly max_total", token("db-admin", now, now-3600, now+3*3600), "db-admin", 0, nil},
		{"extended a second past max_total", token("db-admin", now, now-3600, now+3*3600+1), "db-admin", 0, ErrTokenLifetime},
		{"extended, but the role cannot be", token("viewer", now, now-2*3600, now+60), "viewer", 0, ErrTokenLifetime},
		{"max_duration above max_total bounds", token("viewer", now, now-60, now-60+2*3600), "viewer", 0, nil},
		{"part seconds round up", token("odd", now, now-30, now-30+91), "odd", 0, nil},
		{"part seconds, a second more", token("odd", now, now-30, now-30+92), "odd", 0, ErrTokenLifetime},
		{"a role the config does not declare", token("root", now, now-60, now+60), "root", 0, ErrTokenRole},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := f.newVerifier(t, 0)
			at := time.Unix(now, 0)
			if tt.at != 0 {
				at = time.Unix(tt.at, 0)
			}
			want := Want{Subject: "alice", Audience: audience, Roles: []string{tt.role}, Rules: rules}
			c, err := v.Verify(tt.token, want, at)
			if !errors.Is(err, tt.want) || (err == nil) != (c != nil) {
				t.Fatalf("Verify = %+v, %v; want %v", c, err, tt.want)
			}
			if tt.want != nil && v.cache.Len() != 0 {
				t.Fatalf("a refused token entered the cache")
			}
		})
	}

	// Without rules (tools that verify with no config) lifetimes are not checked.
	v := f.newVerifier(t, 0)
	if _, err := v.Verify(token("console-admin", now, now, now+10*365*86400), Want{Subject: "alice", Audience: audience, Roles: []string{"console-admin"}}, vnow); err != nil {
		t.Fatalf("without rules: %v", err)
	}
}

// TestVerifierLifetimeBoundBitesOnCachedTokens: the cache outlives config reloads, so
// a reload that shortens a role, or removes it, refuses its cached tokens at once.
func TestVerifierLifetimeBoundBitesOnCachedTokens(t *testing.T) {
	f := newVerifierFixture(t)
	now := vnow.Unix()
	token := f.sign(t, with2(validClaims(vnow), func(c *Claims) { c.NotBefore, c.Expiry = now-60, now-60+2*3600 }))
	before := map[string]*policy.Role{"console-admin": {Name: "console-admin", MaxDuration: 2 * time.Hour}}
	v := f.newVerifier(t, 0)
	want := Want{Subject: "alice", Audience: audience, Roles: []string{"console-admin"}, Rules: before}
	if _, err := v.Verify(token, want, vnow); err != nil || v.cache.Len() != 1 {
		t.Fatalf("before the reload: %v (Len %d)", err, v.cache.Len())
	}
	for _, tt := range []struct {
		name  string
		rules map[string]*policy.Role
		want  error
	}{
		{"max_duration lowered", map[string]*policy.Role{"console-admin": {Name: "console-admin", MaxDuration: time.Hour}}, ErrTokenLifetime},
		{"role removed", map[string]*policy.Role{"viewer": {Name: "viewer", MaxDuration: 8 * time.Hour}}, ErrTokenRole},
		{"unchanged", before, nil},
	} {
		want.Rules = tt.rules
		if _, err := v.Verify(token, want, vnow); !errors.Is(err, tt.want) {
			t.Errorf("%s: cached token: %v, want %v", tt.name, err, tt.want)
		}
	}
}

func TestWithinLifetime(t *testing.T) {
	role := &policy.Role{Name: "r", MaxDuration: time.Hour}
	for _, tt := range []struct {
		name          string
		iat, nbf, exp int64
		want          bool
	}{
		{"from nbf", 5000, 1000, 4600, true},
		{"from nbf, over", 1000, 1000, 4601, false},
		{"no nbf: from iat", 1000, 0, 4600, true},
		{"no nbf: from iat, over", 1000, 0, 4601, false},
		{"neither nbf nor iat", 0, 0, 10, false},
		{"negative nbf cannot overflow the subtraction", 0, -1 << 62, 1 << 62, false},
		{"exp before nbf", 1000, 2000, 1500, true},
	} {
		c := &Claims{Grant: Grant{IssuedAt: tt.iat, NotBefore: tt.nbf, Expiry: tt.exp}}
		if got := withinLifetime(c, role); got != tt.want {
			t.Errorf("%s: withinLifetime = %v, want %v", tt.name, got, tt.want)
		}
	}
}
