package integration

import (
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"testing"
	"time"
)

// 3. A revocation through the admin API refuses the very next request, although the
// token is in the verified-token cache.
func TestRevokedSessionRefusedAtOnceAlthoughCached(t *testing.T) {
	e := newEnv(t, envOptions{})
	site := e.site(0)
	alice := e.enroll("alice")
	b := e.browser("alice")
	token := b.mustActivate(site, roleAdmin, adminURI, alice, nil)
	sid := sessionID(t, token)

	// Twice, so the second is surely served from the cache.
	wantAdmitted(t, e, b, "alice", token, sid, "first request under the session")
	wantAdmitted(t, e, b, "alice", token, sid, "second request under the session")
	if ss := e.sessions("?user=alice"); len(ss) != 1 || ss[0].ID != sid || ss[0].Revoked {
		t.Fatalf("GET /jit/sessions?user=alice: %+v, want the one active session %s", ss, sid)
	}

	e.revoke(sid)
	hits := e.up.count()
	wantActivationRedirect(t, b.get(site+adminURI), roleAdmin, adminURI)
	b.accept = "application/json"
	r := b.get(site + adminURI)
	if wantStatus(t, r, http.StatusUnauthorized, "API client right after the revocation") && !strings.Contains(r.Body, `"activation_required"`) {
		t.Errorf("the 401 is not the activation_required JSON: %s", r)
	}
	wantNoUpstream(t, e.up, hits, "the revoked session")
	ev := e.waitEvent(match{"event": "revoked", "session_id": sid, "user": "alice"})
	if ev != nil && !strings.Contains(ev.str("by"), "integration") {
		t.Errorf("the revoked event does not say who revoked it: %v", ev)
	}
	if ss := e.sessions("?user=alice"); len(ss) != 0 {
		t.Errorf("GET /jit/sessions still lists the revoked session: %+v", ss)
	}
	// A second revocation of the ended session is harmless.
	if status, body := e.admin(http.MethodDelete, "/jit/sessions/"+sid); status != http.StatusOK {
		t.Errorf("revoking the ended session again: %d %s", status, body)
	}
	// An id with no record is revoked all the same: a token may carry it.
	if status, body := e.admin(http.MethodDelete, "/jit/sessions/AAAAAAAAAAAAAAAAAAAAAA"); status != http.StatusOK || !strings.Contains(body, `"revoked":true`) {
		t.Errorf("revoking an id with no record: want 200 listing it revoked, got %d %s", status, body)
	}
}

