package integration

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// ---------------------------------------------------------------------------
// Class 1: forged or altered session tokens.

func TestSecurityClass01ForgedTokens(t *testing.T) {
	e := newEnv(t, envOptions{Sites: []siteSpec{
		{Auth: true, Jit: "\tjit " + roleAdmin},
		{Auth: true, Jit: "\tjit " + roleAdmin},
	}})
	siteA, siteB := e.site(0), e.site(1)
	alice, bob, frank := e.enroll("alice"), e.enroll("bob"), e.enroll("frank")
	ta := e.browser("alice").mustActivate(siteA, roleAdmin, "/", alice, nil)
	tv := e.browser("alice").mustActivate(siteA, roleViewer, "/", alice, nil)
	tb := e.browser("bob").mustActivate(siteA, roleAdmin, "/", bob, nil)
	tf := e.browser("frank").mustActivate(siteB, roleAdmin, "/", frank, nil) // site B's
	key := e.signingKey(t)
	atk := e.browser("")

	hA, claims := tokenParts(t, ta)
	if hA["kid"] != key.kid {
		t.Fatalf("test setup: alice's token has kid %v, the stored key is %s", hA["kid"], key.kid)
	}
	partsA, partsB := strings.Split(ta, "."), strings.Split(tb, ".")
	now := float64(time.Now().Unix())
	mint := func(change func(c map[string]any)) string {
		return signEd(t, key.priv, key.header(), cloneWith(claims, change))
	}
	mintH := func(change func(h map[string]any)) string {
		return signEd(t, key.priv, cloneWith(key.header(), change), claims)
	}
	edit := func(token string, change func(c map[string]any)) string {
		_, c := tokenParts(t, token)
		change(c)
		p := strings.Split(token, ".")
		return p[0] + "." + b64json(t, c) + "." + p[2]
	}

	// Controls: the genuine tokens, and one minted with the stored key, pass; so each
	// refusal below is due to what the case changed alone.
	for _, c := range []struct{ name, site, user, token string }{
		{"alice's token", siteA, "alice", ta},
		{"bob's token", siteA, "bob", tb},
		{"frank's token on site B", siteB, "frank", tf},
		{"a token minted with the stored key", siteA, "alice", mint(func(map[string]any) {})},
	} {
		if r := sendToken(atk, shapeGET, c.site, c.user, c.token); r.StatusCode != http.StatusOK {
			t.Fatalf("control %s: want 200, got %s", c.name, r)
		}
	}

	_, attackerPriv, _ := ed25519.GenerateKey(rand.Reader)
	attackerPub := attackerPriv.Public().(ed25519.PublicKey)
	attackerJWK := map[string]any{"kty": "OKP", "crv": "Ed25519", "x": base64.RawURLEncoding.EncodeToString(attackerPub)}
	ourPub := key.priv.Public().(ed25519.PublicKey)
	ourX := base64.RawURLEncoding.EncodeToString(ourPub)
	spki, _ := x509.MarshalPKIXPublicKey(ourPub)
	ourPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: spki})
	jwks := atk.get(siteA+"/.jit/jwks.json", withBasicAuth("alice")).Body
	hsHeader := b64json(t, map[string]any{"alg": "HS256", "kid": key.kid, "typ": "jit-session+jwt"})
	hsIn := hsHeader + "." + partsA[1]
	noneHeader := b64json(t, map[string]any{"alg": "none", "kid": key.kid, "typ": "jit-session+jwt"})
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	esIn := b64json(t, map[string]any{"alg": "ES256", "kid": key.kid, "typ": "jit-session+jwt"}) + "." + partsA[1]
	esSig, _ := ecKey.Sign(rand.Reader, func() []byte { s := sha256.Sum256([]byte(esIn)); return s[:] }(), nil)
	bigClaims := cloneWith(claims, func(c map[string]any) { c["pad"] = strings.Repeat("p", 2500) })
	flattened, _ := json.Marshal(map[string]string{"protected": partsA[0], "payload": partsA[1], "signature": partsA[2]})
	general, _ := json.Marshal(map[string]any{"payload": partsA[1], "signatures": []map[string]string{{"protected": partsA[0], "signature": partsA[2]}}})

	cases := []struct {
		name, user, token string
		site              string // default site A
	}{
		// alg none and algorithm confusion
		{name: "alg none, empty signature", user: "alice", token: noneHeader + "." + partsA[1] + "."},
		{name: "alg none, genuine signature kept", user: "alice", token: noneHeader + "." + partsA[1] + "." + partsA[2]},
		{name: "alg none, bare header", user: "alice", token: b64json(t, map[string]any{"alg": "none"}) + "." + partsA[1] + "."},
		{name: "alg NONE, signature AA", user: "alice", token: b64json(t, map[string]any{"alg": "NONE", "kid": key.kid, "typ": "jit-session+jwt"}) + "." + partsA[1] + ".AA"},
		{name: "HS256 keyed with our raw public key", user: "alice", token: hsIn + "." + hs256(ourPub, hsIn)},
		{name: "HS256 keyed with our public key's x", user: "alice", token: hsIn + "." + hs256([]byte(ourX), hsIn)},
		{name: "HS256 keyed with our public key as PEM", user: "alice", token: hsIn + "." + hs256(ourPEM, hsIn)},
		{name: "HS256 keyed with the JWKS document", user: "alice", token: hsIn + "." + hs256([]byte(jwks), hsIn)},
		{name: "ES256 signed by another key, our kid", user: "alice", token: esIn + "." + base64.RawURLEncoding.EncodeToString(esSig)},
		// keys named by the token
		{name: "embedded jwk of another key, signed by it, our kid", user: "alice",
			token: signEd(t, attackerPriv, cloneWith(key.header(), func(h map[string]any) { h["jwk"] = attackerJWK }), claims)},
		{name: "embedded jwk of another key, signed by it, no kid", user: "alice",
			token: signEd(t, attackerPriv, map[string]any{"alg": "EdDSA", "typ": "jit-session+jwt", "jwk": attackerJWK}, claims)},
		{name: "embedded jwk of our own key, signed by our key", user: "alice",
			token: mintH(func(h map[string]any) { h["jwk"] = map[string]any{"kty": "OKP", "crv": "Ed25519", "x": ourX} })},
		{name: "jku and x5u pointing elsewhere, signed by another key", user: "alice",
			token: signEd(t, attackerPriv, cloneWith(key.header(), func(h map[string]any) {
				h["kid"], h["jku"], h["x5u"] = "attacker", "https://evil.example/jwks.json", "https://evil.example/cert.pem"
			}), claims)},
		// kid
		{name: "unknown kid, signed by another key", user: "alice",
			token: signEd(t, attackerPriv, cloneWith(key.header(), func(h map[string]any) { h["kid"] = "attacker" }), claims)},
		{name: "unknown kid, signed by our key", user: "alice", token: mintH(func(h map[string]any) { h["kid"] = "unknown-key" })},
		{name: "empty kid, signed by our key", user: "alice", token: mintH(func(h map[string]any) { h["kid"] = "" })},
		{name: "no kid, signed by our key", user: "alice", token: mintH(func(h map[string]any) { delete(h, "kid") })},
		{name: "path traversal kid, signed by our key", user: "alice", token: mintH(func(h map[string]any) { h["kid"] = "../../keys/signing.json" })},
		{name: "numeric kid, signed by our key", user: "alice", token: mintH(func(h map[string]any) { h["kid"] = 0 })},
		{name: "null kid, signed by our key", user: "alice", token: mintH(func(h map[string]any) { h["kid"] = nil })},
		{name: "array kid, signed by our key", user: "alice", token: mintH(func(h map[string]any) { h["kid"] = []string{key.kid} })},
		{name: "our kid with a NUL, signed by our key", user: "alice", token: mintH(func(h map[string]any) { h["kid"] = key.kid + "\x00" })},
		{name: "our kid upper-cased, signed by our key", user: "alice", token: mintH(func(h map[string]any) { h["kid"] = strings.ToUpper(key.kid) })},
		// crit and typ
		{name: "unknown crit, signed by our key", user: "alice",
			token: mintH(func(h map[string]any) { h["crit"], h["x-unknown"] = []string{"x-unknown"}, true })},
		{name: "crit naming a registered claim, signed by our key", user: "alice",
			token: mintH(func(h map[string]any) { h["crit"], h["exp"] = []string{"exp"}, now+60 })},
		{name: "crit not a list, signed by our key", user: "alice", token: mintH(func(h map[string]any) { h["crit"] = "x-unknown" })},
		{name: "no typ, signed by our key", user: "alice", token: mintH(func(h map[string]any) { delete(h, "typ") })},
		{name: "typ JWT, signed by our key", user: "alice", token: mintH(func(h map[string]any) { h["typ"] = "JWT" })},
		// serialization and shape
		{name: "JSON serialization, flattened", user: "alice", token: string(flattened)},
		{name: "JSON serialization, general", user: "alice", token: string(general)},
		{name: "JSON serialization, base64url-encoded", user: "alice", token: base64.RawURLEncoding.EncodeToString(flattened)},
		{name: "four parts", user: "alice", token: ta + "." + partsA[2]},
		{name: "five parts (JWE-like)", user: "alice", token: strings.Join([]string{partsA[0], partsA[1], partsA[2], partsA[1], partsA[2]}, ".")},
		{name: "empty middle part", user: "alice", token: partsA[0] + ".." + partsA[2]},
		{name: "leading dot", user: "alice", token: "." + ta},
		{name: "oversize: 5000 bytes of base64url", user: "alice", token: strings.Repeat("A", 2500) + "." + strings.Repeat("B", 2000) + "." + strings.Repeat("C", 500)},
		{name: "oversize: validly signed by our key but longer than 2 KiB", user: "alice", token: signEd(t, key.priv, key.header(), bigClaims)},
		{name: "truncated by one character", user: "alice", token: ta[:len(ta)-1]},
		{name: "truncated by twenty characters", user: "alice", token: ta[:len(ta)-20]},
		{name: "signature removed", user: "alice", token: partsA[0] + "." + partsA[1]},
		{name: "signature empty", user: "alice", token: partsA[0] + "." + partsA[1] + "."},
		{name: "header only", user: "alice", token: partsA[0]},
		{name: "padding added to the signature", user: "alice", token: ta + "=="},
		{name: "standard base64 alphabet", user: "alice", token: strings.NewReplacer("-", "+", "_", "/").Replace(ta) + "+/"},
		// payload edited, signatures from elsewhere
		{name: "payload edited: viewer token's role set to console-admin", user: "alice", token: edit(tv, func(c map[string]any) { c["role"] = roleAdmin })},
		{name: "payload edited: sub alice to bob", user: "bob", token: edit(ta, func(c map[string]any) { c["sub"] = "bob" })},
		{name: "payload edited: exp extended by a day", user: "alice", token: edit(ta, func(c map[string]any) { c["exp"] = c["exp"].(float64) + 86400 })},
		{name: "payload edited: sid changed", user: "alice", token: edit(ta, func(c map[string]any) { c["sid"] = "AAAAAAAAAAAAAAAAAAAAAA" })},
		{name: "payload edited: site B's token re-addressed to site A", user: "frank", token: edit(tf, func(c map[string]any) { c["aud"] = siteA })},
		{name: "another key's signature, our kid", user: "alice", token: signEd(t, attackerPriv, key.header(), claims)},
		{name: "bob's signature on alice's payload", user: "alice", token: partsA[0] + "." + partsA[1] + "." + partsB[2]},
		// claims, validly signed by our key
		{name: "missing exp", user: "alice", token: mint(func(c map[string]any) { delete(c, "exp") })},
		{name: "exp zero", user: "alice", token: mint(func(c map[string]any) { c["exp"] = 0 })},
		{name: "exp as a string", user: "alice", token: mint(func(c map[string]any) { c["exp"] = "9999999999" })},
		{name: "exp beyond int64", user: "alice", token: mint(func(c map[string]any) { c["exp"] = 1e20 })},
		{name: "expired ten seconds ago", user: "alice", token: mint(func(c map[string]any) { c["exp"], c["nbf"], c["iat"] = now-10, now-100, now-100 })},
		{name: "missing nbf", user: "alice", token: mint(func(c map[string]any) { delete(c, "nbf") })},
		{name: "nbf ten minutes ahead", user: "alice", token: mint(func(c map[string]any) { c["nbf"], c["iat"], c["exp"] = now+600, now+600, now+1200 })},
		{name: "missing sid", user: "alice", token: mint(func(c map[string]any) { delete(c, "sid") })},
		{name: "wrong aud: site B", user: "alice", token: mint(func(c map[string]any) { c["aud"] = siteB })},
		{name: "wrong aud: another host", user: "alice", token: mint(func(c map[string]any) { c["aud"] = "http://evil.example" })},
		{name: "wrong aud: https", user: "alice", token: mint(func(c map[string]any) { c["aud"] = strings.Replace(siteA, "http://", "https://", 1) })},
		{name: "wrong aud: trailing slash", user: "alice", token: mint(func(c map[string]any) { c["aud"] = siteA + "/" })},
		{name: "wrong aud: no port", user: "alice", token: mint(func(c map[string]any) { c["aud"] = "http://localhost" })},
		{name: "aud as a list holding site A", user: "alice", token: mint(func(c map[string]any) { c["aud"] = []string{siteA} })},
		{name: "missing aud", user: "alice", token: mint(func(c map[string]any) { delete(c, "aud") })},
		{name: "genuine token of site B, on site A", user: "frank", token: tf},
		{name: "wrong role: genuine viewer token", user: "alice", token: tv},
		{name: "wrong role: viewer", user: "alice", token: mint(func(c map[string]any) { c["role"] = roleViewer })},
		{name: "wrong role: undeclared", user: "alice", token: mint(func(c map[string]any) { c["role"] = "superuser" })},
		{name: "wrong role: other case", user: "alice", token: mint(func(c map[string]any) { c["role"] = "Console-Admin" })},
		{name: "wrong role: empty", user: "alice", token: mint(func(c map[string]any) { c["role"] = "" })},
		{name: "wrong role: a list", user: "alice", token: mint(func(c map[string]any) { c["role"] = []string{roleAdmin} })},
		{name: "another user's token: bob's with alice's identity", user: "alice", token: tb},
		{name: "another user's token: alice's with bob's identity", user: "bob", token: ta},
		{name: "another user: sub bob", user: "alice", token: mint(func(c map[string]any) { c["sub"] = "bob" })},
		{name: "another user: sub Alice", user: "alice", token: mint(func(c map[string]any) { c["sub"] = "Alice" })},
		{name: "another user: sub with a trailing space", user: "alice", token: mint(func(c map[string]any) { c["sub"] = "alice " })},
		{name: "another user: sub with a NUL", user: "alice", token: mint(func(c map[string]any) { c["sub"] = "alice\x00" })},
		{name: "missing sub", user: "alice", token: mint(func(c map[string]any) { delete(c, "sub") })},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			site := tc.site
			if site == "" {
				site = siteA
			}
			for _, sh := range allShapes {
				before := e.up.count()
				r := sendToken(atk, sh, site, tc.user, tc.token)
				wantToActivation(t, e, r, before, shapePath(sh), string(sh)+" with a forged token")
			}
		})
	}

	// After all of this the genuine tokens still work: no lockout, no cache poisoning.
	for _, c := range []struct{ user, token string }{{"alice", ta}, {"bob", tb}} {
		for _, sh := range allShapes {
			before := e.up.count()
			r := sendToken(atk, sh, siteA, c.user, c.token)
			wantPassedClean(t, e, r, sh, before, c.user, sessionID(t, c.token), c.token, string(sh)+" with "+c.user+"'s genuine token after the attacks")
		}
	}
	if evs := e.events(match{"event": "access_denied", "reason": "internal_error"}); len(evs) != 0 {
		t.Errorf("forged tokens caused internal errors: %v", evs)
	}
}

