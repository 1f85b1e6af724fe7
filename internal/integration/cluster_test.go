package integration

import (
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/caddy-jit/caddy-jit/internal/testkit"
)

// 1. Two instances on one storage are one system: a session made on one works on the
// other, and a revocation, a used code and a lockout made on one hold on the other.
func TestClusterSharesSessionsRevocationsCodesAndLockouts(t *testing.T) {
	a, b := newCluster(t, syncOptions)
	testClusterShares(t, a, b)
}

// The same cluster on Redis: each instance has storage of its own, and the state in
// one redis-server (issue 15). The revocation sync runs every 20 s only: B refuses a
// session revoked on A within the bound below because A announces the revocation
// (pub/sub), not because B reads it at its interval.
func TestRedisClusterSharesSessionsRevocationsCodesAndLockouts(t *testing.T) {
	r := testkit.StartRedis(t)
	a, b := newRedisCluster(t, r, "\t\tsync_interval 20s\n\t\tmax_staleness 60s")
	testClusterShares(t, a, b)
}

// newRedisCluster makes two instances whose state is in r; they are not started.
func newRedisCluster(t *testing.T, r *testkit.Redis, jitOptions string) (a, b *env) {
	t.Helper()
	opts := envOptions{JitOptions: jitOptions + "\n\t\tstore redis {\n\t\t\taddress " + r.Addr + "\n\t\t}", Stopped: true}
	opts.Sites = []siteSpec{clusterSite()}
	a = newEnv(t, opts)
	opts.Sites = []siteSpec{clusterSite()}
	b = newEnv(t, opts)
	return a, b
}

func testClusterShares(t *testing.T, a, b *env) {
	// Both start at the same moment on an empty storage: one keyring must come of it.
	// Without the storage lock around its creation, each would make its own key within
	// milliseconds and serve it until its first sync a second later, so the JWKS are
	// compared as soon as both are up. (A start-up of about a second means one instance
	// waited for the other's lock: certmagic re-checks a held lock once a second.)
	launched := time.Now()
	startTogether(a, b)
	t.Logf("both instances were up %s after the launch", time.Since(launched).Round(time.Millisecond))
	alice := a.enroll("alice")
	ba := a.browser("alice")
	siteA, siteB := a.site(0), b.site(0)

	kidsA, kidsB := jwksKids(t, ba, siteA), jwksKids(t, ba, siteB)
	if len(kidsA) != 1 || !slices.Equal(kidsA, kidsB) {
		t.Fatalf("instances started together on an empty storage disagree on the signing keys: A %v, B %v; want one and the same key", kidsA, kidsB)
	}

	t.Run("a session made on A works on B", func(t *testing.T) {
		token := ba.mustActivate(siteA, roleAdmin, adminURI, alice, nil)
		if _, claims := tokenParts(t, token); claims["aud"] != "http://"+clusterHost {
			t.Errorf("aud=%v, want http://%s (the name both instances serve)", claims["aud"], clusterHost)
		}
		sid := sessionID(t, token)
		hitsA := a.up.count()
		r := ba.get(siteB + adminURI)
		if !wantStatus(t, r, http.StatusOK, "the session made on A, on B") {
			t.FailNow()
		}
		if got := b.up.last(t).Header.Get("X-Jit-Session"); got != sid {
			t.Errorf("B's upstream X-Jit-Session=%q, want %q", got, sid)
		}
		wantNoUpstream(t, a.up, hitsA, "a request sent to B")
		if ss := b.sessions("?user=alice"); len(ss) != 1 || ss[0].ID != sid {
			t.Errorf("B's admin API lists alice's sessions as %+v, want the one made on A (%s)", ss, sid)
		}

		// A revocation on A: A refuses at once; B within a sync interval (+1 s), even
		// though B has the token in its cache; B's open stream ends too.
		wantAdmitted(t, a, ba, "alice", token, sid, "on A before the revocation")
		stream := openStream(t, siteB, clusterHost, "alice", token)
		start := time.Now()
		a.revoke(sid)
		wantRefused(t, a, ba, "alice", token, "on A right after its revocation")
		var refusedAt time.Time
		ok := pollUntil(2*time.Second+slack, func() bool {
			r := useToken(ba, siteB, "alice", token)
			if r.StatusCode == http.StatusFound {
				refusedAt = time.Now()
				wantActivationRedirect(t, r, roleAdmin, adminURI)
				return true
			}
			// 499: the request was admitted just before the revocation reached B, which
			// then cut it off in flight (Caddy's reverse_proxy reports a cancelled request
			// so); nothing more was served. The next poll must be refused.
			if r.StatusCode != http.StatusOK && r.StatusCode != 499 {
				t.Errorf("on B while the revocation syncs: want 200, 302 or 499 (cut off in flight), got %s", r)
			}
			return false
		})
		if !ok {
			t.Fatalf("B still admits the session %s more than 2.5s after A revoked it", sid)
		}
		t.Logf("B refused the revoked session %s after the revocation on A", refusedAt.Sub(start).Round(time.Millisecond))
		wantRefused(t, b, ba, "alice", token, "on B after the sync")
		ended := stream.waitEnded(t, start.Add(2*time.Second+slack), "B's stream under the session revoked on A")
		if !ended.IsZero() {
			t.Logf("B's stream ended %s after the revocation on A", ended.Sub(start).Round(time.Millisecond))
		}
		if end, ok := b.up.waitEnd(streamPath, time.Second); !ok {
			t.Errorf("B's upstream still serves the stream of the revoked session")
		} else if end.Lines >= streamLines {
			t.Errorf("B's upstream ran the stream to its end (%d lines) instead of being cut off", end.Lines)
		}
	})

	t.Run("a code used on A is refused on B", func(t *testing.T) {
		bob := a.enroll("bob")
		code := bob.next(t)
		r := a.browser("bob").activate(siteA, roleAdmin, "/", code, nil)
		if !wantStatus(t, r, http.StatusSeeOther, "bob's code on A") {
			t.FailNow()
		}
		r = b.browser("bob").activate(siteB, roleAdmin, "/", code, nil)
		wantStatus(t, r, http.StatusBadRequest, "the same code on B")
		if c := setCookie(r, cookieName); c != nil && c.Value != "" {
			t.Errorf("B accepted a code already used on A and set a session: %s", r)
		}
		b.waitEvent(match{"event": "activation_failed", "user": "bob", "reason": "totp_replayed"})
	})

	t.Run("a lockout made on A holds on B until cleared on B", func(t *testing.T) {
		locky := a.enroll("locky")
		lb := a.browser("locky")
		for i := 1; i <= 5; i++ {
			r := lb.activate(siteA, roleAdmin, "/", locky.wrong(t), nil)
			if i == 5 {
				wantStatus(t, r, http.StatusTooManyRequests, "the fifth wrong code on A")
			}
		}
		// The right code on B: refused before it is looked at, so it is not used up.
		code := locky.next(t)
		r := b.browser("locky").activate(siteB, roleAdmin, "/", code, nil)
		wantStatus(t, r, http.StatusTooManyRequests, "the right code on B while locked out on A")
		if c := setCookie(r, cookieName); c != nil && c.Value != "" {
			t.Errorf("B set a session for a user locked out on A: %s", r)
		}
		b.waitEvent(match{"event": "activation_failed", "user": "locky", "reason": "locked_out"})

		var out map[string]string
		b.adminOK(http.MethodPost, "/jit/lockouts/locky/clear?by=integration&reason=test", &out)
		if out["result"] != "unlocked" {
			t.Errorf("POST /jit/lockouts/locky/clear answered %v", out)
		}
		b.waitEvent(match{"event": "unlocked", "user": "locky"})
		// The form comes from B, the POST goes to A, as a load balancer may do: the
		// CSRF secret is shared too.
		f := b.browser("locky").activationForm(siteB, roleAdmin, adminURI)
		f.Set("justification", "integration test: after the lockout")
		f.Set("code", code)
		lb = a.browser("locky")
		r = lb.postForm(siteA+"/.jit/activate", f)
		if !wantStatus(t, r, http.StatusSeeOther, "activation on A after the lockout was cleared on B") {
			t.FailNow()
		}
		wantStatus(t, lb.get(siteA+adminURI), http.StatusOK, "locky's new session on A")
	})
}

