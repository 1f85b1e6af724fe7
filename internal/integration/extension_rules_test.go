package integration

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// Extensions obey the same rules as activations (issue 12, findings 3 and 8): an
// extension never puts more sessions side by side than max_active allows, scheduled
// ones included; and where activating a role needs approvers, so does extending it,
// unless the role says extend_without_approval.

// storedExpiry reads a session's end as the server stores it, through the admin API.
func (e *env) storedExpiry(user, sid string) time.Time {
	e.t.Helper()
	var out struct {
		Sessions []struct {
			ID      string    `json:"session_id"`
			Expires time.Time `json:"expires"`
		} `json:"sessions"`
	}
	e.adminOK(http.MethodGet, "/jit/sessions?user="+url.QueryEscape(user), &out)
	for _, s := range out.Sessions {
		if s.ID == sid {
			return s.Expires
		}
	}
	e.t.Fatalf("the admin API lists no active session %s of %s: %+v", sid, user, out.Sessions)
	return time.Time{}
}

// approvedSession has user request role, approver approve it, and the requester's
// browser pick the session up; it returns the session's token.
func approvedSession(t *testing.T, e *env, site, role string, b *browser, u *totpUser, approver *browser, au *totpUser, duration string) string {
	t.Helper()
	r := b.activate(site, role, adminURI, u.next(t), url.Values{"duration": {duration}, "justification": {"the nightly job failed"}})
	id := wfRequestID(t, r, b.user+" requesting "+role)
	f := approver.approvalForm(site, id)
	if f == nil {
		t.Fatalf("%s's approvals page does not list %s's request %s", approver.user, b.user, id)
	}
	if !wantStatus(t, approver.decide(site, f, "approve", "", au.next(t)), http.StatusOK, approver.user+" approving the activation") {
		t.FailNow()
	}
	r = b.get(site + "/.jit/requests/" + id)
	if !wantStatus(t, r, http.StatusSeeOther, "the requester's page after the approval") {
		t.FailNow()
	}
	return wfSessionCookie(t, r, "the approved activation")
}

// collectForms are the status page's forms that collect an approved extension.
func collectForms(t *testing.T, b *browser, site string) []url.Values {
	t.Helper()
	p := b.get(site + "/.jit/")
	if !wantStatus(t, p, http.StatusOK, b.user+"'s status page") {
		return nil
	}
	return forms(t, p.Body, "/.jit/extend?collect=1")
}

// Finding 3: with max_active 1, bob schedules a start after alice's session ends;
// alice may extend up to bob's start, never past it.
func TestExtensionRespectsMaxActiveWithScheduledStart(t *testing.T) {
	waitsForTOTPSteps(t)
	const role = "desk"
	e := newEnv(t, envOptions{
		JitOptions: `
		role desk {
			max_duration 10m
			max_total 1h
			max_active 1
			justification optional
			eligible alice bob
		}`,
		Sites: []siteSpec{{Auth: true, Jit: "\tjit " + role}},
	})
	site := e.site(0)
	alice, bob := e.enroll("alice"), e.enroll("bob")
	a, b := e.browser("alice"), e.browser("bob")

	token := a.mustActivate(site, role, adminURI, alice, url.Values{"duration": {"5m"}})
	sid, aliceEnd := sessionID(t, token), tokenExpiry(t, token)

	// bob's session starts 2 minutes after alice's ends: no overlap, so it is admitted.
	bobStart := aliceEnd.Add(2 * time.Minute).UTC()
	r := b.activate(site, role, adminURI, bob.next(t), url.Values{"start": {bobStart.Format(time.RFC3339)}, "duration": {"10m"}})
	if !wantStatus(t, r, http.StatusOK, "bob scheduling a start after alice's session") {
		t.FailNow()
	}
	wfSessionCookie(t, r, "bob's scheduled session")

	// Within the gap before bob's start: allowed.
	r = a.extend(site, a.extendForm(site), "6m", "the restore needs a minute more", alice.next(t))
	if !wantStatus(t, r, http.StatusOK, "alice extending to before bob's start") {
		t.FailNow()
	}
	token = wfSessionCookie(t, r, "alice's extension before bob's start")
	end := tokenExpiry(t, token)
	if !end.Before(bobStart) {
		t.Fatalf("the first extension ends at %s, not before bob's start %s: the test's timing is off", end, bobStart)
	}

	// Past bob's start: two sessions would hold a role that allows one.
	r = a.extend(site, a.extendForm(site), "9m", "and the verification too", alice.next(t))
	if wantStatus(t, r, http.StatusForbidden, "alice extending past bob's scheduled start") {
		if txt := pageText(t, r.Body); !strings.Contains(txt, "max_active") {
			t.Errorf("the refusal does not name max_active: %s", txt)
		}
	}
	wfNoSessionCookie(t, r, "the extension past bob's start")
	if got := e.storedExpiry("alice", sid); !got.Equal(end) {
		t.Errorf("after the refused extension alice's session ends at %s, want still %s (bob starts at %s)", got, end, bobStart)
	}
	if ev := e.waitEvent(match{"event": "extension_failed", "session_id": sid}); ev != nil && ev.str("reason") != "max_active_reached" {
		t.Errorf("audit: extension_failed = %v, want reason max_active_reached", ev)
	}
	if n := len(e.events(match{"event": "extended", "session_id": sid})); n != 1 {
		t.Errorf("audit: %d extended events for alice's session, want 1 (the one before bob's start)", n)
	}
}

