package integration

import (
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"maps"
	"net/http"
	"strings"
	"testing"
)

// 5. Client-sent identity headers never reach the upstream.
func TestForgedIdentityHeadersNeverReachUpstream(t *testing.T) {
	e := newEnv(t, envOptions{})
	alice := e.enroll("alice")
	site := e.site(0)
	forged := []reqOption{
		withHeader("X-Jit-User", "root"),
		withHeader("X-Jit-Role", "superuser"),
		withHeader("X-Jit-Session", "forged-session"),
		withRawHeader("X_Jit_User", "root"),
		withRawHeader("x-jit-role", "superuser2"),
	}

	t.Run("without session", func(t *testing.T) {
		before := e.up.count()
		r := e.browser("alice").get(site+adminURI, forged...)
		wantActivationRedirect(t, r, roleAdmin, adminURI)
		wantStatus(t, e.browser("carol").get(site+adminURI, forged...), http.StatusForbidden, "ineligible user with forged headers")
		wantNot2xx(t, e.browser("").get(site+adminURI, forged...), "anonymous client with forged headers")
		wantNoUpstream(t, e.up, before, "forged headers without a session")
	})

	t.Run("with session", func(t *testing.T) {
		b := e.browser("alice")
		token := b.mustActivate(site, roleAdmin, adminURI, alice, nil)
		_, claims := tokenParts(t, token)
		before := e.up.count()
		r := b.get(site+adminURI, forged...)
		if !wantStatus(t, r, http.StatusOK, "forged headers with a session") {
			return
		}
		if n := e.up.count() - before; n != 1 {
			t.Fatalf("the upstream got %d requests, want 1", n)
		}
		h := e.up.last(t).Header
		want := map[string]string{"X-Jit-User": "alice", "X-Jit-Role": roleAdmin, "X-Jit-Session": claims["sid"].(string)}
		for name, v := range want {
			if got := h.Values(name); len(got) != 1 || got[0] != v {
				t.Errorf("upstream %s=%q, want exactly [%q]", name, got, v)
			}
		}
		for name, vs := range h {
			norm := strings.ToLower(strings.ReplaceAll(name, "_", "-"))
			if strings.HasPrefix(norm, "x-jit-") {
				if _, ours := want[name]; !ours {
					t.Errorf("upstream received the client's header %s: %q", name, vs)
				}
			}
		}
	})
}

