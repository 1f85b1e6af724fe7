package integration

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/html"
)

// The regression suite of /work/shared/SECURITY.md: one table-driven test per attack
// class, each run against a real Caddy with the recording upstream, so that every case
// asserts both the answer and what did (or did not) reach the upstream. The older tests
// (attacks_test.go, flow_test.go, state_test.go, lockout_test.go) cover some of the same
// ground; the important cases are repeated here so that each class's table is complete.

// ---------------------------------------------------------------------------
// Request shapes: the gate sees GET, POST, HEAD and WebSocket upgrades.

type shape string

const (
	shapeGET  shape = "GET"
	shapePOST shape = "POST"
	shapeHEAD shape = "HEAD"
	shapeWS   shape = "WebSocket"
)

var allShapes = []shape{shapeGET, shapePOST, shapeHEAD, shapeWS}

// shapePath is the protected URI each shape asks for: the WebSocket goes to the
// upstream's echo, everything else to the admin page.
func shapePath(sh shape) string {
	if sh == shapeWS {
		return wsPath
	}
	return adminURI
}

// send sends one request of the given shape to rawURL without the jar's cookies (only
// what opts add): POST carries a small form body, a WebSocket is a GET with the
// upgrade headers (a 101 answer is closed at once, see browser.do).
func (b *browser) send(sh shape, rawURL string, opts ...reqOption) *response {
	b.t.Helper()
	var (
		method = http.MethodGet
		body   io.Reader
		pre    []reqOption
	)
	switch sh {
	case shapePOST:
		method, body = http.MethodPost, strings.NewReader("probe=1&x=2")
		pre = append(pre, withHeader("Content-Type", "application/x-www-form-urlencoded"))
	case shapeHEAD:
		method = http.MethodHead
	case shapeWS:
		u, err := url.Parse(rawURL)
		if err != nil {
			b.t.Fatal(err)
		}
		key := make([]byte, 16)
		_, _ = rand.Read(key)
		pre = append(pre,
			withHeader("Connection", "Upgrade"),
			withHeader("Upgrade", "websocket"),
			withHeader("Sec-WebSocket-Version", "13"),
			withHeader("Sec-WebSocket-Key", base64.StdEncoding.EncodeToString(key)),
			withHeader("Origin", u.Scheme+"://"+u.Host))
	}
	saved := b.client.Jar
	b.client.Jar = nil
	defer func() { b.client.Jar = saved }()
	return b.do(method, rawURL, body, append(pre, opts...)...)
}

// sendToken sends one request of the shape to the shape's protected URI on site,
// authenticated as user (basic auth), with token as our cookie ("" for none).
func sendToken(b *browser, sh shape, site, user, token string, extra ...reqOption) *response {
	b.t.Helper()
	var opts []reqOption
	if user != "" {
		opts = append(opts, withBasicAuth(user))
	}
	if token != "" {
		opts = append(opts, withToken(token))
	}
	return b.send(sh, site+shapePath(sh), append(opts, extra...)...)
}

// passedStatus is what a request that the gate let through gets from the upstream.
func passedStatus(sh shape) int {
	if sh == shapeWS {
		return http.StatusSwitchingProtocols
	}
	return http.StatusOK
}

// wantToActivation checks that a request was sent to activation (302) for role with
// return uri, and that the upstream got nothing since before.
func wantToActivation(t *testing.T, e *env, r *response, before int, uri, what string) {
	t.Helper()
	wantActivationRedirect(t, r, roleAdmin, uri)
	wantNoUpstream(t, e.up, before, what)
}

// wantPassedClean checks that a request reached the upstream exactly once, with our
// identity headers alone and without our cookie.
func wantPassedClean(t *testing.T, e *env, r *response, sh shape, before int, user, sid, token, what string) (upstreamRequest, bool) {
	t.Helper()
	if !wantStatus(t, r, passedStatus(sh), what) {
		return upstreamRequest{}, false
	}
	if n := e.up.count() - before; n != 1 {
		t.Errorf("%s: the upstream got %d requests, want 1", what, n)
		return upstreamRequest{}, false
	}
	rec := e.up.last(t)
	if p := strings.SplitN(shapePath(sh), "?", 2)[0]; rec.Path != p {
		t.Errorf("%s: the upstream got %s, want %s", what, rec.Path, p)
	}
	wantOnlyOurIdentity(t, rec, user, roleAdmin, sid, what)
	wantNoJitCookie(t, rec, token, what)
	return rec, true
}

// wantOnlyOurIdentity checks that the upstream received exactly our X-Jit-* headers
// and no other header that some upstream might read as one of ours.
func wantOnlyOurIdentity(t *testing.T, rec upstreamRequest, user, role, sid, what string) {
	t.Helper()
	want := map[string]string{"X-Jit-User": user, "X-Jit-Role": role, "X-Jit-Session": sid}
	for name, v := range want {
		if got := rec.Header.Values(name); len(got) != 1 || got[0] != v {
			t.Errorf("%s: the upstream got %s=%q, want exactly [%q]", what, name, got, v)
		}
	}
	for name, vs := range rec.Header {
		norm := strings.ToLower(strings.ReplaceAll(name, "_", "-"))
		if _, ours := want[name]; strings.HasPrefix(norm, "x-jit-") && !ours {
			t.Errorf("%s: the upstream received a client's identity header %s: %q", what, name, vs)
		}
	}
}

// wantNoJitCookie checks that neither of our cookies, nor the token in any form,
// reached the upstream.
func wantNoJitCookie(t *testing.T, rec upstreamRequest, token, what string) {
	t.Helper()
	for _, c := range (&http.Request{Header: rec.Header}).Cookies() {
		if c.Name == cookieName || c.Name == "__Host-"+cookieName {
			t.Errorf("%s: the upstream received a cookie named %s (value %.20q…); Cookie: %q", what, c.Name, c.Value, rec.Header.Values("Cookie"))
		}
	}
	if token == "" {
		return
	}
	sig := token[strings.LastIndex(token, ".")+1:]
	for name, vs := range rec.Header {
		for _, v := range vs {
			if strings.Contains(v, sig) {
				t.Errorf("%s: the upstream received the session token in its header %s: %.80q", what, name, v)
			}
		}
	}
}

// ---------------------------------------------------------------------------
// TOTP codes for many activations: each user's codes are single-use per time step,
// and the server accepts the steps now-1, now and now+1, so a pool of users gives
// two activations per user without waiting (next() uses now and now+1).

type userPool struct{ users []*totpUser }

func (e *env) userPool(names ...string) *userPool {
	p := &userPool{}
	for _, n := range names {
		p.users = append(p.users, e.enroll(n))
	}
	return p
}

// take returns the user with the fewest codes used and a code the server accepts now.
func (p *userPool) take(t *testing.T) (*totpUser, string) {
	t.Helper()
	best := p.users[0]
	for _, u := range p.users[1:] {
		if u.lastStep < best.lastStep {
			best = u
		}
	}
	return best, best.next(t)
}

// activateWith activates with a given code; it fails the test unless that worked and
// returns the token.
func activateWith(t *testing.T, b *browser, site, role, ret, code string, overrides url.Values) string {
	t.Helper()
	r := b.activate(site, role, ret, code, overrides)
	if r.StatusCode != http.StatusSeeOther {
		t.Fatalf("activating %s for %s: want 303, got %s", role, b.user, r)
	}
	c := setCookie(r, cookieName)
	if c == nil || c.Value == "" {
		t.Fatalf("activating %s for %s: no session cookie: %s", role, b.user, r)
	}
	return c.Value
}

// ---------------------------------------------------------------------------
// Tokens signed with the real signing key (read from the test's own storage), so that
// a case can change one property alone and still carry a valid signature.

type ourKey struct {
	kid  string
	priv ed25519.PrivateKey
}

// signingKey reads the newest signing key from the storage directory.
func (e *env) signingKey(t *testing.T) ourKey {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(e.data.StorageDir, "jit", "keys", "signing.json"))
	if err != nil {
		t.Fatalf("reading the signing key from storage: %v", err)
	}
	var rec struct {
		Keys []struct {
			Kid  string `json:"kid"`
			Seed []byte `json:"seed"`
		} `json:"keys"`
	}
	if err := json.Unmarshal(raw, &rec); err != nil || len(rec.Keys) == 0 || len(rec.Keys[len(rec.Keys)-1].Seed) != ed25519.SeedSize {
		t.Fatalf("the stored keyring is not what the test expects (%v): %.200s", err, raw)
	}
	k := rec.Keys[len(rec.Keys)-1]
	return ourKey{kid: k.Kid, priv: ed25519.NewKeyFromSeed(k.Seed)}
}

// header is the header our tokens carry.
func (k ourKey) header() map[string]any {
	return map[string]any{"alg": "EdDSA", "kid": k.kid, "typ": "jit-session+jwt"}
}

// signEd makes a compact JWS of header and claims signed with priv.
func signEd(t *testing.T, priv ed25519.PrivateKey, header, claims map[string]any) string {
	t.Helper()
	in := b64json(t, header) + "." + b64json(t, claims)
	return in + "." + base64.RawURLEncoding.EncodeToString(ed25519.Sign(priv, []byte(in)))
}

func hs256(key []byte, in string) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(in))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

