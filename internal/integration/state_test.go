package integration

import (
	"encoding/json"
	"net/http"
	"path/filepath"
	"testing"
	"time"
)

// Durable and shared state: a cluster of two instances on one storage, config reloads,
// the verified-token cache, live connections, key rotation and storage outages.

// syncOptions is the jit option body that sets a one-second revocation sync.
const syncOptions = "\t\tsync_interval 1s"

// slack absorbs scheduling delays on a busy two-core machine in the timing bounds.
const slack = 500 * time.Millisecond

// clusterHost is the name both instances of a cluster serve.
//
// A session's audience is its site's origin: the request's scheme and host name with
// the port of the listener that took the connection, so that a token made for one site
// is refused by every other. Behind a load balancer every instance answers for one
// public origin, but here each instance listens on a port of its own; so both sites
// say so with `audience http://console.test`, as an operator whose instances listen on
// other ports than the public address would. Each site is `http://console.test:PORT`
// bound to 127.0.0.1, and the tests dial 127.0.0.1:PORT with `Host: console.test`. The
// cookie jar keys cookies by 127.0.0.1, which ignores ports, so one browser carries its
// cookie to both instances, as it would through the load balancer.
const clusterHost = "console.test"

func clusterSite() siteSpec {
	return siteSpec{Host: clusterHost, Bind: "127.0.0.1", Auth: true,
		Jit: "\tjit " + roleAdmin + " {\n\t\taudience http://" + clusterHost + "\n\t}"}
}

// newCluster makes two instances on one storage directory; they are not started.
func newCluster(t *testing.T, jitOptions string) (a, b *env) {
	t.Helper()
	storage := filepath.Join(t.TempDir(), "shared-storage")
	opts := envOptions{JitOptions: jitOptions, StorageDir: storage, Stopped: true}
	opts.Sites = []siteSpec{clusterSite()}
	a = newEnv(t, opts)
	opts.Sites = []siteSpec{clusterSite()}
	b = newEnv(t, opts)
	return a, b
}

// sessionID is the sid claim of a token.
func sessionID(t *testing.T, token string) string {
	t.Helper()
	_, claims := tokenParts(t, token)
	sid, _ := claims["sid"].(string)
	if sid == "" {
		t.Fatalf("the token has no sid claim: %v", claims)
	}
	return sid
}

// keyID is the kid header of a token.
func keyID(t *testing.T, token string) string {
	t.Helper()
	header, _ := tokenParts(t, token)
	kid, _ := header["kid"].(string)
	if kid == "" {
		t.Fatalf("the token has no kid header: %v", header)
	}
	return kid
}

// withToken sends the token as our cookie (and nothing from the jar, if used with raw).
func withToken(token string) reqOption { return withCookieHeader(cookieName + "=" + token) }

// useToken sends one request with the token alone (no jar), authenticated as user.
func useToken(b *browser, site, user, token string) *response {
	b.t.Helper()
	return b.raw(http.MethodGet, site+adminURI, withBasicAuth(user), withToken(token))
}

// wantAdmitted checks that a request with the token reached the upstream under the
// session sid.
func wantAdmitted(t *testing.T, e *env, b *browser, user, token, sid, what string) bool {
	t.Helper()
	before := e.up.count()
	r := useToken(b, e.site(0), user, token)
	if !wantStatus(t, r, http.StatusOK, what) {
		return false
	}
	if n := e.up.count(); n != before+1 {
		t.Errorf("%s: the upstream got %d requests, want 1", what, n-before)
		return false
	}
	if got := e.up.last(t).Header.Get("X-Jit-Session"); got != sid {
		t.Errorf("%s: upstream X-Jit-Session=%q, want %q", what, got, sid)
		return false
	}
	return true
}

// wantRefused checks that a request with the token is sent to activation and never
// reaches the upstream.
func wantRefused(t *testing.T, e *env, b *browser, user, token, what string) {
	t.Helper()
	before := e.up.count()
	wantActivationRedirect(t, useToken(b, e.site(0), user, token), roleAdmin, adminURI)
	wantNoUpstream(t, e.up, before, what)
}

// pollUntil calls f every 50 ms until it returns true or timeout has passed; it
// returns whether f succeeded.
func pollUntil(timeout time.Duration, f func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if f() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// jwksKids lists the ids of the session signing keys (use "sig") of a site's JWKS; it
// fails the test unless the set also holds exactly one audit key (use "audit").
func jwksKids(t *testing.T, b *browser, site string) []string {
	t.Helper()
	r := b.get(site + "/.jit/jwks.json")
	if !wantStatus(t, r, http.StatusOK, "GET /.jit/jwks.json") {
		t.FailNow()
	}
	var set struct {
		Keys []struct {
			Kid string `json:"kid"`
			Kty string `json:"kty"`
			Crv string `json:"crv"`
			Use string `json:"use"`
		} `json:"keys"`
	}
	if err := json.Unmarshal([]byte(r.Body), &set); err != nil {
		t.Fatalf("the JWKS is not JSON: %v: %s", err, r.Body)
	}
	var kids []string
	auditKeys := 0
	for _, k := range set.Keys {
		if k.Kty != "OKP" || k.Crv != "Ed25519" {
			t.Errorf("JWKS key %q is %s/%s, want OKP/Ed25519", k.Kid, k.Kty, k.Crv)
		}
		switch k.Use {
		case "audit":
			auditKeys++
		case "sig":
			kids = append(kids, k.Kid)
		default:
			t.Errorf("JWKS key %q has use %q, want sig or audit", k.Kid, k.Use)
		}
	}
	if auditKeys != 1 {
		t.Errorf("the JWKS holds %d audit keys, want 1: %s", auditKeys, r.Body)
	}
	return kids
}
