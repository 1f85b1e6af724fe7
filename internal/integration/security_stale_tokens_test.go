package integration

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"
)

// Class 2, stale tokens (issue 12, finding 6): a token must not outlive what made it
// valid. A token signed with the stored key for years, a token cached before the key
// that signed it was rotated out, a token whose session id was revoked although no
// record of it is stored, and a token cached before a reload shortened its role: each
// is refused on the very next request, cached or not.

// randomSID makes a session id of our shape that no stored session has.
func randomSID(t *testing.T) string {
	t.Helper()
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// staleMinter mints tokens with the newest stored key, from the claims of a real
// token (so that issuer, audience and methods are what the site issues).
type staleMinter struct {
	e      *env
	claims map[string]any
}

// mint signs a token for sid lasting from nbf to exp (Unix seconds), issued now.
func (m staleMinter) mint(t *testing.T, sid string, nbf, exp int64) string {
	t.Helper()
	key := m.e.signingKey(t)
	return signEd(t, key.priv, key.header(), cloneWith(m.claims, func(c map[string]any) {
		c["sid"], c["iat"], c["nbf"], c["exp"] = sid, time.Now().Unix(), nbf, exp
	}))
}

// adminCall calls the admin API and decodes its JSON answer into out (if not nil); it
// reports on t, not on the env's test, so that a failure ends only the subtest.
func adminCall(t *testing.T, e *env, method, path string, out any) bool {
	t.Helper()
	status, body := e.admin(method, path)
	if status != http.StatusOK {
		t.Errorf("admin API %s %s: want 200, got %d %s", method, path, status, body)
		return false
	}
	if out != nil {
		if err := json.Unmarshal([]byte(body), out); err != nil {
			t.Errorf("admin API %s %s: the answer is not JSON: %v: %s", method, path, err, body)
			return false
		}
	}
	return true
}

// rotateUntilDropped rotates the signing keys through e's admin API until the key kid
// is no longer among them, checking before each rotation that admitted() still holds.
func rotateUntilDropped(t *testing.T, e *env, kid string, admitted func()) {
	t.Helper()
	for i := 1; ; i++ {
		if admitted != nil {
			admitted()
		}
		var rotated struct {
			Keys []string `json:"keys"`
		}
		if !adminCall(t, e, http.MethodPost, "/jit/keys/rotate?by=integration", &rotated) {
			t.FailNow()
		}
		if !slices.Contains(rotated.Keys, kid) {
			t.Logf("rotation %d dropped the key %s", i, kid)
			return
		}
		if i == 10 {
			t.Fatalf("ten rotations kept the key %s: %v", kid, rotated.Keys)
		}
	}
}

// wantRefusedFor checks that every request shape with the token is sent to activation,
// reaches nothing, and is audited with the reason.
func wantRefusedFor(t *testing.T, e *env, b *browser, user, token, reason, what string) {
	t.Helper()
	m := match{"event": "access_denied", "user": user, "reason": reason}
	audited := len(e.events(m))
	for _, sh := range allShapes {
		before := e.up.count()
		r := sendToken(b, sh, e.site(0), user, token)
		wantToActivation(t, e, r, before, shapePath(sh), what+" ("+string(sh)+")")
	}
	// One event per request, each with this reason (earlier cases may have left some).
	if !pollUntil(3*time.Second, func() bool { return len(e.events(m)) >= audited+len(allShapes) }) {
		t.Errorf("%s: %d access_denied events with reason %s, want %d more than the %d before", what, len(e.events(m)), reason, len(allShapes), audited)
	}
}

func TestSecurityClass02StaleTokens(t *testing.T) {
	e := newEnv(t, envOptions{JitOptions: syncOptions})
	site := e.site(0)
	pool := e.userPool("alice", "bob", "frank", "r1", "r2", "r3")
	u, code := pool.take(t)
	b := e.browser(u.name)
	real := activateWith(t, b, site, roleAdmin, adminURI, code, nil)
	_, claims := tokenParts(t, real)
	if claims["sub"] != u.name {
		t.Fatalf("test setup: the token's sub is %v, want %s", claims["sub"], u.name)
	}
	m := staleMinter{e: e, claims: claims}
	user := u.name
	now := time.Now().Unix()

	t.Run("a token lasting ten years, made with the stored key, is refused", func(t *testing.T) {
		// Control: the same minting with a lifetime the role allows is admitted, so
		// the refusal below is due to the lifetime alone.
		sid := randomSID(t)
		if !wantAdmitted(t, e, b, user, m.mint(t, sid, now, now+1800), sid, "a minted token lasting 30 minutes") {
			t.FailNow()
		}
		long := m.mint(t, randomSID(t), now, now+10*365*24*3600)
		wantRefusedFor(t, e, b, user, long, "token_lifetime", "a token lasting ten years")
		// Nor does a start far in the past stretch a token past max_duration (1h).
		stretched := m.mint(t, randomSID(t), now-2*3600, now+600)
		wantRefusedFor(t, e, b, user, stretched, "token_lifetime", "a token from two hours ago to ten minutes ahead")
	})

	t.Run("revoking an id with no session record refuses its cached token", func(t *testing.T) {
		for _, how := range []string{"admin API", "caddy jit revoke"} {
			t.Run(how, func(t *testing.T) {
				sid := randomSID(t)
				token := m.mint(t, sid, now, now+1800)
				// Twice, so that the token is surely in the verified-token cache.
				wantAdmitted(t, e, b, user, token, sid, "the minted token, first request")
				wantAdmitted(t, e, b, user, token, sid, "the minted token, second (cached) request")
				if how == "admin API" {
					status, body := e.admin(http.MethodDelete, "/jit/sessions/"+sid+"?by=integration&reason=forged")
					var out struct {
						Sessions []adminSession `json:"sessions"`
					}
					if status != http.StatusOK || json.Unmarshal([]byte(body), &out) != nil ||
						len(out.Sessions) != 1 || out.Sessions[0].ID != sid || !out.Sessions[0].Revoked {
						t.Errorf("DELETE /jit/sessions/%s of an id with no record: got %d %s, want 200 listing it revoked", sid, status, body)
					}
				} else {
					out, err := runCaddy(t, e.dir, "jit", "revoke", sid, "--reason", "forged", "--address", e.adminURL("")[len("http://"):])
					if err != nil || !strings.Contains(out, "Revoked "+sid) {
						t.Errorf("caddy jit revoke %s of an id with no record: %v\n%s", sid, err, out)
					}
				}
				wantRefusedFor(t, e, b, user, token, "token_revoked", "the very next request after the revocation")
				e.waitEvent(match{"event": "revoked", "session_id": sid, "no_record": "true"})
			})
		}
	})

	t.Run("a malformed id is refused with a 400 that names the problem", func(t *testing.T) {
		for _, id := range []string{"short", strings.Repeat("A", 21) + ".", url.PathEscape(strings.Repeat("A", 21) + "/")} {
			status, body := e.admin(http.MethodDelete, "/jit/sessions/"+id)
			if status != http.StatusBadRequest || !strings.Contains(body, "22 characters of base64url") {
				t.Errorf("DELETE /jit/sessions/%s: got %d %s, want 400 naming the shape of a session id", id, status, body)
			}
		}
	})

	t.Run("a revocation of an id with no record survives a restart", func(t *testing.T) {
		sid := randomSID(t)
		adminCall(t, e, http.MethodDelete, "/jit/sessions/"+sid+"?by=integration", nil)
		e.restart()
		wantRefusedFor(t, e, b, user, m.mint(t, sid, now, now+1800), "token_revoked", "after a restart")
	})

	t.Run("a cached token is refused once rotations drop its key", func(t *testing.T) {
		u, code := pool.take(t)
		gb := e.browser(u.name)
		genuine := activateWith(t, gb, site, roleAdmin, adminURI, code, nil)
		gsid := sessionID(t, genuine)
		msid := randomSID(t)
		minted := m.mint(t, msid, now, now+1800)
		kid := keyID(t, genuine)
		if keyID(t, minted) != kid {
			t.Fatalf("test setup: the minted token has kid %s, the session's %s", keyID(t, minted), kid)
		}
		// While the key is held, its tokens stay admitted (and so cached).
		rotateUntilDropped(t, e, kid, func() {
			wantAdmitted(t, e, gb, u.name, genuine, gsid, "the session while its key is held")
			wantAdmitted(t, e, b, user, minted, msid, "the minted token while its key is held")
		})
		wantRefusedFor(t, e, gb, u.name, genuine, "token_signature", "the session after its key was dropped")
		wantRefusedFor(t, e, b, user, minted, "token_signature", "the minted token after its key was dropped")
	})

	// Replacement ends a session: the copy of a replaced token is refused at once, cached
	// or not. And it ends only the browser user's own session: a second browser that
	// carries another user's token (copied, or left by a shared machine) and activates
	// with its own password and code ends nothing of that user's.
	t.Run("a session replaced in its browser is refused at once; another user's token is not ended", func(t *testing.T) {
		u, code := pool.take(t)
		rb := e.browser(u.name)
		old := activateWith(t, rb, site, roleAdmin, adminURI, code, nil)
		sid := sessionID(t, old)
		wantAdmitted(t, e, rb, u.name, old, sid, "the session, first request")
		wantAdmitted(t, e, rb, u.name, old, sid, "the session, second (cached) request")

		other, otherCode := pool.take(t)
		ob := e.browser(other.name)
		ob.setCookie(site, cookieName, old)
		activateWith(t, ob, site, roleAdmin, adminURI, otherCode, nil)
		wantAdmitted(t, e, rb, u.name, old, sid, u.name+"'s session after "+other.name+"'s browser, carrying its token, activated")
		if n := len(e.events(match{"event": "replaced", "session_id": sid})); n != 0 {
			t.Errorf("%d replaced events of %s's session after another user's activation, want none", n, u.name)
		}

		activateWith(t, rb, site, roleAdmin, adminURI, u.next(t), nil)
		wantRefusedFor(t, e, rb, u.name, old, "token_revoked", "the copy of a replaced session's token")
	})

	t.Run("a reload that shortens the role refuses a longer cached session", func(t *testing.T) {
		u, code := pool.take(t)
		rb := e.browser(u.name)
		token := activateWith(t, rb, site, roleAdmin, adminURI, code, url.Values{"duration": {"40m"}})
		sid := sessionID(t, token)
		wantAdmitted(t, e, rb, u.name, token, sid, "the 40-minute session, first request")
		wantAdmitted(t, e, rb, u.name, token, sid, "the 40-minute session, second (cached) request")
		// A later max_duration line in the role overrides the first (1h).
		e.reconfigure(func(d *caddyfileData) { d.ExtraEligible = append(d.ExtraEligible, "r1\n\t\t\tmax_duration 20m") })
		e.reload()
		wantRefusedFor(t, e, rb, u.name, token, "token_lifetime", "the 40-minute session after max_duration became 20m")
	})
}

// TestSecurityClass02StaleTokensCluster: an instance that learns of a rotation from
// storage drops the cached tokens of the keys it lost, as the rotating one does.
func TestSecurityClass02StaleTokensCluster(t *testing.T) {
	a, b := newCluster(t, syncOptions)
	startTogether(a, b)
	alice := a.enroll("alice")
	ba := a.browser("alice")
	token := ba.mustActivate(a.site(0), roleAdmin, adminURI, alice, nil)
	sid, kid := sessionID(t, token), keyID(t, token)
	// B verifies the token itself and caches it.
	wantAdmitted(t, b, ba, "alice", token, sid, "the session on B, first request")
	wantAdmitted(t, b, ba, "alice", token, sid, "the session on B, second (cached) request")

	rotateUntilDropped(t, a, kid, nil)
	start := time.Now()
	hits := b.up.count()
	refused := pollUntil(2*time.Second+slack, func() bool {
		return useToken(ba, b.site(0), "alice", token).StatusCode == http.StatusFound
	})
	if !refused {
		t.Fatalf("B still admits the cached token %s after 2.5s, although A's rotations dropped its key %s", time.Since(start).Round(time.Millisecond), kid)
	}
	t.Logf("B refused the token %s after the rotation (%d requests admitted before B's sync read it)",
		time.Since(start).Round(time.Millisecond), b.up.count()-hits)
	wantRefused(t, b, ba, "alice", token, "the session on B after its sync")
	b.waitEvent(match{"event": "access_denied", "user": "alice", "reason": "token_signature"})
}
