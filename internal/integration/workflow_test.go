package integration

import (
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"
)

// The PIM workflow (approval requests, break-glass, extensions, scheduled starts,
// allowed hours, max_active, notifications), driven through a real Caddy the way users
// and approvers drive it. The behaviour is the contract in the workflow notes (issue 6).

// W1. Two approvers of three: the request waits until the second approval, then the
// requester's waiting page hands over the session without another code.
func TestWorkflowTwoApproversEndToEnd(t *testing.T) {
	const role = "deploy"
	e := newEnv(t, envOptions{
		JitOptions: `
		role deploy {
			max_duration 1h
			justification required 10
			eligible alice
			approval {
				approvers carol dave erin
				count 2
			}
		}`,
		Sites: []siteSpec{{Auth: true, Jit: "\tjit " + role}},
	})
	site := e.site(0)
	alice, carol, dave := e.enroll("alice"), e.enroll("carol"), e.enroll("dave")
	a := e.browser("alice")

	wantActivationRedirect(t, a.get(site+adminURI), role, adminURI)
	r := a.activate(site, role, adminURI, alice.next(t), nil)
	id := wfRequestID(t, r, "alice's activation of a role that needs 2 approvals")
	reqURL := site + "/.jit/requests/" + id
	if c := a.cookie(site); c != "" {
		t.Errorf("alice holds a %s cookie before any approval", cookieName)
	}
	wantActivationRedirect(t, a.get(site+adminURI), role, adminURI)
	wantNoUpstream(t, e.up, 0, "the protected URL while the request waits")
	if ev := e.waitEvent(match{"event": "activation_requested", "request_id": id, "user": "alice", "role": role}); ev != nil {
		if ev.str("approvals_needed") != "2" || ev.str("deadline") == "" {
			t.Errorf("activation_requested: want approvals_needed 2 and a deadline: %v", ev)
		}
	}

	// The waiting page refreshes itself.
	wantWaiting := func(what string) {
		t.Helper()
		p := a.get(reqURL)
		if !wantStatus(t, p, http.StatusOK, what) {
			return
		}
		if got := refreshSeconds(t, p.Body); got != "5" {
			t.Errorf("%s: <meta http-equiv=refresh> content %q, want \"5\"", what, got)
		}
		if title := pageTitle(t, p.Body); !strings.Contains(title, "Waiting for approval") {
			t.Errorf("%s: title %q, want \"Waiting for approval\"", what, title)
		}
		wfNoSessionCookie(t, p, what)
	}
	wantWaiting("the waiting page before any approval")

	// The request is its owner's business: anyone else gets 404, approvers included.
	wantStatus(t, e.browser("carol").get(reqURL), http.StatusNotFound, "carol opening alice's request page")

	// carol approves: 1 of 2, still pending.
	cb := e.browser("carol")
	cf := cb.approvalForm(site, id)
	if cf == nil {
		t.Fatalf("carol's /.jit/approvals does not list alice's request %s", id)
	}
	for _, k := range []string{"request", "csrf", "comment", "code"} {
		if _, ok := cf[k]; !ok {
			t.Errorf("the decision form has no field %q: %v", k, cf)
		}
	}
	r = cb.decide(site, cf, "approve", "", carol.next(t))
	if wantStatus(t, r, http.StatusOK, "carol approves") {
		if want := "You approved alice's request for deploy (1 of 2)."; !strings.Contains(pageText(t, r.Body), want) {
			t.Errorf("carol's approval: the page does not say %q: %s", want, pageText(t, r.Body))
		}
	}
	wantWaiting("the waiting page after 1 of 2 approvals")
	wantActivationRedirect(t, a.get(site+adminURI), role, adminURI)
	wantNoUpstream(t, e.up, 0, "the protected URL after 1 of 2 approvals")

	// The same approver twice does not count twice.
	r = cb.decide(site, cf, "approve", "", carol.next(t))
	wantStatus(t, r, http.StatusConflict, "carol approving the same request again")
	wantWaiting("the waiting page after carol approved twice")

	// dave approves: 2 of 2, the session starts.
	db := e.browser("dave")
	df := db.approvalForm(site, id)
	if df == nil {
		t.Fatalf("dave's /.jit/approvals does not list alice's request %s", id)
	}
	r = db.decide(site, df, "approve", "fine by me", dave.next(t))
	if wantStatus(t, r, http.StatusOK, "dave approves") {
		if want := "You approved alice's request for deploy (2 of 2)."; !strings.Contains(pageText(t, r.Body), want) {
			t.Errorf("dave's approval: the page does not say %q: %s", want, pageText(t, r.Body))
		}
	}

	// alice's next look at the waiting page: off to her return path, with the cookie.
	r = a.get(reqURL)
	if !wantStatus(t, r, http.StatusSeeOther, "the waiting page after the second approval") {
		t.FailNow()
	}
	if loc := r.Header.Get("Location"); loc != adminURI {
		t.Errorf("after approval the waiting page sends alice to %q, want her return path %q", loc, adminURI)
	}
	token := wfSessionCookie(t, r, "the waiting page after the second approval")
	_, claims := tokenParts(t, token)
	if claims["sub"] != "alice" || claims["role"] != role {
		t.Errorf("the approved session's token: sub=%v role=%v, want alice and %s", claims["sub"], claims["role"], role)
	}
	r = a.get(site + adminURI)
	if wantStatus(t, r, http.StatusOK, "the protected URL after approval") && r.Header.Get("X-Upstream") != "integration" {
		t.Errorf("the 200 did not come from the upstream: %s", r)
	}
	if got := e.up.last(t); !slices.Equal(got.Header.Values("X-Jit-User"), []string{"alice"}) || got.Header.Get("X-Jit-Session") != claims["sid"] {
		t.Errorf("upstream X-Jit-User=%q X-Jit-Session=%q, want [alice] and %v", got.Header.Values("X-Jit-User"), got.Header.Get("X-Jit-Session"), claims["sid"])
	}

	// Audit: requested, approved twice, then the activation with both approvers.
	e.waitEvent(match{"event": "activation_succeeded", "request_id": id})
	approved := e.events(match{"event": "request_approved", "request_id": id})
	if len(approved) != 2 {
		t.Errorf("audit: %d request_approved events for %s, want 2: %v", len(approved), id, approved)
	} else {
		for i, want := range []struct{ by, n string }{{"carol", "1"}, {"dave", "2"}} {
			ev := approved[i]
			if ev.str("by") != want.by || ev.str("approvals") != want.n || ev.str("approvals_needed") != "2" || ev.str("user") != "alice" {
				t.Errorf("audit: request_approved #%d = %v, want by %s, approvals %s of 2, user alice", i+1, ev, want.by, want.n)
			}
		}
	}
	succeeded := e.events(match{"event": "activation_succeeded", "request_id": id})
	if len(succeeded) != 1 {
		t.Fatalf("audit: %d activation_succeeded events for request %s, want 1: %v", len(succeeded), id, succeeded)
	}
	ev := succeeded[0]
	if ev.str("approvers") != `["carol","dave"]` || ev.str("user") != "alice" || ev.str("session_id") != claims["sid"] {
		t.Errorf("audit: activation_succeeded = %v, want user alice, approvers [carol dave], session_id %v", ev, claims["sid"])
	}
	if n := len(e.events(match{"event": "activation_requested", "request_id": id})); n != 1 {
		t.Errorf("audit: %d activation_requested events for %s, want 1", n, id)
	}
}