func cloneWith(m map[string]any, change func(map[string]any)) map[string]any {
	c := maps.Clone(m)
	change(c)
	return c
}

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

// ---------------------------------------------------------------------------
// Class 3: TOTP replay, lockout, malformed codes, other users' codes.

func TestSecurityClass03TOTP(t *testing.T) {
	e := newEnv(t, envOptions{})
	site := e.site(0)

	// refusedActivation posts an activation and checks the refusal: status, no
	// cookie, the code not echoed, nothing upstream.
	refused := func(t *testing.T, b *browser, code string, status int, what string) *response {
		t.Helper()
		before := e.up.count()
		r := b.activate(site, roleAdmin, "/", code, nil)
		wantStatus(t, r, status, what)
		if c := setCookie(r, cookieName); c != nil && c.Value != "" {
			t.Errorf("%s: a session cookie was set: %s", what, r)
		}
		if code != "" && r.StatusCode == http.StatusBadRequest {
			if f := formFields(t, r.Body, "/.jit/activate"); f.Get("code") != "" {
				t.Errorf("%s: the re-rendered form keeps the code %q", what, f.Get("code"))
			}
		}
		wantNoUpstream(t, e.up, before, what)
		return r
	}

	t.Run("replay", func(t *testing.T) {
		alice := e.enroll("alice")
		cur := currentStep()
		alice.lastStep = cur + 1
		newer, older := codeAt(t, alice.secret, cur+1), codeAt(t, alice.secret, cur)
		cases := []struct {
			name, code string
			status     int
			reason     string
		}{
			{"the next step's code, first use", newer, http.StatusSeeOther, ""},
			{"the same code again, same browser", newer, http.StatusBadRequest, "totp_replayed"},
			{"the same code again, new browser", newer, http.StatusBadRequest, "totp_replayed"},
			{"the current step's code after the next step's was used", older, http.StatusBadRequest, "totp_replayed"},
		}
		b := e.browser("alice")
		for i, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				bb := b
				if i >= 2 {
					bb = e.browser("alice")
				}
				if tc.status == http.StatusSeeOther {
					activateWith(t, bb, site, roleAdmin, "/", tc.code, nil)
					return
				}
				r := refused(t, bb, tc.code, tc.status, tc.name)
				if !strings.Contains(r.Body, "already used") {
					t.Errorf("the refusal does not say the code was used: %s", r)
				}
				e.waitEvent(match{"event": "activation_failed", "user": "alice", "reason": tc.reason})
			})
		}
	})

	t.Run("wrong length and non-digit codes", func(t *testing.T) {
		bob := e.enroll("bob")
		right := codeAt(t, bob.secret, currentStep()+1)
		bob.lastStep = currentStep() + 1
		fullwidth := strings.Map(func(r rune) rune { return r - '0' + '０' }, right)
		arabic := strings.Map(func(r rune) rune { return r - '0' + '٠' }, right)
		b := e.browser("bob")
		for _, tc := range []struct{ name, code string }{
			{"empty", ""},
			{"five digits", "12345"},
			{"seven digits", "1234567"},
			{"the right code with a seventh digit", right + "0"},
			{"the right code without its last digit", right[:5]},
			{"letters", "abcdef"},
			{"a letter among digits", right[:5] + "a"},
			{"a space inside", right[:3] + " " + right[3:]},
			{"a sign", "+" + right[:5]},
			{"hexadecimal", "0x1e24"},
			{"exponent", "1e5000"},
			{"fullwidth digits of the right code", fullwidth},
			{"Arabic-Indic digits of the right code", arabic},
			{"the right code with a NUL", right + "\x00"},
			{"the right code with a zero-width space", right + "\u200b"},
			{"a very long code", strings.Repeat("1", 5000)},
		} {
			t.Run(tc.name, func(t *testing.T) {
				refused(t, b, tc.code, http.StatusBadRequest, "code "+tc.name)
				// Every failure counts towards the lockout; start each case afresh.
				e.adminOK(http.MethodPost, "/jit/lockouts/bob/clear?by=integration&reason=test", nil)
			})
		}
		// None of them used the right code up or locked the account.
		activateWith(t, b, site, roleAdmin, "/", right, nil)
	})

	t.Run("a code of another user's secret", func(t *testing.T) {
		frank, r1 := e.enroll("frank"), e.enroll("r1")
		code := r1.next(t)
		refused(t, e.browser("frank"), code, http.StatusBadRequest, "frank enters r1's code")
		e.waitEvent(match{"event": "activation_failed", "user": "frank", "reason": "totp_invalid"})
		// r1's own code is still good for r1 (frank's attempt did not use it up) …
		activateWith(t, e.browser("r1"), site, roleAdmin, "/", code, nil)
		// … and frank's own works for frank.
		e.browser("frank").mustActivate(site, roleAdmin, "/", frank, nil)
	})

	t.Run("the old secret after a new enrollment", func(t *testing.T) {
		old := e.enroll("r2")
		code := old.next(t)
		renewed := e.enroll("r2")
		if renewed.secret == old.secret {
			t.Fatalf("a new enrollment kept the secret")
		}
		if codeAt(t, renewed.secret, old.lastStep) == code {
			t.Skip("the old and the new secret give the same code for this step (1 in a million)")
		}
		refused(t, e.browser("r2"), code, http.StatusBadRequest, "the replaced secret's code")
	})

	t.Run("lockout is per account", func(t *testing.T) {
		locky := e.enroll("locky")
		first := e.browser("locky")
		// Five wrong codes spread over forms, cookie jars and browsers: they add up.
		spread := []struct {
			name string
			b    *browser
		}{
			{"first browser", first},
			{"first browser, a new form", first},
			{"a new cookie jar", e.browser("locky")},
			{"another new browser", e.browser("locky")},
			{"yet another browser", e.browser("locky")},
		}
		for i, s := range spread {
			want := http.StatusBadRequest
			if i == len(spread)-1 {
				want = http.StatusTooManyRequests
			}
			refused(t, s.b, locky.wrong(t), want, fmt.Sprintf("wrong code %d (%s)", i+1, s.name))
		}
		// The right code, refused before it is looked at, so it stays usable (30 s+).
		code := locky.next(t)
		right := func(t *testing.T, b *browser, what string) {
			t.Helper()
			r := refused(t, b, code, http.StatusTooManyRequests, "the right code "+what)
			if !strings.Contains(strings.ToLower(r.Body), "locked") {
				t.Errorf("the lockout page does not say locked: %s", r)
			}
		}
		for _, tc := range []struct {
			name   string
			before func()
			b      func() *browser
		}{
			{"with a new form", func() {}, func() *browser { return first }},
			{"with a new cookie jar", func() {}, func() *browser { return e.browser("locky") }},
			{"after a reload", e.reload, func() *browser { return e.browser("locky") }},
			{"after a restart", func() { first.client.CloseIdleConnections(); e.restart() }, func() *browser { return e.browser("locky") }},
		} {
			t.Run(tc.name, func(t *testing.T) {
				tc.before()
				right(t, tc.b(), tc.name)
			})
		}
		e.waitEvent(match{"event": "activation_failed", "user": "locky", "reason": "locked_out"})
		// Cleared by an operator, the same code works: the lockout alone refused it.
		e.adminOK(http.MethodPost, "/jit/lockouts/locky/clear?by=integration&reason=test", nil)
		activateWith(t, e.browser("locky"), site, roleAdmin, "/", code, nil)
		// Another instance sharing the storage: see TestClusterSharesSessionsRevocationsCodesAndLockouts.
	})
}

// ---------------------------------------------------------------------------
// Class 4: CSRF on every state-changing POST; nothing changes state on GET.