// 12. Forged, altered and misplaced tokens never reach the upstream.
func TestTokenAttacks(t *testing.T) {
	e := newEnv(t, envOptions{Sites: []siteSpec{
		{Auth: true, Jit: "\t@viewer path /viewer /viewer/*\n\tjit @viewer " + roleViewer +
			"\n\t@admin not path /viewer /viewer/*\n\tjit @admin " + roleAdmin},
		{Auth: true, Jit: "\tjit " + roleAdmin},
	}})
	siteA, siteB := e.site(0), e.site(1)
	alice, bob := e.enroll("alice"), e.enroll("bob")

	aliceViewer := e.browser("alice")
	tv := aliceViewer.mustActivate(siteA, roleViewer, "/viewer/x", alice, nil)
	aliceAdmin := e.browser("alice")
	ta := aliceAdmin.mustActivate(siteA, roleAdmin, "/admin/x", alice, nil)
	tb := e.browser("bob").mustActivate(siteA, roleAdmin, "/admin/x", bob, nil)

	atk := e.browser("")
	send := func(rawURL, user, token string) *response {
		t.Helper()
		return atk.raw(http.MethodGet, rawURL, withBasicAuth(user), withCookieHeader(cookieName+"="+token))
	}
	// Controls: each genuine token works where it belongs, so each refusal below is
	// due to the tampering alone.
	for _, c := range []struct{ url, user, token string }{
		{siteA + "/viewer/x", "alice", tv},
		{siteA + "/admin/x", "alice", ta},
		{siteA + "/admin/x", "bob", tb},
	} {
		if r := send(c.url, c.user, c.token); r.StatusCode != http.StatusOK {
			t.Fatalf("control: a genuine token of %s for %s was refused: %s", c.user, c.url, r)
		}
	}

	hA, _ := tokenParts(t, ta)
	partsA := strings.Split(ta, ".")
	kid, _ := hA["kid"].(string)
	edit := func(token string, change func(p map[string]any)) string {
		_, p := tokenParts(t, token)
		change(p)
		parts := strings.Split(token, ".")
		return parts[0] + "." + b64json(t, p) + "." + parts[2]
	}
	attack := func(t *testing.T, rawURL, user, token string) {
		t.Helper()
		before := e.up.count()
		r := send(rawURL, user, token)
		wantNot2xx(t, r, "forged token")
		wantNoUpstream(t, e.up, before, "forged token")
		if r.StatusCode >= 300 {
			t.Logf("refused with %s", r.Status)
		}
	}

	t.Run("payload edited: role viewer to console-admin", func(t *testing.T) {
		attack(t, siteA+"/admin/x", "alice", edit(tv, func(p map[string]any) { p["role"] = roleAdmin }))
	})
	t.Run("unedited viewer token on the console-admin route", func(t *testing.T) {
		attack(t, siteA+"/admin/x", "alice", tv)
	})
	t.Run("payload edited: sub alice to bob", func(t *testing.T) {
		attack(t, siteA+"/admin/x", "bob", edit(ta, func(p map[string]any) { p["sub"] = "bob" }))
	})
	t.Run("payload edited: exp extended", func(t *testing.T) {
		attack(t, siteA+"/admin/x", "alice", edit(ta, func(p map[string]any) { p["exp"] = p["exp"].(float64) + 86400 }))
	})
	t.Run("payload edited: aud changed to the other site", func(t *testing.T) {
		attack(t, siteB+"/admin/x", "alice", edit(ta, func(p map[string]any) { p["aud"] = siteB }))
	})
	t.Run("another user's token: bob's cookie with alice's basic auth", func(t *testing.T) {
		attack(t, siteA+"/admin/x", "alice", tb)
	})
	t.Run("another user's token: alice's cookie with bob's basic auth", func(t *testing.T) {
		attack(t, siteA+"/admin/x", "bob", ta)
	})
	t.Run("token for another site", func(t *testing.T) {
		attack(t, siteB+"/admin/x", "alice", ta)
		// A browser sends the localhost cookie to every port: the same refusal.
		before := e.up.count()
		r := aliceAdmin.get(siteB + "/admin/x")
		wantNot2xx(t, r, "site A's cookie sent by the browser to site B")
		wantNoUpstream(t, e.up, before, "site A's cookie on site B")
	})
	t.Run("alg none", func(t *testing.T) {
		h := b64json(t, map[string]any{"alg": "none", "typ": "jit-session+jwt", "kid": kid})
		attack(t, siteA+"/admin/x", "alice", h+"."+partsA[1]+".")
		attack(t, siteA+"/admin/x", "alice", h+"."+partsA[1]+"."+partsA[2])
		hNone := b64json(t, map[string]any{"alg": "none"})
		attack(t, siteA+"/admin/x", "alice", hNone+"."+partsA[1]+".")
	})
	t.Run("HS256 signed with our Ed25519 public key", func(t *testing.T) {
		r := atk.get(siteA+"/.jit/jwks.json", withBasicAuth("alice"))
		if !wantStatus(t, r, http.StatusOK, "JWKS") {
			return
		}
		var jwks struct {
			Keys []map[string]any `json:"keys"`
		}
		if err := json.Unmarshal([]byte(r.Body), &jwks); err != nil {
			t.Fatalf("JWKS is not JSON: %v: %s", err, r.Body)
		}
		var x string
		for _, k := range jwks.Keys {
			if _, private := k["d"]; private {
				t.Errorf("the JWKS publishes a private key: %v", k)
			}
			if k["kid"] == kid {
				x, _ = k["x"].(string)
				if k["kty"] != "OKP" || k["crv"] != "Ed25519" {
					t.Errorf("JWKS key %v: want kty OKP, crv Ed25519", k)
				}
			}
		}
		if x == "" {
			t.Fatalf("the JWKS has no key %q with an x: %s", kid, r.Body)
		}
		pub, err := base64.RawURLEncoding.DecodeString(x)
		if err != nil || len(pub) != ed25519.PublicKeySize {
			t.Fatalf("JWKS x %q is not a base64url Ed25519 public key: %v", x, err)
		}
		h := b64json(t, map[string]any{"alg": "HS256", "typ": "jit-session+jwt", "kid": kid})
		for name, key := range map[string][]byte{"raw public key": pub, "x as text": []byte(x), "JWKS JSON": []byte(r.Body)} {
			mac := hmac.New(sha256.New, key)
			mac.Write([]byte(h + "." + partsA[1]))
			token := h + "." + partsA[1] + "." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
			t.Run(name, func(t *testing.T) { attack(t, siteA+"/admin/x", "alice", token) })
		}
	})
	t.Run("EdDSA signed by another key", func(t *testing.T) {
		pub, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		sign := func(header map[string]any) string {
			h := b64json(t, header)
			sig := ed25519.Sign(priv, []byte(h+"."+partsA[1]))
			return h + "." + partsA[1] + "." + base64.RawURLEncoding.EncodeToString(sig)
		}
		base := maps.Clone(hA)
		t.Run("our kid", func(t *testing.T) { attack(t, siteA+"/admin/x", "alice", sign(base)) })
		withJWK := maps.Clone(hA)
		withJWK["jwk"] = map[string]any{"kty": "OKP", "crv": "Ed25519", "x": base64.RawURLEncoding.EncodeToString(pub)}
		t.Run("embedded jwk", func(t *testing.T) { attack(t, siteA+"/admin/x", "alice", sign(withJWK)) })
		unknownKid := maps.Clone(hA)
		unknownKid["kid"] = "attacker"
		t.Run("unknown kid", func(t *testing.T) { attack(t, siteA+"/admin/x", "alice", sign(unknownKid)) })
	})

	// After all of this, the genuine tokens still work (no lockout, no cache poisoning).
	for _, c := range []struct{ url, user, token string }{
		{siteA + "/viewer/x", "alice", tv},
		{siteA + "/admin/x", "alice", ta},
	} {
		if r := send(c.url, c.user, c.token); r.StatusCode != http.StatusOK {
			t.Errorf("after the attacks a genuine token of %s for %s was refused: %s", c.user, c.url, r)
		}
	}
}
