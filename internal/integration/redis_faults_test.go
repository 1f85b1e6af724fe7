package integration

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/caddy-jit/caddy-jit/internal/testkit"
)

// Redis failing under a running instance (issue 15): while it is down, activation is
// refused (503) and sessions keep working until max_staleness, then are refused too;
// when it is back, everything resumes. When it comes back without its data, no session
// of before is admitted again (their keys, records and revocations are gone), and
// nothing breaks: users activate again.
func TestRedisOutageAndDataLoss(t *testing.T) {
	const maxStaleness, syncInterval = 4 * time.Second, time.Second
	r := testkit.StartRedis(t, "appendonly yes", "appendfsync always")
	e := newEnv(t, envOptions{JitOptions: "\t\tsync_interval 1s\n\t\tmax_staleness 4s\n\t\tstore redis {\n\t\t\taddress " + r.Addr + "\n\t\t}"})
	site := e.site(0)
	alice, bob := e.enroll("alice"), e.enroll("bob")
	ba, bb := e.browser("alice"), e.browser("bob")
	token := ba.mustActivate(site, roleAdmin, adminURI, alice, nil)
	sid := sessionID(t, token)
	wantAdmitted(t, e, ba, "alice", token, sid, "alice before the outage")
	bobForm := bb.activationForm(site, roleAdmin, adminURI)

	// (a) Redis is down: activation fails closed; the session works on, then is refused.
	r.Stop()
	outage := time.Now()
	bobForm.Set("justification", "integration test: redis is down")
	bobForm.Set("code", bob.next(t))
	resp := bb.postForm(site+"/.jit/activate", bobForm)
	wantStatus(t, resp, http.StatusServiceUnavailable, "activation while Redis is down")
	if c := setCookie(resp, cookieName); c != nil && c.Value != "" {
		t.Errorf("an activation without Redis set a session cookie: %s", resp)
	}
	var stale *response
	if !pollUntil(maxStaleness+3*syncInterval+slack, func() bool {
		got := useToken(ba, site, "alice", token)
		if got.StatusCode == http.StatusOK {
			return false
		}
		stale = got
		return true
	}) {
		t.Fatalf("the gate still admits sessions %s into the Redis outage (max_staleness %s)", time.Since(outage).Round(time.Millisecond), maxStaleness)
	}
	after := time.Since(outage)
	t.Logf("sessions were refused %s into the Redis outage", after.Round(time.Millisecond))
	if after < maxStaleness-syncInterval-slack {
		t.Errorf("sessions were refused after %s, before max_staleness (%s)", after, maxStaleness)
	}
	wantStatus(t, stale, http.StatusServiceUnavailable, "a session while Redis has been down past max_staleness")

	// (b) Redis is back with its data: the session works again, activation too.
	r.Start()
	if !pollUntil(5*time.Second, func() bool { return useToken(ba, site, "alice", token).StatusCode == http.StatusOK }) {
		t.Fatal("alice's session is still refused 5s after Redis came back")
	}
	bobToken := bb.mustActivate(site, roleAdmin, adminURI, bob, nil)
	wantAdmitted(t, e, bb, "bob", bobToken, sessionID(t, bobToken), "bob's activation after the outage")

	// (c) Redis comes back without its data: neither session is admitted again, ever.
	r.Wipe()
	lost := time.Now()
	refused := func(b *browser, user, tok string) bool {
		got := useToken(b, site, user, tok)
		return got.StatusCode == http.StatusFound && strings.Contains(got.Header.Get("Location"), "/.jit/activate")
	}
	if !pollUntil(3*syncInterval+slack, func() bool { return refused(ba, "alice", token) && refused(bb, "bob", bobToken) }) {
		t.Fatalf("sessions made before Redis lost its data are still admitted %s after", time.Since(lost).Round(time.Millisecond))
	}
	t.Logf("sessions of before the data loss were refused %s after Redis came back empty", time.Since(lost).Round(time.Millisecond))
	hits := e.up.count()
	for range 5 {
		if !refused(ba, "alice", token) || !refused(bb, "bob", bobToken) {
			t.Fatal("a session of before the data loss was admitted again")
		}
		time.Sleep(200 * time.Millisecond)
	}
	wantNoUpstream(t, e.up, hits, "sessions of before the data loss")
	// The instance carries on: alice enrolls again (her enrollment went with the data)
	// and activates with the new keys.
	alice = e.enroll("alice")
	fresh := ba.mustActivate(site, roleAdmin, adminURI, alice, nil)
	wantAdmitted(t, e, ba, "alice", fresh, sessionID(t, fresh), "alice's activation after the data loss")
	if keyID(t, fresh) == keyID(t, token) {
		t.Error("the session after the data loss is signed with the key that was lost")
	}
}