func TestSecurityClass04CSRF(t *testing.T) {
	e := newEnv(t, envOptions{Sites: []siteSpec{
		{Auth: true, Jit: "\tjit " + roleAdmin},
		{Auth: true, Jit: "\tjit " + roleAdmin},
	}})
	siteA, siteB := e.site(0), e.site(1)
	alice := e.enroll("alice")
	b := e.browser("alice")
	code := alice.next(t)
	good := b.activationForm(siteA, roleAdmin, adminURI)
	good.Set("justification", "integration test: checking the console")
	good.Set("code", code)
	csrf := good.Get("csrf")
	bobCSRF := e.browser("bob").activationForm(siteA, roleAdmin, "/").Get("csrf")
	siteBCSRF := b.activationForm(siteB, roleAdmin, "/").Get("csrf")
	flipped := []byte(csrf)
	if mid := len(flipped) / 2; flipped[mid] == 'A' {
		flipped[mid] = 'B'
	} else {
		flipped[mid] = 'A'
	}

	with := func(base url.Values, k, v string, drop bool) url.Values {
		f := cloneValues(base)
		if drop {
			f.Del(k)
		} else {
			f.Set(k, v)
		}
		return f
	}
	type postCase struct {
		name   string
		form   url.Values
		opts   []reqOption
		status int
		// query sends the form in the query string and an empty body.
		query bool
		// contentType replaces the form content type, with the form as the body.
		contentType string
	}
	attacks := func(base url.Values, activate bool) []postCase {
		// The activation form names no role without its fields (400, before the CSRF
		// check); the deactivation form fails the CSRF check (403).
		noFields := http.StatusForbidden
		if activate {
			noFields = http.StatusBadRequest
		}
		return []postCase{
			{name: "no csrf field", form: with(base, "csrf", "", true), status: http.StatusForbidden},
			{name: "empty csrf", form: with(base, "csrf", "", false), status: http.StatusForbidden},
			{name: "wrong csrf", form: with(base, "csrf", strings.Repeat("A", len(csrf)), false), status: http.StatusForbidden},
			{name: "csrf with one character changed", form: with(base, "csrf", string(flipped), false), status: http.StatusForbidden},
			{name: "another user's csrf (bob's)", form: with(base, "csrf", bobCSRF, false), status: http.StatusForbidden},
			{name: "csrf made for another site (B)", form: with(base, "csrf", siteBCSRF, false), status: http.StatusForbidden},
			{name: "csrf twice (bob's and alice's)", form: func() url.Values { f := cloneValues(base); f["csrf"] = []string{bobCSRF, csrf}; return f }(), status: http.StatusBadRequest},
			{name: "Sec-Fetch-Site cross-site", form: base, opts: []reqOption{withHeader("Sec-Fetch-Site", "cross-site")}, status: http.StatusForbidden},
			{name: "Sec-Fetch-Site same-site", form: base, opts: []reqOption{withHeader("Sec-Fetch-Site", "same-site")}, status: http.StatusForbidden},
			{name: "foreign Origin", form: base, opts: []reqOption{withHeader("Origin", "http://evil.example")}, status: http.StatusForbidden},
			{name: "Origin null", form: base, opts: []reqOption{withHeader("Origin", "null")}, status: http.StatusForbidden},
			{name: "Origin of site B (another port)", form: base, opts: []reqOption{withHeader("Origin", siteB)}, status: http.StatusForbidden},
			{name: "fields in the query string, empty body", form: base, query: true, status: noFields},
			{name: "text/plain body (a cross-site form's enctype)", form: base, contentType: "text/plain", status: http.StatusBadRequest},
			{name: "multipart body", form: base, contentType: "multipart/form-data; boundary=x", status: http.StatusBadRequest},
		}
	}
	post := func(t *testing.T, path string, tc postCase) *response {
		t.Helper()
		switch {
		case tc.query:
			return b.do(http.MethodPost, siteA+path+"?"+tc.form.Encode(), strings.NewReader(""),
				append([]reqOption{withHeader("Content-Type", "application/x-www-form-urlencoded")}, tc.opts...)...)
		case tc.contentType != "":
			return b.do(http.MethodPost, siteA+path, strings.NewReader(tc.form.Encode()),
				append([]reqOption{withHeader("Content-Type", tc.contentType)}, tc.opts...)...)
		}
		return b.postForm(siteA+path, tc.form, tc.opts...)
	}
	noSession := func(t *testing.T, what string) {
		t.Helper()
		if ss := e.sessions("?user=alice"); len(ss) != 0 {
			t.Fatalf("%s: alice has sessions: %+v", what, ss)
		}
		if b.cookie(siteA) != "" {
			t.Fatalf("%s: the browser holds a session cookie", what)
		}
	}

	t.Run("POST /.jit/activate", func(t *testing.T) {
		for _, tc := range attacks(good, true) {
			t.Run(tc.name, func(t *testing.T) {
				r := post(t, "/.jit/activate", tc)
				wantStatus(t, r, tc.status, tc.name)
				if c := setCookie(r, cookieName); c != nil && c.Value != "" {
					t.Errorf("a session cookie was set: %s", r)
				}
				noSession(t, tc.name)
			})
		}
		e.waitEvent(match{"event": "activation_failed", "user": "alice", "reason": "csrf"})
	})

	t.Run("GET and HEAD /.jit/activate with every field in the query", func(t *testing.T) {
		for _, method := range []string{http.MethodGet, http.MethodHead} {
			r := b.do(method, siteA+"/.jit/activate?"+good.Encode(), nil)
			wantStatus(t, r, http.StatusOK, method+" with the form as query")
			if c := setCookie(r, cookieName); c != nil {
				t.Errorf("%s set a session cookie: %s", method, r)
			}
			noSession(t, method+" with the form as query")
		}
		wantActivationRedirect(t, b.get(siteA+adminURI), roleAdmin, adminURI)
	})

	// None of the refusals used the code up or counted towards a lockout.
	r := b.postForm(siteA+"/.jit/activate", good)
	if !wantStatus(t, r, http.StatusSeeOther, "the genuine form after the refused ones") {
		t.FailNow()
	}
	token := b.cookie(siteA)
	sid := sessionID(t, token)
	wantAdmitted(t, e, b, "alice", token, sid, "the session")
	st := formFields(t, b.get(siteA+"/.jit/").Body, "/.jit/deactivate")
	dcsrf := st.Get("csrf")
	dgood := url.Values{"session": {sid}, "csrf": {dcsrf}}

	t.Run("POST /.jit/deactivate", func(t *testing.T) {
		for _, tc := range attacks(dgood, false) {
			t.Run(tc.name, func(t *testing.T) {
				r := post(t, "/.jit/deactivate", tc)
				wantStatus(t, r, tc.status, tc.name)
				wantAdmitted(t, e, b, "alice", token, sid, "the session after a refused deactivation")
			})
		}
		// Bob, with his own valid CSRF token (from his activation form: CSRF tokens are
		// bound to the user and the site, not to a page), cannot end alice's session.
		bb := e.browser("bob")
		wantStatus(t, bb.postForm(siteA+"/.jit/deactivate", url.Values{"session": {sid}, "csrf": {bobCSRF}}), http.StatusNotFound, "bob deactivating alice's session")
		wantAdmitted(t, e, b, "alice", token, sid, "the session after bob's attempt")
	})

	t.Run("no state change on other methods of /.jit/deactivate", func(t *testing.T) {
		for _, method := range []string{http.MethodGet, http.MethodHead, http.MethodPut, http.MethodDelete, http.MethodPatch} {
			r := b.do(method, siteA+"/.jit/deactivate?"+dgood.Encode(), nil)
			if wantStatus(t, r, http.StatusMethodNotAllowed, method+" /.jit/deactivate?session=…") && method != http.MethodHead {
				if allow := r.Header.Get("Allow"); allow != http.MethodPost {
					t.Errorf("%s: Allow %q, want POST", method, allow)
				}
			}
			wantAdmitted(t, e, b, "alice", token, sid, "the session after "+method+" /.jit/deactivate")
		}
	})

	// A control: the genuine deactivation works.
	if wantStatus(t, b.postForm(siteA+"/.jit/deactivate", dgood), http.StatusSeeOther, "the genuine deactivation") {
		wantRefused(t, e, b, "alice", token, "after the genuine deactivation")
	}
}

// ---------------------------------------------------------------------------
// Class 5: open redirects through the return path.

func TestSecurityClass05OpenRedirects(t *testing.T) {
	e := newEnv(t, envOptions{ExtraEligible: []string{"p1 p2 p3 p4 p5 p6 p7 p8"}})
	site := e.site(0)
	pool := e.userPool("alice", "bob", "frank", "r1", "r2", "r3", "r4", "r5", "r6", "p1", "p2", "p3", "p4", "p5", "p6", "p7", "p8")

	cases := []string{
		"//evil.example",
		"///evil.example",
		"////evil.example/x",
		`/\evil.example`,
		`\\evil.example`,
		`/\/evil.example`,
		"/\t/evil.example",
		"/\r/evil.example",
		"/\n/evil.example",
		"/ /evil.example",
		"/\x00/evil.example",
		"/%09/evil.example",
		"/%0a/evil.example",
		"/%0D%0A/evil.example",
		"https://evil.example",
		"HTTPS://evil.example/",
		"https:evil.example",
		"https:/evil.example",
		"javascript:alert(1)",
		" JaVaScRiPt:alert(1)",
		"data:text/html,<script>alert(1)</script>",
		"evil.example",
		"evil.example/admin",
		"@evil.example",
		"/%2F%2Fevil.example",
		"%2F%2Fevil.example",
		"/%2f/evil.example",
		"/%5Cevil.example",
		"/%5c%5cevil.example",
		"/%252F%252Fevil.example",
		"/%255Cevil.example",
		"/%2509/evil.example",
	}
	for _, ret := range cases {
		t.Run(fmt.Sprintf("%q", ret), func(t *testing.T) {
			u, code := pool.take(t)
			b := e.browser(u.name)
			if f := b.activationForm(site, roleAdmin, ret); f.Get("return") != "/" {
				t.Errorf("the activation page carries return=%q, want /", f.Get("return"))
			}
			r := b.activate(site, roleAdmin, "/", code, url.Values{"return": {ret}})
			if !wantStatus(t, r, http.StatusSeeOther, "activation") {
				return
			}
			if loc := r.Header.Get("Location"); loc != "/" {
				t.Errorf("product bug: return=%q: Location=%q, want /", ret, loc)
			}
		})
	}
	t.Run("control: a same-site path with a query is kept", func(t *testing.T) {
		u, code := pool.take(t)
		r := e.browser(u.name).activate(site, roleAdmin, "/", code, url.Values{"return": {"/admin/page?x=1&y=%2F%2F"}})
		if wantStatus(t, r, http.StatusSeeOther, "activation") {
			if loc := r.Header.Get("Location"); loc != "/admin/page?x=1&y=%2F%2F" {
				t.Errorf("Location=%q, want /admin/page?x=1&y=%%2F%%2F", loc)
			}
		}
	})
	wantNoUpstream(t, e.up, 0, "activations")
}