// W2. No one approves their own request, and only approvers decide.
func TestWorkflowSelfApprovalRefused(t *testing.T) {
	const role = "change"
	e := newEnv(t, envOptions{
		JitOptions: `
		role change {
			max_duration 1h
			justification optional
			eligible alice bob
			approval {
				approvers alice carol
			}
		}`,
		Sites: []siteSpec{{Auth: true, Jit: "\tjit " + role}},
	})
	site := e.site(0)
	alice, bob, frank := e.enroll("alice"), e.enroll("bob"), e.enroll("frank")
	a := e.browser("alice")

	idA := wfRequestID(t, a.activate(site, role, adminURI, alice.next(t), nil), "alice's request")
	idB := wfRequestID(t, e.browser("bob").activate(site, role, "/", bob.next(t), nil), "bob's request")

	// alice, an approver, is offered bob's request but never her own.
	listed := a.listedRequests(site)
	if slices.Contains(listed, idA) {
		t.Errorf("alice's /.jit/approvals lists her own request %s (listed: %v)", idA, listed)
	}
	if !slices.Contains(listed, idB) {
		t.Errorf("alice's /.jit/approvals does not list bob's request %s (listed: %v)", idB, listed)
	}

	// She posts a decision for her own request anyway, with a valid form and code.
	fb := a.approvalForm(site, idB)
	if fb == nil {
		t.Fatalf("alice has no decision form for bob's request")
	}
	own := url.Values{"request": {idA}, "csrf": {fb.Get("csrf")}}
	r := a.decide(site, own, "approve", "", alice.next(t))
	if wantStatus(t, r, http.StatusForbidden, "alice approving her own request") {
		if txt := pageText(t, r.Body); !strings.Contains(txt, "No one can approve their own request.") {
			t.Errorf("the refusal does not say \"No one can approve their own request.\": %s", txt)
		}
	}
	e.waitEvent(match{"event": "approval_failed", "request_id": idA, "by": "alice", "reason": "self_approval"})

	// frank is no approver of the role.
	fr := e.browser("frank")
	r = fr.decide(site, url.Values{"request": {idA}, "csrf": {fr.csrfFor(site, roleAdmin)}}, "approve", "", frank.next(t))
	wantStatus(t, r, http.StatusForbidden, "frank (not an approver) approving alice's request")
	e.waitEvent(match{"event": "approval_failed", "request_id": idA, "by": "frank", "reason": "not_an_approver"})

	// The request is still pending: alice waits, carol (an approver) still sees it.
	p := a.get(site + "/.jit/requests/" + idA)
	if wantStatus(t, p, http.StatusOK, "alice's request page after the refused decisions") {
		if title := pageTitle(t, p.Body); !strings.Contains(title, "Waiting for approval") {
			t.Errorf("alice's request after the refused decisions: title %q, want \"Waiting for approval\"", title)
		}
		wfNoSessionCookie(t, p, "alice's request page after the refused decisions")
	}
	if got := e.browser("carol").listedRequests(site); !slices.Contains(got, idA) {
		t.Errorf("carol's /.jit/approvals no longer lists alice's request %s (listed: %v)", idA, got)
	}
	if evs := e.events(match{"event": "request_approved", "request_id": idA}); len(evs) != 0 {
		t.Errorf("audit: a refused decision was recorded as an approval: %v", evs)
	}
	if evs := e.events(match{"event": "activation_succeeded", "user": "alice"}); len(evs) != 0 {
		t.Errorf("audit: alice's session started without an approval: %v", evs)
	}
	wantActivationRedirect(t, a.get(site+adminURI), role, adminURI)
	wantNoUpstream(t, e.up, 0, "self-approval")
}