// Finding 8: a role with approval and max_total. The requester's extension alone does
// not extend; another approver's approval does; the new end reaches only the browser
// that holds the session.
func TestExtensionOfApprovalRoleNeedsApproval(t *testing.T) {
	waitsForTOTPSteps(t)
	const role = "vault"
	e := newEnv(t, envOptions{
		JitOptions: `
		role vault {
			max_duration 10m
			max_total 1h
			justification optional
			eligible alice
			approval {
				approvers alice bob carol
				count 1
			}
		}`,
		Sites: []siteSpec{{Auth: true, Jit: "\tjit " + role}},
	})
	site := e.site(0)
	alice, bob, carol := e.enroll("alice"), e.enroll("bob"), e.enroll("carol")
	a, bb, cb := e.browser("alice"), e.browser("bob"), e.browser("carol")

	// 1. Alone, alice does not extend: her cookie and the stored end stay, and the gate
	// refuses her once the original end has passed.
	token := approvedSession(t, e, site, role, a, alice, bb, bob, "8s")
	sid, end := sessionID(t, token), tokenExpiry(t, token)
	r := a.extend(site, a.extendForm(site), "9m", "the migration runs late", alice.next(t))
	if r.StatusCode != http.StatusAccepted {
		t.Errorf("alice extending a session of an approval role alone: want 202 (a request for approval), got %s", r)
	}
	wfNoSessionCookie(t, r, "alice's extension without approval")
	if got := tokenExpiry(t, a.cookie(site)); !got.Equal(end) {
		t.Errorf("alice's cookie expires at %s after her own extension, want still %s", got, end)
	}
	if got := e.storedExpiry("alice", sid); !got.Equal(end) {
		t.Errorf("the stored session ends at %s after alice's own extension, want still %s", got, end)
	}
	if n := len(e.events(match{"event": "extended", "session_id": sid})); n != 0 {
		t.Errorf("audit: %d extended events without an approval", n)
	}
	sleepUntil(t, end.Add(1500*time.Millisecond), "past the session's original end")
	wantActivationRedirect(t, a.get(site+adminURI), role, adminURI)

	// 2. A new session; alice asks for more time; an approver other than alice lets it.
	token = approvedSession(t, e, site, role, a, alice, bb, bob, "5m")
	sid, end = sessionID(t, token), tokenExpiry(t, token)
	r = a.extend(site, a.extendForm(site), "9m", "the migration runs late", alice.next(t))
	if !wantStatus(t, r, http.StatusAccepted, "alice asking for 9 more minutes") {
		t.FailNow()
	}
	wfNoSessionCookie(t, r, "the extension request")
	ev := e.waitEvent(match{"event": "extension_requested", "session_id": sid})
	if ev == nil {
		t.FailNow()
	}
	extID := ev.str("request_id")
	newEnd, err := time.Parse(time.RFC3339, ev.str("new_end"))
	if err != nil || !newEnd.After(end.Add(3*time.Minute)) {
		t.Fatalf("extension_requested: new_end %q, want about 9 minutes from now: %v", ev.str("new_end"), ev)
	}
	// Both refusals come before any code is checked, so a wrong one spends nothing.
	r = a.extend(site, a.extendForm(site), "9m", "asking twice", alice.wrong(t))
	wantStatus(t, r, http.StatusConflict, "a second extension request while the first waits")

	// alice is an approver of the role, but not of her own request.
	self := url.Values{"request": {extID}, "csrf": {a.csrfFor(site, role)}}
	wantStatus(t, a.decide(site, self, "approve", "", alice.wrong(t)), http.StatusForbidden, "alice approving her own extension")
	cf := cb.approvalForm(site, extID)
	if cf == nil {
		t.Fatalf("carol's approvals page does not list alice's extension request %s", extID)
	}
	if txt := pageText(t, cb.approvalsPage(site).Body); !strings.Contains(txt, sid) || !strings.Contains(txt, newEnd.UTC().Format("2006-01-02 15:04 UTC")) {
		t.Errorf("the approvals page does not show the session %s and its new end %s: %s", sid, newEnd, txt)
	}
	if !wantStatus(t, cb.decide(site, cf, "approve", "", carol.next(t)), http.StatusOK, "carol approving the extension") {
		t.FailNow()
	}
	if got := e.storedExpiry("alice", sid); !got.Equal(newEnd) {
		t.Errorf("after carol's approval the session ends at %s, want %s", got, newEnd)
	}
	if ev := e.waitEvent(match{"event": "extended", "session_id": sid}); ev != nil {
		if ev.str("extension_approvers") != `["carol"]` || ev.str("extension_request_id") != extID {
			t.Errorf("audit: extended = %v, want extension_approvers [carol] and extension_request_id %s", ev, extID)
		}
	}

	// 3. A second browser that knows only alice's password gets nothing: not from the
	// status page's collect form, not from the request's page, not from /.jit/.
	a2 := e.browser("alice")
	stolen := collectForms(t, a2, site)
	if len(stolen) != 1 {
		t.Errorf("the second browser's status page offers %d collect forms, want the one of alice's session (it may try)", len(stolen))
	}
	for _, f := range stolen {
		r = a2.postForm(site+"/.jit/extend?collect=1", f)
		wantNot2xx(t, r, "a second browser collecting alice's extension")
		wfNoSessionCookie(t, r, "a second browser collecting alice's extension")
	}
	wfNoSessionCookie(t, a2.get(site+"/.jit/requests/"+extID), "a second browser opening the extension request")
	wfNoSessionCookie(t, a2.get(site+"/.jit/"), "a second browser opening /.jit/")
	wantActivationRedirect(t, a2.get(site+adminURI), role, adminURI)

	// 4. alice's own browser, holding the session, collects the new end.
	fs := collectForms(t, a, site)
	if len(fs) != 1 || fs[0].Get("session") != sid {
		t.Fatalf("alice's status page offers %d collect forms (%v), want one for %s", len(fs), fs, sid)
	}
	r = a.postForm(site+"/.jit/extend?collect=1", fs[0])
	if !wantStatus(t, r, http.StatusOK, "alice collecting her approved extension") {
		t.FailNow()
	}
	got := wfSessionCookie(t, r, "the collected extension")
	if sessionID(t, got) != sid || !tokenExpiry(t, got).Equal(newEnd) {
		t.Errorf("the collected token: sid %s exp %s, want %s and %s", sessionID(t, got), tokenExpiry(t, got), sid, newEnd)
	}
	wantStatus(t, a.get(site+adminURI), http.StatusOK, "the protected URL with the collected token")
	e.waitEvent(match{"event": "extension_collected", "session_id": sid})
}