// ---------------------------------------------------------------------------
// Class 6: header spoofing.

func TestSecurityClass06HeaderSpoofing(t *testing.T) {
	e := newEnv(t, envOptions{Sites: []siteSpec{
		{Auth: true, Jit: "\tjit " + roleAdmin},
		{Auth: true, Jit: "\tjit " + roleAdmin},
	}})
	siteA, siteB := e.site(0), e.site(1)
	portB := e.data.Sites[1].Port
	alice, frank, bob := e.enroll("alice"), e.enroll("frank"), e.enroll("bob")
	ta := e.browser("alice").mustActivate(siteA, roleAdmin, "/", alice, nil)
	sid := sessionID(t, ta)
	tf := e.browser("frank").mustActivate(siteB, roleAdmin, "/", frank, nil)
	// bob activates on site A through a Host header without a port: his token's
	// audience is then http://localhost, which names no port at all.
	bobNoPort := e.browser("bob")
	bobNoPort.host = "localhost"
	tbNoPort := bobNoPort.mustActivate(siteA, roleAdmin, "/", bob, nil)
	key := e.signingKey(t)
	_, claims := tokenParts(t, ta)
	httpsAud := signEd(t, key.priv, key.header(), cloneWith(claims, func(c map[string]any) { c["aud"] = strings.Replace(siteA, "http://", "https://", 1) }))
	atk := e.browser("")

	const spoofedIP = "203.0.113.7"
	forged := []reqOption{
		withHeader("X-Jit-User", "root"),
		withHeader("X-Jit-Role", "superuser"),
		withHeader("X-Jit-Session", "forged-session"),
		withHeader("X-Jit-Expires", "2099-01-01T00:00:00Z"),
		withRawHeader("x-jit-user", "root-lower"),
		withRawHeader("X_Jit_User", "root-underscore"),
		withRawHeader("x_jit_role", "superuser-underscore"),
		withRawHeader("X-JIT-SESSION", "FORGED-UPPER"),
		withRawHeader("X_JIT_EXPIRES", "2099-01-01T00:00:00Z"),
		func(r *http.Request) { r.Header["X-Jit-Role"] = []string{"superuser", roleAdmin} },
		withHeader("X-Forwarded-For", spoofedIP),
		withHeader("X-Real-Ip", spoofedIP),
		withHeader("Forwarded", "for="+spoofedIP+";host=evil.example;proto=https"),
		withHeader("X-Forwarded-Host", "evil.example"),
		withHeader("X-Forwarded-Proto", "https"),
	}

	t.Run("without a session", func(t *testing.T) {
		cases := []struct {
			name, user, token string
			extra             []reqOption
			status            int
			site              string // default site A
		}{
			{name: "anonymous", status: http.StatusUnauthorized},
			{name: "an ineligible user", user: "carol", status: http.StatusForbidden},
			{name: "an eligible user", user: "alice", status: http.StatusFound},
			{name: "our token under the __Host- name over HTTP, X-Forwarded-Proto https", user: "alice", status: http.StatusFound,
				extra: []reqOption{withCookieHeader("__Host-" + cookieName + "=" + ta)}},
			{name: "a token for https://…, X-Forwarded-Proto https", user: "alice", token: httpsAud, status: http.StatusFound},
			{name: "site B's token, X-Forwarded-Host naming site B", user: "frank", token: tf, status: http.StatusFound,
				extra: []reqOption{withHeader("X-Forwarded-Host", fmt.Sprintf("localhost:%d", portB))}},
			{name: "site B's token, X-Forwarded-Host and Forwarded naming site B", user: "frank", token: tf, status: http.StatusFound,
				extra: []reqOption{withHeader("X-Forwarded-Host", fmt.Sprintf("localhost:%d", portB)), withHeader("Forwarded", fmt.Sprintf("host=localhost:%d", portB))}},
			{name: "site B's token, Host header naming site B's port", user: "frank", token: tf, status: http.StatusFound,
				extra: []reqOption{func(r *http.Request) { r.Host = fmt.Sprintf("localhost:%d", portB) }}},
			{name: "site A's token made with Host: localhost, on site B with Host: localhost", user: "bob", token: tbNoPort, status: http.StatusFound,
				site: siteB, extra: []reqOption{func(r *http.Request) { r.Host = "localhost" }}},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				for _, sh := range allShapes {
					before := e.up.count()
					opts := append(append([]reqOption{}, forged...), tc.extra...)
					site := tc.site
					if site == "" {
						site = siteA
					}
					r := sendToken(atk, sh, site, tc.user, tc.token, opts...)
					if !wantStatus(t, r, tc.status, string(sh)) && r.StatusCode == passedStatus(sh) {
						rec := e.up.last(t)
						t.Errorf("product bug: %s: the upstream of %s served %s with X-Jit-User=%q X-Jit-Session=%q",
							sh, site, rec.Path, rec.Header.Values("X-Jit-User"), rec.Header.Values("X-Jit-Session"))
					}
					wantNoUpstream(t, e.up, before, string(sh))
				}
			})
		}
	})

	t.Run("with a session", func(t *testing.T) {
		cookies := []struct {
			name   string
			header []string
		}{
			{"our cookie alone", []string{cookieName + "=" + ta}},
			{"among other cookies", []string{"theme=dark; " + cookieName + "=" + ta + "; lang=en"}},
			{"sent twice in one header", []string{cookieName + "=" + ta + "; theme=dark; " + cookieName + "=" + ta}},
			{"in two Cookie headers", []string{"theme=dark; " + cookieName + "=" + ta, "lang=en; " + cookieName + "=" + ta}},
			{"quoted", []string{"theme=dark; " + cookieName + "=\"" + ta + "\""}},
			{"with the __Host- name as well", []string{"__Host-" + cookieName + "=" + ta + "; " + cookieName + "=" + ta + "; theme=dark"}},
			{"with a space before the = of a second copy", []string{cookieName + "=" + ta + "; theme=dark; " + cookieName + " =" + ta}},
			{"with a tab before the = of a second copy", []string{cookieName + "=" + ta + "; theme=dark; " + cookieName + "\t=" + ta}},
			{"with a second copy after a comma (RFC 2109 separator)", []string{cookieName + "=" + ta + "; theme=dark, " + cookieName + "=" + ta}},
		}
		for _, c := range cookies {
			t.Run(c.name, func(t *testing.T) {
				for _, sh := range allShapes {
					before := e.up.count()
					opts := append(append([]reqOption{withBasicAuth("alice")}, forged...),
						func(r *http.Request) { r.Header["Cookie"] = c.header })
					r := atk.send(sh, siteA+shapePath(sh), opts...)
					rec, ok := wantPassedClean(t, e, r, sh, before, "alice", sid, ta, string(sh))
					if !ok {
						continue
					}
					if got := rec.Header.Get("X-Forwarded-For"); strings.Contains(got, spoofedIP) {
						t.Errorf("%s: the upstream got the client's X-Forwarded-For: %q", sh, got)
					}
					if got := rec.Header.Get("X-Forwarded-Host"); got == "evil.example" {
						t.Errorf("%s: the upstream got the client's X-Forwarded-Host: %q", sh, got)
					}
					if got := rec.Header.Get("X-Forwarded-Proto"); got != "http" {
						t.Errorf("%s: the upstream got X-Forwarded-Proto %q, want http", sh, got)
					}
					if strings.Contains(strings.Join(c.header, ";"), "theme=dark") && !strings.Contains(strings.Join(rec.Header.Values("Cookie"), ";"), "theme=dark") {
						t.Errorf("%s: the client's other cookie was dropped: Cookie %q", sh, rec.Header.Values("Cookie"))
					}
				}
			})
		}
		for _, ev := range e.events(match{"event": "access", "session_id": sid}) {
			if ev.str("client_ip") == spoofedIP {
				t.Errorf("the audit log took the client's X-Forwarded-For as the client address: %v", ev)
			}
		}
	})
}

// ---------------------------------------------------------------------------
// Class 7: path tricks on a protected prefix.

// seenAsAdmin reports whether an upstream that routes on the decoded path, cleaned
// (as Go's ServeMux does) and case-insensitively, would treat p as /admin….
func seenAsAdmin(p string) bool {
	return strings.HasPrefix(strings.ToLower(path.Clean("/"+p)), "/admin")
}