// 4. Open WebSockets and streams end with their session: at expiry, by the sync loop,
// and at revocation, at once.
func TestWebSocketClosedAtExpiryAndRevocation(t *testing.T) {
	e := newEnv(t, envOptions{
		JitOptions: syncOptions,
		Sites:      []siteSpec{{Auth: true, Jit: "\tjit " + roleAdmin, Proxy: "\t\tflush_interval -1"}},
	})
	site := e.site(0)

	t.Run("expiry", func(t *testing.T) {
		alice := e.enroll("alice")
		token := e.browser("alice").mustActivate(site, roleAdmin, "/", alice, url.Values{"duration": {"3s"}})
		exp := tokenExpiry(t, token)
		ws, err := dialWebSocket(t, site, "alice", token)
		if err != nil {
			t.Fatalf("opening a WebSocket under the session: %v", err)
		}
		if !wsEcho(t, ws, "hello before expiry") {
			t.FailNow()
		}
		got := e.up.last(t)
		if got.Path != wsPath || got.Header.Get("X-Jit-User") != "alice" || got.Header.Get("X-Jit-Session") != sessionID(t, token) {
			t.Errorf("the upstream's WebSocket request: %s with X-Jit-User %q X-Jit-Session %q", got.Path, got.Header.Get("X-Jit-User"), got.Header.Get("X-Jit-Session"))
		}
		if strings.Contains(strings.Join(got.Header.Values("Cookie"), ";"), cookieName) {
			t.Errorf("the upstream's WebSocket request carries our cookie")
		}
		// Expiry + one sync interval + 1 s.
		closed := waitWSClosed(t, ws, exp.Add(2*time.Second+slack), "WebSocket at expiry")
		if closed.IsZero() {
			return
		}
		t.Logf("the WebSocket closed %s after the session expired", closed.Sub(exp).Round(time.Millisecond))
		if closed.Before(exp.Add(-100 * time.Millisecond)) {
			t.Errorf("the WebSocket closed %s before the session expired", exp.Sub(closed))
		}
		if _, ok := e.up.waitEnd(wsPath, time.Second); !ok {
			t.Errorf("the upstream's side of the WebSocket stayed open after expiry")
		}
		if _, err := dialWebSocket(t, site, "alice", token); err == nil {
			t.Errorf("a new WebSocket opened with the expired token")
		}
	})

	t.Run("revocation", func(t *testing.T) {
		bob := e.enroll("bob")
		token := e.browser("bob").mustActivate(site, roleAdmin, "/", bob, nil)
		ws, err := dialWebSocket(t, site, "bob", token)
		if err != nil {
			t.Fatalf("opening a WebSocket under the session: %v", err)
		}
		if !wsEcho(t, ws, "hello before revocation") {
			t.FailNow()
		}
		start := time.Now()
		e.revoke(sessionID(t, token))
		closed := waitWSClosed(t, ws, start.Add(2*time.Second), "WebSocket at revocation")
		if closed.IsZero() {
			return
		}
		t.Logf("the WebSocket closed %s after the revocation", closed.Sub(start).Round(time.Millisecond))
		if _, ok := e.up.waitEnd(wsPath, time.Second); !ok {
			t.Errorf("the upstream's side of the WebSocket stayed open after the revocation")
		}
	})

	t.Run("stream", func(t *testing.T) {
		frank := e.enroll("frank")
		token := e.browser("frank").mustActivate(site, roleAdmin, "/", frank, nil)
		s := openStream(t, site, "", "frank", token)
		// A few lines arrive one by one: the stream is live, not buffered.
		for i := 1; i <= 2; i++ {
			select {
			case <-s.lines:
			case <-time.After(2 * time.Second):
				t.Fatalf("line %d of the stream did not arrive within 2s", i)
			}
		}
		start := time.Now()
		e.revoke(sessionID(t, token))
		ended := s.waitEnded(t, start.Add(2*time.Second), "stream at revocation")
		if ended.IsZero() {
			return
		}
		t.Logf("the stream ended %s after the revocation (%v)", ended.Sub(start).Round(time.Millisecond), s.err)
		if end, ok := e.up.waitEnd(streamPath, time.Second); !ok {
			t.Errorf("the upstream still serves the stream of the revoked session")
		} else if end.Lines >= streamLines {
			t.Errorf("the upstream ran the stream to its end (%d lines)", end.Lines)
		}
		// The request streamed under the session for a while: it must be audited like
		// any other, whatever way it ended.
		if !pollUntil(time.Second, func() bool {
			return len(e.events(match{"event": "access", "user": "frank", "uri": streamPath})) > 0
		}) {
			t.Errorf("product bug: no access audit event for the stream that ended at the revocation (reverse_proxy aborts a broken stream with panic(http.ErrAbortHandler), and the gate writes its access event only when next.ServeHTTP returns)")
		}
	})
}

