package session

import (
	"encoding/json"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
)

func TestAssertionsAreSignedCachedAndRenewed(t *testing.T) {
	f := newVerifierFixture(t)
	a := NewAssertions(f.k)
	claims := validClaims(vnow)
	c := &claims
	const upstream = "https://grafana.internal:3000"

	first, err := a.For(c, "caddy-jit test", upstream, vnow)
	if err != nil {
		t.Fatal(err)
	}
	jws, err := jose.ParseSignedCompact(first, []jose.SignatureAlgorithm{jose.EdDSA})
	if err != nil {
		t.Fatal(err)
	}
	if typ := jws.Signatures[0].Protected.ExtraHeaders[jose.HeaderType]; typ != AssertionType {
		t.Errorf("typ %v, want %s", typ, AssertionType)
	}
	payload, err := jws.Verify(f.pub)
	if err != nil {
		t.Fatalf("the assertion does not verify with the published key: %v", err)
	}
	var got Claims
	if err := json.Unmarshal(payload, &got); err != nil {
		t.Fatal(err)
	}
	want := Grant{Issuer: "caddy-jit test", Subject: c.Subject, Audience: upstream, Role: c.Role, SessionID: c.SessionID,
		IssuedAt: vnow.Unix(), NotBefore: vnow.Unix(), Expiry: vnow.Unix() + int64(AssertionLifetime/time.Second)}
	if got.Grant != want {
		t.Errorf("claims %+v, want %+v", got.Grant, want)
	}
	if !slices.Equal(got.Methods, c.Methods) || len(got.Methods) == 0 {
		t.Errorf("amr %q, want the session's %q", got.Methods, c.Methods)
	}

	// Reused while more than half its life remains; renewed after.
	if again, _ := a.For(c, "caddy-jit test", upstream, vnow.Add(AssertionLifetime/2-time.Second)); again != first {
		t.Error("the assertion was signed again within the first half of its life")
	}
	if later, _ := a.For(c, "caddy-jit test", upstream, vnow.Add(AssertionLifetime/2+time.Second)); later == first {
		t.Error("the assertion was reused past half its life")
	}
	// One per audience.
	if other, _ := a.For(c, "caddy-jit test", "https://jenkins.internal", vnow); other == first {
		t.Error("two upstreams got the same assertion")
	}
	// Never beyond the session's end.
	short := claims
	short.SessionID, short.Expiry = "short-session-id-00000", vnow.Unix()+30
	tok, _ := a.For(&short, "caddy-jit test", upstream, vnow)
	payload, _ = mustParse(t, tok).Verify(f.pub)
	_ = json.Unmarshal(payload, &got)
	if got.Expiry != short.Expiry {
		t.Errorf("an assertion of a session ending in 30 s expires at %d, want %d", got.Expiry, short.Expiry)
	}
}

func TestAnAssertionIsNeverASessionToken(t *testing.T) {
	f := newVerifierFixture(t)
	claims := validClaims(vnow)
	tok, err := NewAssertions(f.k).For(&claims, "caddy-jit test", audience, vnow)
	if err != nil {
		t.Fatal(err)
	}
	v := f.newVerifier(t, 0)
	if _, err := v.Verify(tok, wantAlice(), vnow); !errors.Is(err, ErrTokenMalformed) {
		t.Fatalf("an assertion presented as a session cookie: %v, want %v", err, ErrTokenMalformed)
	}
}

func mustParse(t *testing.T, token string) *jose.JSONWebSignature {
	t.Helper()
	jws, err := jose.ParseSignedCompact(token, []jose.SignatureAlgorithm{jose.EdDSA})
	if err != nil {
		t.Fatal(err)
	}
	return jws
}