// seenAsAdminLeniently also applies what other servers do: "\" as "/" (IIS),
// ";params" dropped from segments (Tomcat, Jetty), no dot-segment cleaning (naive
// prefix routers), and one more round of percent-decoding.
func seenAsAdminLeniently(p string) bool {
	forms := []string{p}
	if d, err := url.PathUnescape(p); err == nil {
		forms = append(forms, d)
	}
	for _, f := range forms {
		f = strings.ReplaceAll(f, `\`, "/")
		segs := strings.Split(f, "/")
		for i, s := range segs {
			segs[i], _, _ = strings.Cut(s, ";")
		}
		f = strings.Join(segs, "/")
		for _, g := range []string{f, path.Clean("/" + f)} {
			g = strings.ToLower(g)
			for strings.HasPrefix(g, "//") {
				g = g[1:]
			}
			if strings.HasPrefix(g, "/admin") {
				return true
			}
		}
	}
	return false
}

func TestSecurityClass07PathTricks(t *testing.T) {
	e := newEnv(t, envOptions{Sites: []siteSpec{
		{Auth: true, Jit: "\t@admin path /admin*\n\tjit @admin " + roleAdmin},
		{Auth: true, Jit: "\tjit " + roleAdmin},
	}})
	withMatcher, whole := e.site(0), e.site(1)
	alice := e.enroll("alice")
	b := e.browser("alice")

	variants := []string{
		"/admin", "/admin/x", "/ADMIN/x", "/Admin/x", "/aDmIn",
		"/%61dmin/x", "/%41DMIN/x", "/adm%69n/x", "/%61%64%6d%69%6e",
		"//admin/x", "///admin/x", "/./admin/x", "/%2e/admin/x", "/x/../admin/x", "/x/%2e%2e/admin/x", "/x/..%2fadmin/x",
		"/admin%2fx", "/%2fadmin/x", "/%2Fadmin", "/admin/..", "/admin/../x", "/admin%2f..%2fx", "/admin/%2e%2e/x",
		"/%5cadmin/x", "/admin%5cx", "/x/..%5cadmin",
		"/admin;x", "/admin;jsessionid=1/x", "/;/admin/x", "/.;/admin/x", "/x/..;/admin/x", "/admin/..;/x",
		"/admin%23x", "/%23/../admin", "/admin%3fx", "/admin?x=1", "/admin/?", "/%3f/../admin",
		"/admin%00x", "/admin%20", "/admin.", "/admin%09",
	}
	var lenient []string
	for _, v := range variants {
		t.Run(fmt.Sprintf("%q", v), func(t *testing.T) {
			for _, sh := range allShapes {
				// The whole site guarded: nothing may pass.
				before := e.up.count()
				r := b.send(sh, whole+v, withBasicAuth("alice"))
				wantNot2xx(t, r, string(sh)+" on the site guarded as a whole")
				if r.StatusCode >= 500 {
					t.Errorf("%s on the site guarded as a whole: %s", sh, r)
				}
				wantNoUpstream(t, e.up, before, string(sh)+" on the site guarded as a whole")

				// The site with `jit @admin`: refused, or passed to the upstream as a
				// path that is not /admin….
				before = e.up.count()
				r = b.send(sh, withMatcher+v, withBasicAuth("alice"))
				if r.StatusCode >= 500 {
					t.Errorf("%s with the matcher: %s", sh, r)
				}
				if e.up.count() == before {
					wantNot2xx(t, r, string(sh)+" with the matcher, refused by the gate")
					continue
				}
				rec := e.up.last(t)
				if seenAsAdmin(rec.Path) {
					t.Errorf("product bug: %s %q with `jit @admin` reached the upstream without a session as %q (raw query %q), which it serves as /admin",
						sh, v, rec.Path, rec.RawQuery)
				} else if seenAsAdminLeniently(rec.Path) && sh == shapeGET {
					lenient = append(lenient, fmt.Sprintf("%q → %q", v, rec.Path))
				}
			}
		})
	}
	if len(lenient) > 0 {
		t.Logf("note: with `jit @admin path /admin*` these reached the upstream unguarded as paths that a non-normalising, IIS-like or Tomcat-like upstream would route to /admin (the recording upstream does not): %s",
			strings.Join(lenient, ", "))
	}

	t.Run("controls", func(t *testing.T) {
		before := e.up.count()
		if r := b.get(withMatcher + "/public"); wantStatus(t, r, http.StatusOK, "an unguarded path") && e.up.count() != before+1 {
			t.Errorf("the unguarded path did not reach the upstream")
		}
		token := b.mustActivate(withMatcher, roleAdmin, "/admin/x", alice, nil)
		before = e.up.count()
		r := b.raw(http.MethodGet, withMatcher+"/ADMIN/x", withBasicAuth("alice"), withToken(token))
		if wantStatus(t, r, http.StatusOK, "a guarded variant under the session") && e.up.count() == before+1 {
			rec := e.up.last(t)
			wantOnlyOurIdentity(t, rec, "alice", roleAdmin, sessionID(t, token), "a guarded variant under the session")
			wantNoJitCookie(t, rec, token, "a guarded variant under the session")
		}
	})
}

// ---------------------------------------------------------------------------
// Classes 8 and 10 use a test-only identity taken from a request header, so that
// the tests can choose any user name (also ones basic_auth could not carry).

// headerIdentityOptions makes the identity a client-set header. TEST ONLY: never
// configure a client-controlled header as the identity in production.
const headerIdentityOptions = `		# TEST ONLY: the identity is a header any client can set, so that the
		# tests can choose user names freely. Never do this in production.
		identity {http.request.header.X-Test-User}`

// ticketRole is a role whose ticket field accepts any one-line text (up to the 128
// characters that caddy-jit allows), for tests of what a ticket carries.
const ticketRole = `		role ticketed {
			max_duration 1h
			justification optional
			ticket .+
			eligible alice bob <script>alert(1)</script> ` + "`\"><img src=x onerror=alert(1)>`" + `
		}`

func newHeaderIdentityEnv(t *testing.T) *env {
	t.Helper()
	return newEnv(t, envOptions{
		JitOptions: headerIdentityOptions + "\n" + ticketRole,
		Sites:      []siteSpec{{Auth: false, Jit: "\tjit " + roleAdmin}},
	})
}

// headerUser is a browser whose identity is user, sent in X-Test-User.
func (e *env) headerUser(user string) *browser {
	b := e.browser("")
	b.user = ""
	b.headers = http.Header{"X-Test-User": {user}}
	return b
}

// ---------------------------------------------------------------------------
// Class 8: clickjacking and content injection on our pages.

const (
	xssScript = `<script>alert(1)</script>`
	xssAttr   = `"><img src=x onerror=alert(1)>`
	xssSVG    = `<svg onload=alert(1)>`
)

// wantPageHeaders checks the headers every /.jit/ page and message must carry.
func wantPageHeaders(t *testing.T, r *response, what string) {
	t.Helper()
	csp := r.Header.Get("Content-Security-Policy")
	directives := map[string]string{}
	for d := range strings.SplitSeq(csp, ";") {
		name, value, _ := strings.Cut(strings.TrimSpace(d), " ")
		directives[name] = value
	}
	switch {
	case csp == "":
		t.Errorf("%s: no Content-Security-Policy (%s)", what, r.Status)
	case directives["frame-ancestors"] != "'none'":
		t.Errorf("%s: CSP %q lacks frame-ancestors 'none'", what, csp)
	case strings.Contains(csp, "unsafe-inline") || strings.Contains(csp, "unsafe-eval") || strings.Contains(csp, "*"):
		t.Errorf("%s: CSP %q allows unsafe sources", what, csp)
	case directives["default-src"] != "'none'" && directives["script-src"] == "":
		t.Errorf("%s: CSP %q does not restrict scripts", what, csp)
	}
	if v := r.Header.Get("X-Frame-Options"); v != "DENY" {
		t.Errorf("%s: X-Frame-Options %q, want DENY", what, v)
	}
	if v := r.Header.Get("X-Content-Type-Options"); v != "nosniff" {
		t.Errorf("%s: X-Content-Type-Options %q, want nosniff", what, v)
	}
}

// ourScripts are the page script tags of caddymodule/templates/layout.html.
var ourScripts = []string{`<script src="/.jit/app.js" defer></script>`, `<script src="/.jit/passkey.js" defer></script>`}

// wantInert parses an HTML page and checks that it holds no script, no event handler
// attribute and none of the injected elements; each of wantText must appear in the
// page's text or attribute values exactly (so it was escaped, not dropped).
func wantInert(t *testing.T, r *response, what string, wantText ...string) {
	t.Helper()
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/html") {
		return
	}
	// Our own script, the only one a page may load (same origin, allowed by the CSP).
	body := r.Body
	for _, s := range ourScripts {
		body = strings.ReplaceAll(body, s, "")
	}
	for _, raw := range []string{xssScript, xssAttr, xssSVG, "<img", "<script", "<svg"} {
		if strings.Contains(body, raw) {
			t.Errorf("%s: the page contains %q unescaped", what, raw)
		}
	}
	doc, err := html.Parse(strings.NewReader(body))
	if err != nil {
		t.Errorf("%s: the page does not parse: %v", what, err)
		return
	}
	var texts []string
	var walk func(*html.Node)
	walk = func(n *html.Node) {
		switch n.Type {
		case html.ElementNode:
			switch n.Data {
			case "script", "img", "svg", "iframe", "object", "embed":
				t.Errorf("%s: the page has a <%s> element", what, n.Data)
			}
			for _, a := range n.Attr {
				if strings.HasPrefix(strings.ToLower(a.Key), "on") {
					t.Errorf("%s: <%s> has an event handler attribute %s=%q", what, n.Data, a.Key, a.Val)
				}
				texts = append(texts, a.Val)
			}
		case html.TextNode:
			texts = append(texts, n.Data)
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c)
		}
	}
	walk(doc)
	all := strings.Join(texts, "\n")
	for _, w := range wantText {
		if !strings.Contains(all, w) {
			t.Errorf("%s: the page does not show %q (escaped) at all", what, w)
		}
	}
}

func TestSecurityClass08PagesAndInjection(t *testing.T) {
	e := newHeaderIdentityEnv(t)
	site := e.site(0)
	alice := e.enroll("alice")
	a := e.headerUser("alice")

	// alice's session of the ticketed role, with markup in its justification and ticket.
	token := activateWith(t, a, site, "ticketed", "/", alice.next(t), url.Values{"justification": {"why: " + xssScript}, "ticket": {xssAttr}})
	sid := sessionID(t, token)
	csrf := formFields(t, a.get(site+"/.jit/").Body, "/.jit/deactivate").Get("csrf")
	if csrf == "" {
		t.Fatalf("the status page has no deactivation form")
	}

	type pageCase struct {
		name   string
		req    func() *response
		status int
		// text must be shown, escaped.
		text []string
	}
	form := func(b *browser, role string, change url.Values) func() *response {
		return func() *response {
			f := b.activationForm(site, role, "/")
			for k, v := range change {
				f[k] = v
			}
			return b.postForm(site+"/.jit/activate", f)
		}
	}
	get := func(b *browser, p string) func() *response { return func() *response { return b.get(site + p) } }
	cases := []pageCase{
		{"activation page", get(a, activationPath(roleAdmin, "/admin")), http.StatusOK, nil},
		{"activation page with markup in return", get(a, activationPath(roleAdmin, `/"><script>alert(1)</script>`)), http.StatusOK, []string{`/"><script>alert(1)</script>`}},
		{"activation form re-rendered: markup in justification and ticket", form(a, "ticketed", url.Values{
			"justification": {xssScript + " " + xssAttr}, "ticket": {xssAttr}, "duration": {"forever"}}), http.StatusBadRequest,
			[]string{xssScript + " " + xssAttr}},
		{"activation form re-rendered: markup in a ticket that does not match", form(a, "ticketed", url.Values{
			"justification": {"x"}, "ticket": {xssScript + "\n"}, "code": {"000000"}}), http.StatusBadRequest, nil},
		{"activation form re-rendered: markup in duration", form(a, "ticketed", url.Values{"ticket": {"T-1"}, "duration": {xssScript}}), http.StatusBadRequest, nil},
		{"activation refused for CSRF", form(a, roleAdmin, url.Values{"csrf": {"x"}, "justification": {xssAttr}}), http.StatusForbidden, []string{xssAttr}},
		{"status page with markup in justification and ticket", get(a, "/.jit/"), http.StatusOK, []string{"why: " + xssScript, xssAttr}},
		{"unknown role with markup", get(a, "/.jit/activate?role="+url.QueryEscape(xssScript)), http.StatusNotFound, []string{xssScript}},
		{"unknown page with markup", get(a, "/.jit/"+url.PathEscape(xssSVG)), http.StatusNotFound, []string{xssSVG}},
		{"deactivate by GET", get(a, "/.jit/deactivate?session="+sid), http.StatusMethodNotAllowed, nil},
		{"deactivate an unknown session", func() *response {
			return a.postForm(site+"/.jit/deactivate", url.Values{"session": {xssScript}, "csrf": {csrf}})
		}, http.StatusNotFound, nil},
		{"deactivate with a bad form", func() *response {
			return a.postForm(site+"/.jit/deactivate", url.Values{"session": {sid, sid}, "csrf": {csrf}})
		}, http.StatusBadRequest, nil},
		{"JWKS", get(a, "/.jit/jwks.json"), http.StatusOK, nil},
		{"style sheet", get(a, "/.jit/style.css"), http.StatusOK, nil},
		{"no identity on a page", get(e.browser(""), "/.jit/"), http.StatusUnauthorized, nil},
		{"no identity at the gate", get(e.browser(""), "/admin"), http.StatusUnauthorized, nil},
		{"not eligible at the gate", get(e.headerUser("carol"), "/admin"), http.StatusForbidden, nil},
		{"not eligible on the activation page", get(e.headerUser("carol"), activationPath(roleAdmin, "/")), http.StatusForbidden, nil},
	}
	for _, name := range []string{xssScript, xssAttr, xssSVG} {
		u := e.headerUser(name)
		eligible := name != xssSVG
		cases = append(cases,
			pageCase{"status page of user " + name, get(u, "/.jit/"), http.StatusOK, []string{name}},
			pageCase{"gate page of user " + name, get(u, "/admin"), http.StatusForbidden, []string{name}},
			pageCase{"unknown page of user " + name, get(u, "/.jit/nope"), http.StatusNotFound, nil},
		)
		if eligible {
			cases = append(cases,
				pageCase{"activation page of user " + name, get(u, activationPath("ticketed", "/")), http.StatusOK, []string{name}},
				pageCase{"re-rendered form of user " + name, form(u, "ticketed", url.Values{"ticket": {""}}), http.StatusBadRequest, []string{name}},
			)
		} else {
			cases = append(cases, pageCase{"activation page of ineligible user " + name, get(u, activationPath("ticketed", "/")), http.StatusForbidden, []string{name}})
		}
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := e.up.count()
			r := tc.req()
			wantStatus(t, r, tc.status, tc.name)
			wantPageHeaders(t, r, tc.name)
			wantInert(t, r, tc.name, tc.text...)
			wantNoUpstream(t, e.up, before, tc.name)
		})
	}
}

