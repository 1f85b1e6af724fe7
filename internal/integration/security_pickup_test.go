package integration

import (
	"crypto/rand"
	"encoding/base64"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// Class 11: step-up binding. A session that waits for approvers reaches only the
// browser that passed the step-up (it holds the request's pickup secret); a second
// browser that knows only the password gets nothing, wherever it asks, before and
// after the first browser picked the session up.

const pickupRole = "deploy"

// pickupRoleBlock declares pickupRole: alice asks, carol approves.
const pickupRoleBlock = `
		role deploy {
			max_duration 1h
			justification required 10
			eligible alice
			approval {
				approvers carol
			}
		}`

func newPickupEnv(t *testing.T) *env {
	t.Helper()
	return newEnv(t, envOptions{JitOptions: pickupRoleBlock, Sites: []siteSpec{{Auth: true, Jit: "\tjit " + pickupRole}}})
}

// pickupCookieOf returns the browser's pickup cookie for request id, or nil.
func (b *browser) pickupCookieOf(site, id string) *http.Cookie {
	u, _ := url.Parse(site)
	for _, c := range b.jar.Cookies(u) {
		if c.Name == cookieName+"_pickup_"+id {
			return c
		}
	}
	return nil
}

// wantNothingHandedOver asks for the session everywhere a browser could, and fails
// if any answer sets a session cookie or reaches the upstream. While the request is
// open, the activation page must show it instead of offering a second.
func wantNothingHandedOver(t *testing.T, e *env, b *browser, id, when string, open bool) {
	t.Helper()
	site := e.site(0)
	before := e.up.count()
	for _, path := range []string{
		adminURI,
		"/.jit/requests/" + id,
		"/.jit/",
		activationPath(pickupRole, adminURI),
	} {
		r := b.get(site + path)
		if c := setCookie(r, cookieName); c != nil && c.Value != "" {
			t.Errorf("%s: GET %s handed a session cookie to a browser that did not ask: %s", when, path, r)
		}
		if r.StatusCode == http.StatusOK && r.Header.Get("X-Upstream") != "" {
			t.Errorf("%s: GET %s reached the upstream: %s", when, path, r)
		}
		if open && path == activationPath(pickupRole, adminURI) && (strings.Contains(r.Body, `name="code"`) || !strings.Contains(r.Body, id)) {
			t.Errorf("%s: the activation page offers a second request while one is open: %s", when, r)
		}
	}
	if c := b.cookie(site); c != "" {
		t.Errorf("%s: the second browser holds a session cookie", when)
	}
	wantNoUpstream(t, e.up, before, when+": the second browser's requests")
}

func TestSecurityClass11StepUpBindingPickup(t *testing.T) {
	e := newPickupEnv(t)
	site := e.site(0)
	alice, carol := e.enroll("alice"), e.enroll("carol")
	first := e.browser("alice")
	second := e.browser("alice") // knows the password, never passed the step-up

	id := wfRequestID(t, first.activate(site, pickupRole, adminURI, alice.next(t), nil), "alice's request in her first browser")
	pc := first.pickupCookieOf(site, id)
	if pc == nil || len(pc.Value) != 43 {
		// Not fatal: the rest shows what a second browser gets without it.
		t.Errorf("the request did not leave a 43-character pickup secret in the asking browser: %v", pc)
		pc = &http.Cookie{Name: cookieName + "_pickup_" + id}
	}

	wantNothingHandedOver(t, e, second, id, "pending", true)
	// The form is not offered, but a post made by hand is refused too, before its code
	// is checked, and shows the open request.
	secondForm := url.Values{"role": {pickupRole}, "duration": {"15m"}, "justification": {"a second request, by hand"},
		"code": {alice.next(t)}, "return": {adminURI}, "csrf": {second.csrfFor(site, "viewer")}} // alice is eligible for viewer

	if r := second.postForm(site+"/.jit/activate", secondForm); r.StatusCode != http.StatusConflict || !strings.Contains(r.Body, id) {
		t.Errorf("a second request for the same role: want 409 showing request %s, got %s", id, r)
	}

	form := e.browser("carol").approvalForm(site, id)
	if form == nil {
		t.Fatalf("carol's approvals page does not list request %s", id)
	}
	if r := e.browser("carol").decide(site, form, "approve", "", carol.next(t)); !wantStatus(t, r, http.StatusOK, "carol approves") {
		t.FailNow()
	}

	wantNothingHandedOver(t, e, second, id, "approved, before the first pickup", true)

	t.Run("a guessed pickup secret", func(t *testing.T) {
		third := e.browser("alice")
		guess := make([]byte, 32)
		rand.Read(guess)
		third.setCookie(site, pc.Name, base64.RawURLEncoding.EncodeToString(guess))
		wantNothingHandedOver(t, e, third, id, "a guessed secret", true)
		e.waitEvent(match{"event": "pickup_refused", "request_id": id, "reason": "wrong_secret"})
	})

	// The asking browser opens the console: admitted at once, no code, and the
	// upstream never sees the pickup secret.
	before := e.up.count()
	r := first.get(site + adminURI)
	if !wantStatus(t, r, http.StatusOK, "the asking browser on the console after approval") || r.Header.Get("X-Upstream") == "" {
		t.Fatalf("the asking browser was not admitted: %s", r)
	}
	wfSessionCookie(t, r, "the asking browser's first request after approval")
	if e.up.count() != before+1 {
		t.Errorf("the upstream saw %d requests, want 1", e.up.count()-before)
	}
	if got := e.up.last(t).Header.Get("Cookie"); strings.Contains(got, "pickup") || strings.Contains(got, pc.Value) {
		t.Errorf("the pickup secret reached the upstream: Cookie %q", got)
	}
	if first.pickupCookieOf(site, id) != nil {
		t.Errorf("the asking browser still holds the spent pickup secret")
	}
	e.waitEvent(match{"event": "session_picked_up", "request_id": id, "user": "alice"})

	// Picked up, the request is closed: another browser may ask anew (with its own
	// code and approval), but gets nothing of this one.
	wantNothingHandedOver(t, e, second, id, "after the first pickup", false)

	t.Run("the spent secret, replayed", func(t *testing.T) {
		replay := e.browser("alice")
		replay.setCookie(site, pc.Name, pc.Value)
		wantNothingHandedOver(t, e, replay, id, "the spent secret replayed", false)
	})
	if n := len(e.events(match{"event": "session_picked_up", "request_id": id})); n != 1 {
		t.Errorf("session_picked_up %d times, want once", n)
	}
}

// Wherever the asking browser goes after approval, it gets its session and goes on to
// the page it asked for.
func TestPickupWhereverTheAskingBrowserGoes(t *testing.T) {
	for _, path := range []string{"/.jit/", activationPath(pickupRole, "/elsewhere"), "/.jit/requests/"} {
		t.Run(path, func(t *testing.T) {
			e := newPickupEnv(t)
			site := e.site(0)
			alice, carol := e.enroll("alice"), e.enroll("carol")
			first := e.browser("alice")
			id := wfRequestID(t, first.activate(site, pickupRole, adminURI, alice.next(t), nil), "alice's request")
			cb := e.browser("carol")
			if r := cb.decide(site, cb.approvalForm(site, id), "approve", "", carol.next(t)); !wantStatus(t, r, http.StatusOK, "carol approves") {
				t.FailNow()
			}
			if path == "/.jit/requests/" {
				path += id
			}
			r := first.get(site + path)
			if !wantStatus(t, r, http.StatusSeeOther, "GET "+path+" in the asking browser") {
				t.FailNow()
			}
			if loc := r.Header.Get("Location"); loc != adminURI {
				t.Errorf("GET %s sent the asking browser to %q, want the page it asked for, %q", path, loc, adminURI)
			}
			wfSessionCookie(t, r, "GET "+path+" in the asking browser")
			if r := first.get(site + adminURI); !wantStatus(t, r, http.StatusOK, "the console afterwards") {
				t.Errorf("not admitted: %s", r)
			}
		})
	}
}

// A session is extended only in the browser that holds it: a second browser that knows
// the password, and even a code, gets neither the extension nor the session's cookie.
// (Before, a solo extension set the session's cookie in whichever browser posted it,
// which handed an approved session to a browser that never picked it up.)
func TestSecurityClass11ExtensionOnlyWhereTheSessionIsHeld(t *testing.T) {
	e := newSoloExtensionEnv(t)
	site := e.site(0)
	alice, bob := e.enroll("alice"), e.enroll("bob")
	holder := e.browser("alice")
	token := approvedSession(t, e, site, "vault", holder, alice, e.browser("bob"), bob, "5m")
	sid, end := sessionID(t, token), tokenExpiry(t, token)

	other := e.browser("alice")
	form := holder.extendForm(site) // the same fields the other browser's page shows
	code := alice.next(t)
	r := other.extend(site, form, "9m", "taking the session over", code)
	if r.StatusCode != http.StatusForbidden {
		t.Errorf("a second browser extending alice's session: want 403, got %s", r)
	}
	wfNoSessionCookie(t, r, "the second browser's extension")
	if got := e.storedExpiry("alice", sid); !got.Equal(end) {
		t.Errorf("the session's end moved to %s after the second browser's attempt, want %s", got, end)
	}
	e.waitEvent(match{"event": "extension_failed", "session_id": sid, "reason": "session_not_held"})
	if r := other.get(site + adminURI); r.StatusCode == http.StatusOK {
		t.Errorf("the second browser reached the console: %s", r)
	}

	// Refused before its code was checked: the holder extends with that very code.
	r = holder.extend(site, form, "9m", "the migration runs late", code)
	if !wantStatus(t, r, http.StatusOK, "the holder extending with the code the refusal did not spend") {
		t.FailNow()
	}
	wfSessionCookie(t, r, "the holder's extension")
}

// A request made in a browser that is lost can be withdrawn from another: its approved
// session ends unused (no browser ever holds it), and a new request can be made.
func TestWithdrawARequestWhoseBrowserIsLost(t *testing.T) {
	e := newPickupEnv(t)
	site := e.site(0)
	alice, carol := e.enroll("alice"), e.enroll("carol")
	lost := e.browser("alice")
	id := wfRequestID(t, lost.activate(site, pickupRole, adminURI, alice.next(t), nil), "alice's request")
	cb := e.browser("carol")
	if r := cb.decide(site, cb.approvalForm(site, id), "approve", "", carol.next(t)); !wantStatus(t, r, http.StatusOK, "carol approves") {
		t.FailNow()
	}
	sid := e.waitEvent(match{"event": "activation_succeeded", "request_id": id}).str("session_id")

	other := e.browser("alice")
	page := other.get(site + "/.jit/requests/" + id)
	fs := forms(t, page.Body, "/.jit/withdraw")
	if len(fs) != 1 || fs[0].Get("request") != id || fs[0].Get("csrf") == "" {
		t.Fatalf("the request's page offers no withdraw form for %s: %s", id, page)
	}
	r := other.postForm(site+"/.jit/withdraw", fs[0])
	if !wantStatus(t, r, http.StatusSeeOther, "withdrawing the request") {
		t.FailNow()
	}
	wantActivateURL(t, r.Header.Get("Location"), pickupRole, adminURI)
	wfNoSessionCookie(t, r, "the withdrawal")
	e.waitEvent(match{"event": "request_withdrawn", "request_id": id, "session_id": sid})
	e.waitEvent(match{"event": "deactivated", "session_id": sid})

	// The lost browser, found again, gets nothing: the session ended unused.
	if r := lost.get(site + adminURI); r.StatusCode == http.StatusOK || lost.cookie(site) != "" {
		t.Errorf("the asking browser got the withdrawn request's session: %s", r)
	}
	// Withdrawn, the request no longer stands in the way of a new one.
	wfRequestID(t, other.activate(site, pickupRole, adminURI, alice.next(t), nil), "alice's new request")
	if r := other.postForm(site+"/.jit/withdraw", fs[0]); r.StatusCode != http.StatusConflict {
		t.Errorf("withdrawing the withdrawn request again: want 409, got %s", r)
	}
}
