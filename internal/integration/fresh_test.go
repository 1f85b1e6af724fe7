package integration

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// `fresh DURATION` (issue 14, item 4): a route that needs a recent step-up inside a
// session. Site 0 guards everything with console-admin and asks a step-up younger
// than freshFor of DELETEs and of /danger*, in two more jit directives; site 1 has
// only `jit @danger console-admin { fresh … }`, which then does everything itself.

const freshFor = 3 * time.Second

func freshSites() []siteSpec {
	block := " " + roleAdmin + " {\n\t\tfresh 3s\n\t}"
	return []siteSpec{
		{Auth: true, Jit: "\t@deletes method DELETE\n\t@danger path /danger*\n\tjit " + roleAdmin +
			"\n\tjit @deletes" + block + "\n\tjit @danger" + block},
		{Auth: true, Jit: "\t@danger path /danger*\n\tjit @danger" + block},
	}
}

// reconfirmLocation checks that loc is the re-confirmation page of the session,
// returning to ret.
func reconfirmLocation(t *testing.T, loc, sid, ret string) {
	t.Helper()
	u, err := url.Parse(loc)
	if err != nil || u.Scheme != "" || u.Host != "" || u.Path != "/.jit/reconfirm" {
		t.Errorf("re-confirmation URL %q: want the relative path /.jit/reconfirm (%v)", loc, err)
		return
	}
	q := u.Query()
	if q.Get("session") != sid || len(q["return"]) != 1 || q.Get("return") != ret || len(q) != 2 {
		t.Errorf("re-confirmation URL %q: want session=%s and return=%s only", loc, sid, ret)
	}
}

// authTime is the auth_time claim of a token.
func authTime(t *testing.T, token string) time.Time {
	t.Helper()
	_, p := tokenParts(t, token)
	at, ok := p["auth_time"].(float64)
	if !ok {
		t.Fatalf("the token has no auth_time: %v", p)
	}
	return time.Unix(int64(at), 0)
}

// wantOneAccess waits for the access event of the request to uri and fails unless
// there is exactly one, with the fresh field (absent when fresh is "").
func wantOneAccess(t *testing.T, e *env, uri, fresh string) {
	t.Helper()
	ev := e.waitEvent(match{"event": "access", "uri": uri})
	if ev == nil {
		return
	}
	if n := len(e.events(match{"event": "access", "uri": uri})); n != 1 {
		t.Errorf("%d access events for %s, want exactly one", n, uri)
	}
	if got, _ := ev["fresh"].(string); got != fresh {
		t.Errorf("the access event of %s has fresh %q, want %q: %s", uri, got, fresh, ev)
	}
}

// wantReauthRequired checks that a request to uri was refused for an old step-up:
// audited as such, never passed upstream or written as an access.
func wantReauthRequired(t *testing.T, e *env, method, uri, sid string, upstreamBefore int) {
	t.Helper()
	wantNoUpstream(t, e.up, upstreamBefore, method+" "+uri+" with an old step-up")
	ev := e.waitEvent(match{"event": "reauth_required", "uri": uri, "method": method})
	if ev != nil && (ev.str("session_id") != sid || ev.str("fresh") != "3s" || ev.str("step_up_age_s") == "") {
		t.Errorf("reauth_required %s, want session %s, fresh 3s and the step-up's age", ev, sid)
	}
	if n := len(e.events(match{"event": "access", "uri": uri})); n != 0 {
		t.Errorf("%d access events for the refused %s %s", n, method, uri)
	}
}