// ---------------------------------------------------------------------------
// Class 9: log injection.

func TestSecurityClass09LogInjection(t *testing.T) {
	e := newEnv(t, envOptions{JitOptions: ticketRole})
	site := e.site(0)
	alice, bob := e.enroll("alice"), e.enroll("bob")

	const forgedSID = "FORGED-SESSION-ID"
	fake := `{"level":"info","ts":1700000000,"logger":"http.handlers.jit.audit","msg":"activation_succeeded","event":"activation_succeeded","user":"mallory","role":"console-admin","session_id":"` + forgedSID + `"}`
	// Four copies of the forged line (the justification is bounded to 1000 characters).
	payload := "checking the console\n" + fake + "\r\n" + fake + "\r" + fake + "\u2028\u0085\x00\x1b[2K" + fake

	var aliceToken string
	cases := []struct {
		name string
		do   func(t *testing.T)
	}{
		{"justification of a successful activation", func(t *testing.T) {
			aliceToken = activateWith(t, e.browser("alice"), site, roleAdmin, "/", alice.next(t), url.Values{"justification": {payload}})
		}},
		{"justification and ticket of a refused activation", func(t *testing.T) {
			r := e.browser("bob").activate(site, "ticketed", "/", "000000", url.Values{"justification": {payload}, "ticket": {"T-1\n" + fake}})
			wantStatus(t, r, http.StatusBadRequest, "a ticket with a line break")
		}},
		{"user agent with Unicode line separators, activation and access", func(t *testing.T) {
			ua := withHeader("User-Agent", "Mozilla/5.0 \u2028"+fake+"\u2029"+fake+"\u0085"+fake)
			b := e.browser("bob")
			f := b.activationForm(site, roleAdmin, "/")
			f.Set("justification", "integration test: user agent")
			f.Set("code", bob.next(t))
			r := b.postForm(site+"/.jit/activate", f, ua)
			if wantStatus(t, r, http.StatusSeeOther, "activation") {
				wantStatus(t, b.get(site+adminURI, ua), http.StatusOK, "access")
			}
		}},
		{"user agent with CR LF on the wire", func(t *testing.T) {
			for _, eol := range []string{"\r\n", "\n", "\r"} {
				raw := "GET " + adminURI + " HTTP/1.1\r\nHost: " + strings.TrimPrefix(site, "http://") + "\r\n" +
					"Authorization: Basic " + base64.StdEncoding.EncodeToString([]byte("alice:"+password("alice"))) + "\r\n" +
					"User-Agent: x" + eol + fake + "\r\n" + "Cookie: " + cookieName + "=" + aliceToken + "\r\nConnection: close\r\n\r\n"
				status := rawHTTP(t, site, raw)
				if status == http.StatusOK {
					t.Logf("a user agent followed by %q and a JSON line was accepted as a separate (ignored) header", eol)
				}
			}
		}},
		{"request URI", func(t *testing.T) {
			u := adminURI + "&q=" + url.QueryEscape("\n"+fake) + "&r=%0d%0a" + url.PathEscape(fake)
			wantStatus(t, e.browser("alice").raw(http.MethodGet, site+u, withBasicAuth("alice"), withToken(aliceToken)), http.StatusOK, "access")
			wantStatus(t, e.browser("carol").get(site+u), http.StatusForbidden, "access denied")
		}},
		{"operator's by and reason", func(t *testing.T) {
			e.adminOK(http.MethodDelete, "/jit/sessions/"+sessionID(t, aliceToken)+"?by="+url.QueryEscape("ops\n"+fake)+"&reason="+url.QueryEscape("r\r\n"+fake), nil)
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, tc.do)
	}

	// Let the last events reach the file.
	if aliceToken == "" {
		t.Fatalf("alice's activation failed; the rest depends on it")
	}
	e.waitEvent(match{"event": "revoked", "session_id": sessionID(t, aliceToken)})
	raw := e.auditRaw()
	lines := strings.Split(strings.TrimRight(raw, "\n"), "\n")
	if len(lines) < 8 {
		t.Fatalf("the audit log has only %d lines:\n%s", len(lines), raw)
	}
	for i, line := range lines {
		var obj map[string]any
		if err := json.Unmarshal([]byte(line), &obj); err != nil {
			t.Errorf("audit line %d is not one JSON object: %v: %.300q", i+1, err, line)
			continue
		}
		if obj["event"] == nil {
			t.Errorf("audit line %d has no event: %.300s", i+1, line)
		}
		if strings.HasPrefix(line, `{"level":"info","ts":1700000000`) || obj["session_id"] == forgedSID || obj["user"] == "mallory" {
			t.Errorf("product bug: audit line %d is the forged event: %.300s", i+1, line)
		}
	}
	if strings.Contains(raw, `"user":"mallory"`) {
		t.Errorf("product bug: the forged event's fields appear unescaped in the audit log")
	}
	// The injected text is kept, as a field value.
	ev := e.waitEvent(match{"event": "activation_succeeded", "user": "alice"})
	if ev != nil && ev.str("justification") != strings.TrimSpace(payload) {
		t.Errorf("the justification field is %.200q, want the submitted text exactly", ev.str("justification"))
	}
	if ev := e.waitEvent(match{"event": "activation_failed", "user": "bob", "reason": "ticket_invalid"}); ev != nil && !strings.Contains(ev.str("ticket"), "\n"+fake) {
		t.Errorf("the ticket field is %.200q, want the submitted text", ev.str("ticket"))
	}
}

// rawHTTP writes raw bytes to the site and returns the answer's status (0 if none).
func rawHTTP(t *testing.T, site, raw string) int {
	t.Helper()
	c, err := net.DialTimeout("tcp", strings.TrimPrefix(site, "http://"), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// ---------------------------------------------------------------------------
// Class 10: bounded work per request.

func TestSecurityClass10DenialOfService(t *testing.T) {
	e := newEnv(t, envOptions{JitOptions: ticketRole})
	site := e.site(0)
	alice, bob := e.enroll("alice"), e.enroll("bob")
	key := e.signingKey(t)
	atk := e.browser("")

	timed := func(t *testing.T, what string, limit time.Duration, f func() *response) *response {
		t.Helper()
		start := time.Now()
		r := f()
		if d := time.Since(start); d > limit {
			t.Errorf("%s took %s, want under %s", what, d.Round(time.Millisecond), limit)
		}
		return r
	}

	t.Run("cookie of 5 KiB", func(t *testing.T) {
		for _, c := range []struct{ name, value string }{
			{"base64url", strings.Repeat("A", 5<<10)},
			{"three parts", strings.Repeat("A", 2<<10) + "." + strings.Repeat("B", 2<<10) + "." + strings.Repeat("C", 1<<10)},
			{"arbitrary bytes", strings.Repeat("%ff{}\"\\", 5<<10/7)},
		} {
			for _, sh := range allShapes {
				before := e.up.count()
				r := timed(t, c.name, 2*time.Second, func() *response {
					return sendToken(atk, sh, site, "alice", "", withCookieHeader(cookieName+"="+c.value))
				})
				wantToActivation(t, e, r, before, shapePath(sh), string(sh)+" with a 5 KiB cookie ("+c.name+")")
			}
		}
		atk.accept = "application/json"
		r := sendToken(atk, shapeGET, site, "alice", "", withCookieHeader(cookieName+"="+strings.Repeat("A", 5<<10)))
		atk.accept = "text/html"
		wantStatus(t, r, http.StatusUnauthorized, "an API client with a 5 KiB cookie")
	})

	t.Run("floods of malformed and forged tokens", func(t *testing.T) {
		_, claims := tokenParts(t, e.browser("carol").mustActivate(site, roleViewer, "/", e.enroll("carol"), nil))
		malformed := func(i int) string {
			switch i % 5 {
			case 0:
				return fmt.Sprintf("garbage-%d", i)
			case 1:
				return strings.Repeat("x.", i%7+3) + "y"
			case 2:
				return fmt.Sprintf("%x.%x.%x", i, i*i, i*i*i)
			case 3:
				return "eyJ" + strings.Repeat("A", i) + ".." + "sig"
			}
			return fmt.Sprintf("{\"n\":%d}", i)
		}
		forged := func(i int) string {
			c := cloneWith(claims, func(c map[string]any) {
				c["sub"], c["role"], c["sid"] = "alice", roleAdmin, fmt.Sprintf("forged-%03d", i)
			})
			sig := make([]byte, ed25519.SignatureSize)
			_, _ = rand.Read(sig)
			return b64json(t, key.header()) + "." + b64json(t, c) + "." + base64.RawURLEncoding.EncodeToString(sig)
		}
		for _, flood := range []struct {
			name  string
			token func(int) string
		}{{"100 malformed cookies", malformed}, {"100 well-formed forged tokens", forged}} {
			t.Run(flood.name, func(t *testing.T) {
				before := e.up.count()
				start := time.Now()
				for i := range 100 {
					r := atk.raw(http.MethodGet, site+adminURI, withBasicAuth("alice"), withToken(flood.token(i)))
					if r.StatusCode != http.StatusFound {
						t.Fatalf("token %d of the flood: want 302, got %s", i, r)
					}
				}
				took := time.Since(start)
				t.Logf("%s refused in %s (%s each)", flood.name, took.Round(time.Millisecond), (took / 100).Round(time.Microsecond))
				if took > 15*time.Second {
					t.Errorf("%s took %s", flood.name, took)
				}
				wantNoUpstream(t, e.up, before, flood.name)
			})
		}
		// A real session still works afterwards.
		b := e.browser("alice")
		token := b.mustActivate(site, roleAdmin, adminURI, alice, nil)
		wantAdmitted(t, e, b, "alice", token, sessionID(t, token), "a real session after the floods")
	})

	t.Run("forms", func(t *testing.T) {
		b := e.browser("alice")
		big := strings.Repeat("x", 17<<10)
		f := b.activationForm(site, roleAdmin, "/")
		f.Set("justification", big)
		f.Set("code", "000000")
		r := b.postForm(site+"/.jit/activate", f)
		wantStatus(t, r, http.StatusBadRequest, "an activation form over 16 KiB")
		many := url.Values{}
		for i := range 3000 {
			many.Set(fmt.Sprintf("f%d", i), "v")
		}
		wantStatus(t, b.postForm(site+"/.jit/activate", many), http.StatusBadRequest, "an activation form of 3000 fields")
		wantStatus(t, b.postForm(site+"/.jit/deactivate", url.Values{"session": {"x"}, "csrf": {"x"}, "pad": {big}}), http.StatusBadRequest, "a deactivation form over 16 KiB")

		for _, tc := range []struct {
			name, role string
			fields     url.Values
			status     int
			reason     string
		}{
			{"justification of 1001 characters", roleAdmin, url.Values{"justification": {strings.Repeat("é", 1001)}}, http.StatusBadRequest, "justification_too_long"},
			{"justification of 1000 characters", roleAdmin, url.Values{"justification": {strings.Repeat("é", 1000)}}, http.StatusSeeOther, ""},
			{"ticket of 129 characters", "ticketed", url.Values{"ticket": {strings.Repeat("T", 129)}}, http.StatusBadRequest, "ticket_invalid"},
			{"ticket of 128 characters", "ticketed", url.Values{"ticket": {strings.Repeat("T", 128)}}, http.StatusSeeOther, ""},
		} {
			t.Run(tc.name, func(t *testing.T) {
				u, who := alice, "alice"
				if tc.role == "ticketed" {
					u, who = bob, "bob"
				}
				code := "000000"
				if tc.status == http.StatusSeeOther {
					code = u.next(t)
				}
				r := e.browser(who).activate(site, tc.role, "/", code, tc.fields)
				wantStatus(t, r, tc.status, tc.name)
				if tc.reason != "" {
					e.waitEvent(match{"event": "activation_failed", "user": who, "reason": tc.reason})
				}
			})
		}
	})

	t.Run("user names over 256 bytes", func(t *testing.T) {
		h := newHeaderIdentityEnv(t)
		hs := h.site(0)
		for _, tc := range []struct {
			name, user string
			status     int
		}{
			{"256 bytes", strings.Repeat("u", 256), http.StatusForbidden},
			{"257 bytes", strings.Repeat("u", 257), http.StatusUnauthorized},
			{"129 two-byte characters (258 bytes)", strings.Repeat("é", 129), http.StatusUnauthorized},
			{"4 KiB", strings.Repeat("u", 4<<10), http.StatusUnauthorized},
		} {
			t.Run(tc.name, func(t *testing.T) {
				b := h.headerUser(tc.user)
				for _, sh := range allShapes {
					before := h.up.count()
					wantStatus(t, b.send(sh, hs+shapePath(sh), withHeader("X-Test-User", tc.user)), tc.status, string(sh))
					wantNoUpstream(t, h.up, before, string(sh))
				}
				for _, p := range []string{"/.jit/", activationPath(roleAdmin, "/")} {
					want := tc.status
					if want == http.StatusForbidden && p == "/.jit/" {
						want = http.StatusOK
					}
					wantStatus(t, b.get(hs+p), want, p)
				}
			})
		}
	})
}

// ---------------------------------------------------------------------------
// Fail-closed under injected faults.

var (
	faultsOnce sync.Once
	faultsBin  string
	faultsErr  error
)

// faultsBinary builds ./cmd/caddy with the jitfaults tag once: its gate panics on a
// request with the header X-Jit-Fault: panic (caddymodule/faults_jitfaults.go).
func faultsBinary(t *testing.T) string {
	t.Helper()
	faultsOnce.Do(func() {
		faultsBin = filepath.Join(binDir, "caddy-jitfaults")
		start := time.Now()
		cmd := exec.Command("go", "build", "-tags", "jitfaults", "-o", faultsBin, "./cmd/caddy")
		cmd.Dir = moduleRoot
		cmd.Env = os.Environ()
		if out, err := cmd.CombinedOutput(); err != nil {
			faultsErr = fmt.Errorf("go build -tags jitfaults: %v\n%s", err, out)
			return
		}
		t.Logf("built %s in %s", faultsBin, time.Since(start).Round(time.Millisecond))
	})
	if faultsErr != nil {
		t.Fatal(faultsErr)
	}
	return faultsBin
}

func TestFailClosedUnderInjectedFaults(t *testing.T) {
	const maxStaleness = 3 * time.Second
	e := newEnv(t, envOptions{
		Binary:     faultsBinary(t),
		JitOptions: "\t\tsync_interval 1s\n\t\tmax_staleness 3s",
		Sites: []siteSpec{
			{Auth: true, Jit: "\tjit " + roleAdmin},
			{Auth: false, Jit: "\tjit " + roleAdmin},
		},
	})
	site, noAuth := e.site(0), e.site(1)
	alice := e.enroll("alice")
	b := e.browser("alice")
	token := b.mustActivate(site, roleAdmin, adminURI, alice, nil)
	sid := sessionID(t, token)
	fault := withHeader("X-Jit-Fault", "panic")

	t.Run("a panic in the gate", func(t *testing.T) {
		for _, tc := range []struct{ name, token string }{{"without a session", ""}, {"with a valid session", token}} {
			t.Run(tc.name, func(t *testing.T) {
				for _, sh := range allShapes {
					before := e.up.count()
					r := sendToken(b, sh, site, "alice", tc.token, fault)
					wantStatus(t, r, http.StatusServiceUnavailable, string(sh)+" with a panic")
					if c := setCookie(r, cookieName); c != nil {
						t.Errorf("%s: a panic set a cookie: %s", sh, r)
					}
					wantNoUpstream(t, e.up, before, string(sh)+" with a panic")
				}
			})
		}
		// The same requests without the fault pass: the panic alone refused them.
		for _, sh := range allShapes {
			before := e.up.count()
			wantPassedClean(t, e, sendToken(b, sh, site, "alice", token), sh, before, "alice", sid, token, string(sh)+" without the fault")
		}
		e.waitEvent(match{"event": "access_denied", "reason": "internal_error"})
	})

	t.Run("a panic on the pages", func(t *testing.T) {
		code := alice.next(t)
		f := b.activationForm(site, roleAdmin, "/")
		f.Set("justification", "integration test: a panic on the pages")
		f.Set("code", code)
		st := formFields(t, b.get(site+"/.jit/").Body, "/.jit/deactivate")
		before := e.up.count()
		for _, tc := range []struct {
			name string
			r    func() *response
		}{
			{"GET /.jit/activate", func() *response { return b.get(site+activationPath(roleAdmin, "/"), fault) }},
			{"POST /.jit/activate with a right code", func() *response { return b.postForm(site+"/.jit/activate", f, fault) }},
			{"GET /.jit/", func() *response { return b.get(site+"/.jit/", fault) }},
			{"GET /.jit/jwks.json", func() *response { return b.get(site+"/.jit/jwks.json", fault) }},
			{"POST /.jit/deactivate", func() *response {
				return b.postForm(site+"/.jit/deactivate", url.Values{"session": {sid}, "csrf": {st.Get("csrf")}}, fault)
			}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				r := tc.r()
				wantStatus(t, r, http.StatusServiceUnavailable, tc.name)
				if c := setCookie(r, cookieName); c != nil {
					t.Errorf("a panic set a cookie: %s", r)
				}
			})
		}
		wantNoUpstream(t, e.up, before, "the pages")
		if ss := e.sessions("?user=alice"); len(ss) != 1 || ss[0].ID != sid {
			t.Errorf("after the panics alice's sessions are %+v, want %s alone", ss, sid)
		}
		wantAdmitted(t, e, b, "alice", token, sid, "the session after a panicking deactivation")
		// The panic came before the code was looked at.
		activateWith(t, b, site, roleAdmin, "/", code, nil)
	})

	t.Run("no identity", func(t *testing.T) {
		anon := e.browser("")
		for _, sh := range allShapes {
			before := e.up.count()
			wantStatus(t, anon.send(sh, noAuth+shapePath(sh), withBasicAuth("alice"), withToken(token)), http.StatusUnauthorized, string(sh))
			wantNoUpstream(t, e.up, before, string(sh))
		}
	})

	storage := e.data.StorageDir
	t.Run("storage unreachable during activation", func(t *testing.T) {
		// The long form of this, with max_staleness, is TestStorageOutage.
		bb := e.browser("bob")
		bob := e.enroll("bob")
		f := bb.activationForm(site, roleAdmin, "/")
		f.Set("justification", "integration test: storage is down")
		f.Set("code", bob.next(t))
		away := storage + ".away"
		if err := os.Rename(storage, away); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(storage, []byte("not a directory\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		r := bb.postForm(site+"/.jit/activate", f)
		if err := os.Remove(storage); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(away, storage); err != nil {
			t.Fatal(err)
		}
		wantStatus(t, r, http.StatusServiceUnavailable, "activation without storage")
		if c := setCookie(r, cookieName); c != nil {
			t.Errorf("an activation without storage set a cookie: %s", r)
		}
		e.waitEvent(match{"event": "activation_failed", "user": "bob", "reason": "storage_unavailable"})
		if !pollUntil(3*time.Second, func() bool { return useToken(b, site, "alice", token).StatusCode == http.StatusOK }) {
			t.Fatalf("the session is refused after the storage came back")
		}
	})

	keyFile := filepath.Join(storage, "jit", "keys", "signing.json")
	t.Run("signing keys corrupted while running", func(t *testing.T) {
		wantAdmitted(t, e, b, "alice", token, sid, "before the corruption")
		if err := os.WriteFile(keyFile, []byte("{garbage"), 0o600); err != nil {
			t.Fatal(err)
		}
		corrupted := time.Now()
		var refusedAt time.Time
		ok := pollUntil(maxStaleness+time.Second+2*slack, func() bool {
			r := useToken(b, site, "alice", token)
			switch r.StatusCode {
			case http.StatusOK:
				return false
			case http.StatusServiceUnavailable:
				refusedAt = time.Now()
				return true
			}
			t.Errorf("with a corrupted key file: want 200 (within max_staleness) or 503, got %s", r)
			return true
		})
		if !ok {
			t.Fatalf("the gate still admits sessions %s after the key file was corrupted (max_staleness %s)", time.Since(corrupted).Round(time.Millisecond), maxStaleness)
		}
		t.Logf("refused %s after the corruption", refusedAt.Sub(corrupted).Round(time.Millisecond))
		// From then on it never passes.
		before := e.up.count()
		for i := range 6 {
			for _, sh := range allShapes {
				wantStatus(t, sendToken(b, sh, site, "alice", token), http.StatusServiceUnavailable, fmt.Sprintf("%s #%d with a corrupted key file", sh, i))
			}
			time.Sleep(250 * time.Millisecond)
		}
		wantNoUpstream(t, e.up, before, "with a corrupted key file")
	})

	t.Run("restart with corrupted signing keys", func(t *testing.T) {
		b.client.CloseIdleConnections()
		e.stop()
		e.launch()
		p := e.proc
		deadline := time.After(20 * time.Second)
		passed := 0
	wait:
		for {
			select {
			case <-p.done:
				break wait
			case <-deadline:
				t.Errorf("product bug: caddy keeps running with a corrupted signing key file")
				break wait
			case <-time.After(200 * time.Millisecond):
				before := e.up.count()
				c := &http.Client{Timeout: time.Second}
				req, _ := http.NewRequest(http.MethodGet, site+adminURI, nil)
				req.SetBasicAuth("alice", password("alice"))
				req.Header.Set("Cookie", cookieName+"="+token)
				if resp, err := c.Do(req); err == nil {
					resp.Body.Close()
					if resp.StatusCode == http.StatusOK || e.up.count() != before {
						passed++
					}
				}
			}
		}
		if passed > 0 {
			t.Errorf("product bug: %d requests passed while caddy started with a corrupted key file", passed)
		}
		select {
		case <-p.done:
			e.proc = nil
			var exit *exec.ExitError
			if !errors.As(p.err, &exit) || exit.ExitCode() == 0 {
				t.Errorf("caddy exited with %v, want a non-zero exit", p.err)
			}
			named := ""
			for line := range strings.Lines(readableLog(e.logs.String())) {
				if strings.Contains(line, "jit/keys/signing.json") {
					named = strings.TrimSpace(line)
				}
			}
			if named == "" {
				t.Errorf("the start-up error does not name the key file jit/keys/signing.json:\n%s", e.logTail(20))
			} else {
				t.Logf("caddy refused to start: %s", named)
			}
		default:
		}
	})
}