// extend_without_approval keeps the old behaviour: the holder extends alone.
// newSoloExtensionEnv has the role vault: bob approves activations, but its holder
// extends alone (extend_without_approval), up to an hour in total.
func newSoloExtensionEnv(t *testing.T) *env {
	t.Helper()
	return newEnv(t, envOptions{
		JitOptions: `
		role vault {
			max_duration 10m
			max_total 1h
			justification optional
			eligible alice
			approval {
				approvers bob
			}
			extend_without_approval
		}`,
		Sites: []siteSpec{{Auth: true, Jit: "\tjit vault"}},
	})
}

func TestExtendWithoutApprovalOption(t *testing.T) {
	const role = "vault"
	e := newSoloExtensionEnv(t)
	site := e.site(0)
	alice, bob := e.enroll("alice"), e.enroll("bob")
	a := e.browser("alice")
	token := approvedSession(t, e, site, role, a, alice, e.browser("bob"), bob, "5m")
	sid, end := sessionID(t, token), tokenExpiry(t, token)
	r := a.extend(site, a.extendForm(site), "9m", "the migration runs late", alice.next(t))
	if !wantStatus(t, r, http.StatusOK, "alice extending alone under extend_without_approval") {
		t.FailNow()
	}
	got := tokenExpiry(t, wfSessionCookie(t, r, "the solo extension"))
	if !got.After(end.Add(3*time.Minute)) || !e.storedExpiry("alice", sid).Equal(got) {
		t.Errorf("the solo extension's token expires at %s (stored %s), want about 9 minutes from now (was %s)", got, e.storedExpiry("alice", sid), end)
	}
	e.waitEvent(match{"event": "extended", "session_id": sid})
}