// 5. A key rotation keeps the sessions signed by the old key; new sessions use the
// new key, which another instance learns at its next sync.
func TestKeyRotationKeepsOldSessions(t *testing.T) {
	a, b := newCluster(t, syncOptions)
	a.start()
	b.start()
	siteA, siteB := a.site(0), b.site(0)
	alice := a.enroll("alice")
	ba := a.browser("alice")
	oldToken := ba.mustActivate(siteA, roleAdmin, adminURI, alice, nil)
	oldSID, oldKid := sessionID(t, oldToken), keyID(t, oldToken)
	if kids := jwksKids(t, ba, siteA); !slices.Equal(kids, []string{oldKid}) {
		t.Fatalf("JWKS before the rotation: %v, want [%s]", kids, oldKid)
	}
	wantAdmitted(t, a, ba, "alice", oldToken, oldSID, "the old token before the rotation")

	var rotated struct {
		Kid  string   `json:"kid"`
		Keys []string `json:"keys"`
	}
	a.adminOK(http.MethodPost, "/jit/keys/rotate?by=integration", &rotated)
	if rotated.Kid == "" || rotated.Kid == oldKid || !slices.Equal(rotated.Keys, []string{oldKid, rotated.Kid}) {
		t.Fatalf("POST /jit/keys/rotate answered %+v, want a new kid after %s", rotated, oldKid)
	}
	a.waitEvent(match{"event": "keys_rotated", "kid": rotated.Kid})

	wantAdmitted(t, a, ba, "alice", oldToken, oldSID, "the old token after the rotation")
	if kids := jwksKids(t, ba, siteA); !slices.Equal(kids, rotated.Keys) {
		t.Errorf("JWKS after the rotation: %v, want %v", kids, rotated.Keys)
	}
	bob := a.enroll("bob")
	bb := a.browser("bob")
	newToken := bb.mustActivate(siteA, roleAdmin, adminURI, bob, nil)
	newSID := sessionID(t, newToken)
	if kid := keyID(t, newToken); kid != rotated.Kid {
		t.Errorf("a token made after the rotation has kid %q, want the new key %q", kid, rotated.Kid)
	}
	wantAdmitted(t, a, bb, "bob", newToken, newSID, "the new token on A")

	// B verifies the old token itself (it never saw it, so no cache is involved) …
	wantAdmitted(t, b, ba, "alice", oldToken, oldSID, "the old token on B after the rotation")
	// … and the new one once its sync has read the rotated keyring.
	start := time.Now()
	hits := b.up.count()
	ok := pollUntil(2*time.Second+slack, func() bool {
		return useToken(bb, siteB, "bob", newToken).StatusCode == http.StatusOK
	})
	if !ok {
		t.Fatalf("B does not admit the token signed by the new key %s after 2.5s", rotated.Kid)
	}
	t.Logf("B admitted the new key's token %s after the rotation", time.Since(start).Round(time.Millisecond))
	if n := b.up.count(); n != hits+1 {
		t.Errorf("B's upstream got %d requests while B learned the new key, want 1 (the admitted one)", n-hits)
	}
	if kids := jwksKids(t, ba, siteB); !slices.Equal(kids, rotated.Keys) {
		t.Errorf("B's JWKS after its sync: %v, want %v", kids, rotated.Keys)
	}
}

