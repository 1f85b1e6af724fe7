package integration

import (
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"maps"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
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