// ---------------------------------------------------------------------------
// Class 2: revocation and expiry bite on the very next request, although cached.

func TestSecurityClass02RevocationAndExpiry(t *testing.T) {
	e := newEnv(t, envOptions{JitOptions: syncOptions, ExtraEligible: []string{"p1 p2 p3 p4 p5 p6 p7 p8"}})
	site := e.site(0)
	pool := e.userPool("alice", "bob", "frank", "r1", "r2", "r3", "r4", "r5", "r6", "p1", "p2", "p3", "p4", "p5", "p6", "p7", "p8")

	type sess struct {
		user  string
		b     *browser
		token string
		sid   string
	}
	open := func(t *testing.T, overrides url.Values) sess {
		t.Helper()
		u, code := pool.take(t)
		b := e.browser(u.name)
		token := activateWith(t, b, site, roleAdmin, "/", code, overrides)
		s := sess{user: u.name, b: b, token: token, sid: sessionID(t, token)}
		// Twice, so that the token is surely in the verified-token cache.
		wantAdmitted(t, e, b, s.user, token, s.sid, "first request under the session")
		wantAdmitted(t, e, b, s.user, token, s.sid, "second (cached) request under the session")
		return s
	}
	deactivate := func(t *testing.T, s sess) {
		t.Helper()
		st := s.b.get(site + "/.jit/")
		f := formFields(t, st.Body, "/.jit/deactivate")
		if !containsString(f["session"], s.sid) || f.Get("csrf") == "" {
			t.Fatalf("the status page offers no deactivation of %s: %s", s.sid, st)
		}
		r := s.b.postForm(site+"/.jit/deactivate", url.Values{"session": {s.sid}, "csrf": {f.Get("csrf")}})
		wantStatus(t, r, http.StatusSeeOther, "deactivate")
	}
	revoke := func(t *testing.T, s sess) { e.revoke(s.sid) }

	for _, m := range []struct {
		name   string
		end    func(*testing.T, sess)
		reason string
	}{
		{"deactivated by the user", deactivate, "token_revoked"},
		{"revoked through the admin API", revoke, "token_revoked"},
	} {
		t.Run(m.name, func(t *testing.T) {
			for _, sh := range allShapes {
				t.Run(string(sh), func(t *testing.T) {
					s := open(t, nil)
					m.end(t, s)
					before := e.up.count()
					r := sendToken(s.b, sh, site, s.user, s.token)
					wantToActivation(t, e, r, before, shapePath(sh), "the very next request after the session ended")
					e.waitEvent(match{"event": "access_denied", "user": s.user, "reason": m.reason})
				})
			}
		})
	}

	t.Run("expired", func(t *testing.T) {
		sessions := map[shape]sess{}
		var last time.Time
		for _, sh := range allShapes {
			s := open(t, url.Values{"duration": {"3s"}})
			sessions[sh] = s
			if exp := tokenExpiry(t, s.token); exp.After(last) {
				last = exp
			}
		}
		sleepUntil(t, last.Add(time.Second), "until the sessions have expired")
		for _, sh := range allShapes {
			t.Run(string(sh), func(t *testing.T) {
				s := sessions[sh]
				before := e.up.count()
				r := sendToken(s.b, sh, site, s.user, s.token)
				wantToActivation(t, e, r, before, shapePath(sh), "the very next request after expiry")
				e.waitEvent(match{"event": "access_denied", "user": s.user, "reason": "token_expired"})
			})
		}
	})

	// Open WebSockets end with their session. Closing at expiry, and streams, are
	// covered by TestWebSocketClosedAtExpiryAndRevocation and the cluster test.
	for _, m := range []struct {
		name string
		end  func(*testing.T, sess)
	}{{"open WebSocket closed at deactivation", deactivate}, {"open WebSocket closed at revocation", revoke}} {
		t.Run(m.name, func(t *testing.T) {
			s := open(t, nil)
			ws, err := dialWebSocket(t, site, s.user, s.token)
			if err != nil {
				t.Fatalf("opening a WebSocket under the session: %v", err)
			}
			if !wsEcho(t, ws, "before the end") {
				t.FailNow()
			}
			start := time.Now()
			m.end(t, s)
			if closed := waitWSClosed(t, ws, start.Add(2*time.Second), m.name); !closed.IsZero() {
				t.Logf("closed %s after the session ended", closed.Sub(start).Round(time.Millisecond))
			}
			if _, ok := e.up.waitEnd(wsPath, time.Second); !ok {
				t.Errorf("the upstream's side of the WebSocket stayed open")
			}
		})
	}
}
