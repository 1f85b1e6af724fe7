package integration

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

// Class 2 and 11: a browser holds one session cookie, so a session handed over to a
// browser (an approved request picked up) pushes out the session the browser held,
// which ends as replaced: its token no longer reaches the upstream, from anywhere.
// A second browser that knows only the password, carrying a copy of that token,
// neither picks the approved session up nor ends the held one.
func TestSecurityClass11PickupReplacesTheHeldSession(t *testing.T) {
	e := newEnv(t, envOptions{
		JitOptions: pickupRoleBlock + `
		role ops {
			max_duration 1h
			justification optional
			eligible alice
		}`,
		Sites: []siteSpec{{Auth: true, Jit: "\tjit " + pickupRole + " ops"}},
	})
	site := e.site(0)
	alice, carol := e.enroll("alice"), e.enroll("carol")
	first := e.browser("alice")
	held := first.mustActivate(site, "ops", adminURI, alice, nil)
	sid := sessionID(t, held)
	wantStatus(t, first.get(site+adminURI), http.StatusOK, "alice's ops session")

	id := wfRequestID(t, first.activate(site, pickupRole, adminURI, alice.next(t), nil), "alice's request for deploy")
	cb := e.browser("carol")
	if r := cb.decide(site, cb.approvalForm(site, id), "approve", "", carol.next(t)); !wantStatus(t, r, http.StatusOK, "carol approves") {
		t.FailNow()
	}

	second := e.browser("alice")
	second.setCookie(site, cookieName, held)
	for _, path := range []string{"/.jit/requests/" + id, "/.jit/", activationPath(pickupRole, adminURI)} {
		if r := second.get(site + path); setCookie(r, cookieName) != nil {
			t.Errorf("GET %s in the second browser set a session cookie: %s", path, r)
		}
	}
	wantStatus(t, useToken(second, site, "alice", held), http.StatusOK, "the held session after the second browser's visits")
	if n := len(e.events(match{"event": "replaced", "session_id": sid})); n != 0 {
		t.Errorf("%d replaced events after the second browser's visits, want none: it picked nothing up", n)
	}

	r := first.get(site + "/.jit/requests/" + id)
	if !wantStatus(t, r, http.StatusSeeOther, "the asking browser opens its request") {
		t.FailNow()
	}
	next := sessionID(t, wfSessionCookie(t, r, "the pickup"))
	ev := e.waitEvent(match{"event": "replaced", "session_id": sid})
	if ev.str("by") != "alice" || !strings.Contains(ev.str("reason"), next) {
		t.Errorf("replaced event %s: want by alice, a reason naming the new session %s", ev, next)
	}
	wantSessionEnded(t, e, sid, "replaced", "alice", 3*time.Second)
	before := e.up.count()
	if r := useToken(second, site, "alice", held); r.StatusCode == http.StatusOK {
		t.Errorf("the replaced session's token from the second browser: %s, want refused", r)
	}
	wantNoUpstream(t, e.up, before, "the replaced session's token")
	wantStatus(t, first.get(site+adminURI), http.StatusOK, "the asking browser under the picked-up session")
}