// W3. A request no one decides expires: the background sweep settles it, the
// requester's page says so, and a late approval is refused.
func TestWorkflowRequestExpires(t *testing.T) {
	const role = "hotfix"
	e := newEnv(t, envOptions{
		JitOptions: `
		role hotfix {
			max_duration 1h
			justification optional
			eligible bob
			approval {
				approvers carol
				expires 2s
			}
		}`,
		Sites: []siteSpec{{Auth: true, Jit: "\tjit " + role}},
	})
	site := e.site(0)
	bob, carol := e.enroll("bob"), e.enroll("carol")
	b, cb := e.browser("bob"), e.browser("carol")

	asked := time.Now()
	id := wfRequestID(t, b.activate(site, role, adminURI, bob.next(t), nil), "bob's request")
	cf := cb.approvalForm(site, id) // carol opens the page while the request is pending
	if cf == nil {
		t.Fatalf("carol's /.jit/approvals does not list bob's pending request %s", id)
	}

	// No one looks at the request: the sweep (every 2 s) must expire it by itself.
	ev := e.waitEventWithin(match{"event": "request_expired", "request_id": id}, 8*time.Second)
	took := time.Since(asked)
	t.Logf("request_expired audited %s after the request", took.Round(time.Millisecond))
	if ev != nil && took < 2*time.Second {
		t.Errorf("the request expired after %s, before its 2 s deadline", took)
	}

	p := b.get(site + "/.jit/requests/" + id)
	if wantStatus(t, p, http.StatusOK, "bob's request page after the deadline") {
		if title := pageTitle(t, p.Body); !strings.Contains(title, "Request expired") {
			t.Errorf("bob's request page after the deadline: title %q, want \"Request expired\"; text: %s", title, pageText(t, p.Body))
		}
		if got := refreshSeconds(t, p.Body); got != "" {
			t.Errorf("the expired request's page still refreshes itself (content %q)", got)
		}
		wfNoSessionCookie(t, p, "bob's expired request")
	}

	// carol's approval comes too late.
	r := cb.decide(site, cf, "approve", "", carol.next(t))
	wantStatus(t, r, http.StatusConflict, "carol approving the expired request")
	if evs := e.events(match{"event": "activation_succeeded", "user": "bob"}); len(evs) != 0 {
		t.Errorf("audit: an expired request started a session: %v", evs)
	}
	wantActivationRedirect(t, b.get(site+adminURI), role, adminURI)
	wantNoUpstream(t, e.up, 0, "expired request")
}

