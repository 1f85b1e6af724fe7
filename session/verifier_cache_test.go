package session

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/caddy-jit/caddy-jit/policy"
)

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
	if n := v.cache.Len(); n != 1 || !v.cache.Contains(v.keyer.key(token)) {
		t.Fatalf("after a flood of forgeries: Len %d, real token cached %v", n, v.cache.Contains(v.keyer.key(token)))
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