// 6. When storage is unreachable, activation fails closed, and sessions are refused
// once the revocation set is older than max_staleness; all recovers when it is back.
func TestStorageOutage(t *testing.T) {
	const maxStaleness, syncInterval = 4 * time.Second, time.Second
	e := newEnv(t, envOptions{JitOptions: "\t\tsync_interval 1s\n\t\tmax_staleness 4s"})
	site := e.site(0)
	alice := e.enroll("alice")
	ba := e.browser("alice")
	token := ba.mustActivate(site, roleAdmin, adminURI, alice, nil)
	sid := sessionID(t, token)
	wantAdmitted(t, e, ba, "alice", token, sid, "alice before the outage")
	stream := openStream(t, site, "", "alice", token)
	bob := e.enroll("bob")
	bb := e.browser("bob")
	bobForm := bb.activationForm(site, roleAdmin, adminURI)

	// The outage: a regular file where the storage directory was, so every storage
	// call fails with ENOTDIR (even as root), rather than finding nothing.
	storage := e.data.StorageDir
	away := storage + ".away"
	if err := os.Rename(storage, away); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(storage, []byte("storage is down\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	outage := time.Now()
	restored := false
	restore := func() {
		if restored {
			return
		}
		restored = true
		if err := os.Remove(storage); err != nil {
			t.Error(err)
		}
		if err := os.Rename(away, storage); err != nil {
			t.Error(err)
		}
	}
	t.Cleanup(restore)

	// (a) An activation fails closed: 503, audited, no session.
	bobForm.Set("justification", "integration test: storage is down")
	bobForm.Set("code", bob.next(t))
	r := bb.postForm(site+"/.jit/activate", bobForm)
	wantStatus(t, r, http.StatusServiceUnavailable, "activation while storage is unreachable")
	if c := setCookie(r, cookieName); c != nil && c.Value != "" {
		t.Errorf("an activation without storage set a session cookie: %s", r)
	}
	if !strings.Contains(r.Body, "storage") {
		t.Errorf("the 503 page does not say that storage is unreachable: %s", r)
	}
	e.waitEvent(match{"event": "activation_failed", "user": "bob", "reason": "storage_unavailable"})

	// (b) The session keeps working for a while …
	wantAdmitted(t, e, ba, "alice", token, sid, "alice right after the outage began")
	// … until the revocation set is older than max_staleness.
	hits := e.up.count()
	var stale *response
	ok := pollUntil(maxStaleness+syncInterval+slack, func() bool {
		r := useToken(ba, site, "alice", token)
		if r.StatusCode == http.StatusOK {
			hits++
			return false
		}
		stale = r
		return true
	})
	if !ok {
		t.Fatalf("the gate still admits sessions %s after storage became unreachable (max_staleness %s)", time.Since(outage).Round(time.Millisecond), maxStaleness)
	}
	staleAfter := time.Since(outage)
	t.Logf("the gate refused sessions %s after the outage began", staleAfter.Round(time.Millisecond))
	if staleAfter < maxStaleness-syncInterval-slack {
		t.Errorf("the gate refused sessions after %s, before max_staleness (%s) minus a sync interval", staleAfter, maxStaleness)
	}
	if wantStatus(t, stale, http.StatusServiceUnavailable, "a session with a stale revocation set") {
		if !strings.Contains(stale.Body, "storage") || !strings.Contains(stale.Body, "revoked") {
			t.Errorf("the 503 page does not say why: %s", stale)
		}
		if stale.Header.Get("Retry-After") == "" {
			t.Errorf("the 503 has no Retry-After header")
		}
	}
	ba.accept = "application/json"
	if r := useToken(ba, site, "alice", token); wantStatus(t, r, http.StatusServiceUnavailable, "API client with a stale revocation set") {
		if !strings.Contains(r.Body, `"storage_unavailable"`) {
			t.Errorf("the 503 JSON has no error storage_unavailable: %s", r)
		}
	}
	ba.accept = "text/html"
	wantNoUpstream(t, e.up, hits, "sessions with a stale revocation set")
	e.waitEvent(match{"event": "access_denied", "user": "alice", "reason": "revocations_stale"})
	// A stream opened under the session before the outage is a request under a session
	// the gate no longer trusts: it must end too, or a session revoked elsewhere keeps
	// its open connections for the whole outage.
	if ended := stream.waitEnded(t, time.Now().Add(syncInterval+slack), "a stream under a session once the gate refuses stale sessions"); ended.IsZero() {
		t.Errorf("product gap: requests in flight are not ended when the revocation set goes stale (max_staleness): the stream was still open %s into the outage, after %d lines", time.Since(outage).Round(time.Millisecond), len(stream.lines)+1)
	}

	// (c) Storage is back: the old session works again, and so does activation.
	restore()
	back := time.Now()
	if !pollUntil(3*time.Second, func() bool { return useToken(ba, site, "alice", token).StatusCode == http.StatusOK }) {
		t.Fatalf("alice's session is still refused 3s after storage came back")
	}
	t.Logf("sessions were admitted again %s after storage came back", time.Since(back).Round(time.Millisecond))
	if got := e.up.last(t).Header.Get("X-Jit-Session"); got != sid {
		t.Errorf("after the outage X-Jit-Session=%q, want %q", got, sid)
	}
	if ss := e.sessions("?user=bob"); len(ss) != 0 {
		t.Errorf("the activation refused during the outage left a session: %+v", ss)
	}
	bobToken := bb.mustActivate(site, roleAdmin, adminURI, bob, nil)
	wantAdmitted(t, e, bb, "bob", bobToken, sessionID(t, bobToken), "bob's activation after the outage")
}