func TestFreshRouteAsksForARecentStepUp(t *testing.T) {
	e := newEnv(t, envOptions{Sites: freshSites()})
	site := e.site(0)
	u := e.enroll("alice")
	b := e.browser("alice")
	token := b.mustActivate(site, roleAdmin, adminURI, u, nil)
	sid, end, steppedUp := sessionID(t, token), tokenExpiry(t, token), authTime(t, token)

	// Right after the activation the step-up is recent: the fresh routes admit, each
	// request written once, with the fresh rule that admitted it.
	wantStatus(t, b.get(site+"/danger/page?n=1"), http.StatusOK, "GET a fresh route right after activation")
	wantStatus(t, b.do(http.MethodDelete, site+"/admin/item?n=2", nil), http.StatusOK, "DELETE right after activation")
	wantStatus(t, b.get(site+"/admin/page?n=3"), http.StatusOK, "GET a plain route")
	wantOneAccess(t, e, "/danger/page?n=1", "3s")
	wantOneAccess(t, e, "/admin/item?n=2", "3s")
	wantOneAccess(t, e, "/admin/page?n=3", "")
	if got := e.up.last(t); got.Header.Get("X-Jit-User") != "alice" || strings.Contains(got.Header.Get("Cookie"), cookieName) {
		t.Errorf("the upstream got X-Jit-User %q and Cookie %q", got.Header.Get("X-Jit-User"), got.Header.Get("Cookie"))
	}

	sleepUntil(t, steppedUp.Add(freshFor+500*time.Millisecond), "the step-up ages past fresh 3s")

	// A page navigation goes to the re-confirmation page and will come back; a DELETE
	// cannot be replayed after a redirect, so it gets 401 JSON with the page's URL.
	before := e.up.count()
	r := b.get(site + "/danger/page?n=4")
	if wantStatus(t, r, http.StatusFound, "GET a fresh route with an old step-up") {
		reconfirmLocation(t, r.Header.Get("Location"), sid, "/danger/page?n=4")
	}
	wantReauthRequired(t, e, http.MethodGet, "/danger/page?n=4", sid, before)
	reconfirmAt := r.Header.Get("Location")
	for _, accept := range []string{"text/html", "application/json"} {
		del := b.do(http.MethodDelete, site+"/admin/item?n=5", nil, withHeader("Accept", accept))
		if !wantStatus(t, del, http.StatusUnauthorized, "DELETE with an old step-up, Accept "+accept) {
			continue
		}
		var body map[string]string
		if err := json.Unmarshal([]byte(del.Body), &body); err != nil || body["error"] != "reauth_required" {
			t.Errorf("the 401 is not reauth_required JSON (%v): %s", err, del.Body)
		}
		reconfirmLocation(t, body["reauth_url"], sid, "/admin/item?n=5")
	}
	wantReauthRequired(t, e, http.MethodDelete, "/admin/item?n=5", sid, before)

	// Routes without fresh do not care how old the step-up is.
	wantStatus(t, b.get(site+"/admin/page?n=6"), http.StatusOK, "GET a plain route with an old step-up")
	wantStatus(t, b.postForm(site+"/admin/form?n=7", url.Values{"a": {"b"}}), http.StatusOK, "POST a plain route with an old step-up")
	wantOneAccess(t, e, "/admin/page?n=6", "")
	wantOneAccess(t, e, "/admin/form?n=7", "")

	// Another browser of alice's, with her password and a current code, gets neither
	// the form nor a session; the code it tried stays unspent.
	code := u.next(t)
	other := e.browser("alice")
	if r := other.get(site + reconfirmAt); r.StatusCode != http.StatusForbidden || strings.Contains(r.Body, `name="code"`) {
		t.Errorf("another browser opening the re-confirmation page: want 403 without a form, got %s", r)
	}
	f := url.Values{"session": {sid}, "return": {"/danger/page?n=4"}, "code": {code},
		"csrf": {other.activationForm(site, roleAdmin, "/").Get("csrf")}}
	r = other.postForm(site+"/.jit/reconfirm", f)
	if wantStatus(t, r, http.StatusForbidden, "another browser re-confirming the session") && setCookie(r, cookieName) != nil {
		t.Errorf("another browser received a session cookie: %s", r)
	}
	e.waitEvent(match{"event": "reconfirm_failed", "session_id": sid, "reason": "session_not_held"})

	// The browser holding the session confirms with the code and lands where it was
	// going; the session keeps its end.
	page := b.get(site + reconfirmAt)
	if !wantStatus(t, page, http.StatusOK, "the re-confirmation page") {
		t.FailNow()
	}
	f = formFields(t, page.Body, "/.jit/reconfirm")
	f.Set("code", code)
	r = b.postForm(site+"/.jit/reconfirm", f)
	if !wantStatus(t, r, http.StatusSeeOther, "re-confirming with a code") {
		t.FailNow()
	}
	if loc := r.Header.Get("Location"); loc != "/danger/page?n=4" {
		t.Errorf("after re-confirming, Location %q, want /danger/page?n=4", loc)
	}
	renewed := wfSessionCookie(t, r, "the re-confirmation")
	if sessionID(t, renewed) != sid || !tokenExpiry(t, renewed).Equal(end) || !authTime(t, renewed).After(steppedUp) {
		t.Errorf("the new token: session %s, end %s, step-up %s; want %s, the old end %s, a step-up after %s",
			sessionID(t, renewed), tokenExpiry(t, renewed), authTime(t, renewed), sid, end, steppedUp)
	}
	if stored := e.storedExpiry("alice", sid); !stored.Equal(end) {
		t.Errorf("the stored end moved from %s to %s", end, stored)
	}
	ev := e.waitEvent(match{"event": "session_reconfirmed", "session_id": sid})
	if ev != nil && ev.str("amr") != `["otp"]` {
		t.Errorf("session_reconfirmed %s, want amr [otp]", ev)
	}
	wantStatus(t, b.get(site+r.Header.Get("Location")), http.StatusOK, "the page after re-confirming")
	wantOneAccess(t, e, "/danger/page?n=4", "3s")
	if n := len(e.events(match{"event": "extended"})); n != 0 {
		t.Errorf("%d extended events: re-confirming must not extend", n)
	}
}

// Site 1's only jit directive has a matcher and fresh: it verifies the session
// itself, and paths it does not match are not gated at all.
func TestFreshRouteAloneVerifiesTheSessionItself(t *testing.T) {
	e := newEnv(t, envOptions{Sites: freshSites()[1:]})
	site := e.site(0)
	u := e.enroll("bob")
	b := e.browser("bob")

	wantActivationRedirect(t, b.get(site+"/danger/x"), roleAdmin, "/danger/x")
	b.mustActivate(site, roleAdmin, "/danger/x", u, nil)
	if wantStatus(t, b.get(site+"/danger/x?n=1"), http.StatusOK, "the fresh route after activation") {
		wantOneAccess(t, e, "/danger/x?n=1", "3s")
		if got := e.up.last(t); got.Header.Get("X-Jit-User") != "bob" {
			t.Errorf("the upstream got X-Jit-User %q, want bob", got.Header.Get("X-Jit-User"))
		}
	}
	if wantStatus(t, b.get(site+"/public?n=2"), http.StatusOK, "an ungated path") && len(e.events(match{"event": "access", "uri": "/public?n=2"})) != 0 {
		t.Error("an ungated path wrote an access event")
	}
}