// 2. A reload with a changed Caddyfile keeps sessions, revocations and lockouts.
func TestReloadWithChangedCaddyfileKeepsState(t *testing.T) {
	e := newEnv(t, envOptions{})
	site := e.site(0)

	alice := e.enroll("alice")
	ba := e.browser("alice")
	aliceToken := ba.mustActivate(site, roleAdmin, adminURI, alice, nil)
	aliceSID := sessionID(t, aliceToken)
	wantAdmitted(t, e, ba, "alice", aliceToken, aliceSID, "alice before the reload")

	bob := e.enroll("bob")
	bb := e.browser("bob")
	bobToken := bb.mustActivate(site, roleAdmin, adminURI, bob, nil)
	wantAdmitted(t, e, bb, "bob", bobToken, sessionID(t, bobToken), "bob before his revocation")
	e.revoke(sessionID(t, bobToken))
	wantRefused(t, e, bb, "bob", bobToken, "bob after his revocation")

	locky := e.enroll("locky")
	for range 5 {
		e.browser("locky").activate(site, roleAdmin, "/", locky.wrong(t), nil)
	}
	lockyCode := locky.next(t)
	wantStatus(t, e.browser("locky").activate(site, roleAdmin, "/", lockyCode, nil), http.StatusTooManyRequests, "locky's right code before the reload")

	// dave is eligible for nothing yet.
	dave := e.browser("dave")
	wantStatus(t, dave.get(site+adminURI), http.StatusForbidden, "dave before the reload")

	// The change: a new role with a longer justification, which the site now accepts too.
	e.reconfigure(func(d *caddyfileData) {
		d.JitOptions = `		role auditor {
			max_duration 30m
			justification required 25
			eligible dave
		}`
		d.Sites[0].Jit = "\tjit " + roleAdmin + " auditor"
	})

	// The new config runs …
	wantActivationRedirect(t, dave.get(site+adminURI), "auditor", adminURI)
	if f := dave.activationForm(site, "auditor", "/"); f.Get("role") != "auditor" {
		t.Errorf("the auditor activation form carries role=%q", f.Get("role"))
	}
	// … and the state is the same.
	wantAdmitted(t, e, ba, "alice", aliceToken, aliceSID, "alice's session after the reload")
	wantRefused(t, e, bb, "bob", bobToken, "bob's revoked session after the reload")
	r := e.browser("locky").activate(site, roleAdmin, "/", lockyCode, nil)
	wantStatus(t, r, http.StatusTooManyRequests, "locky's right code after the reload")
	if ss := e.sessions(""); len(ss) != 1 || ss[0].ID != aliceSID {
		t.Errorf("after the reload the admin API lists %+v, want alice's session %s alone", ss, aliceSID)
	}
}