// W4. A denial carries the approver's reason to the requester; a denial without one
// is refused.
func TestWorkflowDenialWithComment(t *testing.T) {
	const role = "dbwrite"
	e := newEnv(t, envOptions{
		JitOptions: `
		role dbwrite {
			max_duration 1h
			justification optional
			eligible bob
			approval {
				approvers dave
			}
		}`,
		Sites: []siteSpec{{Auth: true, Jit: "\tjit " + role}},
	})
	site := e.site(0)
	bob, dave := e.enroll("bob"), e.enroll("dave")
	b, db := e.browser("bob"), e.browser("dave")

	id := wfRequestID(t, b.activate(site, role, adminURI, bob.next(t), nil), "bob's request")
	reqURL := site + "/.jit/requests/" + id
	df := db.approvalForm(site, id)
	if df == nil {
		t.Fatalf("dave's /.jit/approvals does not list bob's request %s", id)
	}

	r := db.decide(site, df, "deny", "   ", dave.next(t))
	wantStatus(t, r, http.StatusBadRequest, "dave denying without a comment")
	if p := b.get(reqURL); wantStatus(t, p, http.StatusOK, "bob's request after a denial without comment") {
		if title := pageTitle(t, p.Body); !strings.Contains(title, "Waiting for approval") {
			t.Errorf("after a refused denial bob's request page has title %q, want \"Waiting for approval\"", title)
		}
	}

	const comment = "Change freeze until Monday: use the read replica"
	r = db.decide(site, df, "deny", comment, dave.next(t))
	if wantStatus(t, r, http.StatusOK, "dave denying with a comment") {
		if want := "You denied bob's request"; !strings.Contains(pageText(t, r.Body), want) {
			t.Errorf("dave's denial: the page does not say %q: %s", want, pageText(t, r.Body))
		}
	}

	p := b.get(reqURL)
	if wantStatus(t, p, http.StatusOK, "bob's request page after the denial") {
		txt := pageText(t, p.Body)
		if title := pageTitle(t, p.Body); !strings.Contains(title, "Request denied") {
			t.Errorf("bob's request page: title %q, want \"Request denied\"", title)
		}
		if !strings.Contains(txt, "dave") || !strings.Contains(txt, comment) {
			t.Errorf("bob's request page does not name the approver dave and the comment %q: %s", comment, txt)
		}
		if got := refreshSeconds(t, p.Body); got != "" {
			t.Errorf("the denied request's page still refreshes itself (content %q)", got)
		}
		wfNoSessionCookie(t, p, "bob's denied request")
	}
	if ev := e.waitEvent(match{"event": "request_denied", "request_id": id}); ev != nil {
		if ev.str("by") != "dave" || ev.str("comment") != comment || ev.str("user") != "bob" {
			t.Errorf("audit: request_denied = %v, want by dave, user bob, the comment", ev)
		}
	}
	wantActivationRedirect(t, b.get(site+adminURI), role, adminURI)
	wantNoUpstream(t, e.up, 0, "denied request")
}
