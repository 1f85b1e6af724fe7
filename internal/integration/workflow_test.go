package integration

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/mail"
	"net/url"
	"path/filepath"
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

// W5. Break-glass skips approval, alerts the approvers through a signed webhook, and
// marks the session's every access; it needs a real justification and a role that
// allows it.
func TestWorkflowBreakGlassAlerts(t *testing.T) {
	const (
		role   = "incident"
		plain  = "reports"
		secret = "hook-secret-9f2c"
	)
	hook := newHookReceiver(t, nil)
	e := newEnv(t, envOptions{
		JitOptions: fmt.Sprintf(`
		notify webhook %s %s
		role incident {
			max_duration 1h
			justification optional
			eligible alice bob
			approval {
				approvers carol dave
			}
			break_glass
		}
		role reports {
			max_duration 1h
			justification optional
			eligible frank
		}`, hook.url(), secret),
		Sites: []siteSpec{{Auth: true, Jit: "\tjit " + role + " " + plain}},
	})
	site := e.site(0)
	alice, bob, frank := e.enroll("alice"), e.enroll("bob"), e.enroll("frank")
	a := e.browser("alice")

	const why = "primary database down, INC-4711"
	r := a.activate(site, role, adminURI, alice.next(t), url.Values{"break_glass": {"on"}, "justification": {why}})
	if !wantStatus(t, r, http.StatusSeeOther, "break-glass activation") {
		t.FailNow()
	}
	if loc := r.Header.Get("Location"); loc != adminURI {
		t.Errorf("break-glass activation: Location %q, want the return path %q", loc, adminURI)
	}
	token := wfSessionCookie(t, r, "break-glass activation")
	_, claims := tokenParts(t, token)
	sid, _ := claims["sid"].(string)
	for range 2 {
		if !wantStatus(t, a.get(site+adminURI), http.StatusOK, "the protected URL under break-glass") {
			break
		}
	}
	if got := e.up.last(t); got.Header.Get("X-Jit-User") != "alice" {
		t.Errorf("upstream X-Jit-User %q, want alice", got.Header.Get("X-Jit-User"))
	}

	// Audit.
	if ev := e.waitEvent(match{"event": "activation_succeeded", "session_id": sid}); ev != nil && ev.str("break_glass") != "true" {
		t.Errorf("audit: activation_succeeded lacks break_glass: true: %v", ev)
	}
	e.waitEvent(match{"event": "break_glass", "session_id": sid, "user": "alice"})
	if evs := e.events(match{"event": "activation_requested", "user": "alice"}); len(evs) != 0 {
		t.Errorf("audit: break-glass made an approval request: %v", evs)
	}
	e.waitEvent(match{"event": "access", "session_id": sid})
	access := e.events(match{"event": "access", "session_id": sid})
	if len(access) < 2 {
		t.Errorf("audit: %d access events for the break-glass session, want 2", len(access))
	}
	for _, ev := range access {
		if ev.str("break_glass") != "true" {
			t.Errorf("audit: an access event of the break-glass session lacks break_glass: true: %v", ev)
		}
	}

	// The webhook: activated and break_glass, both signed; the alert names the approvers.
	ds := hook.waitFor(t, 5*time.Second, "deliveries of activated and break_glass", func(ds []hookDelivery) bool {
		return len(ofEvent(ds, "activated")) > 0 && len(ofEvent(ds, "break_glass")) > 0
	})
	for _, name := range []string{"activated", "break_glass"} {
		got := ofEvent(ds, name)
		if len(got) == 0 {
			continue
		}
		d := got[0]
		what := "the " + name + " webhook"
		wantSignature(t, secret, d, what)
		if ct := d.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
			t.Errorf("%s: Content-Type %q, want application/json", what, ct)
		}
		if d.Header.Get("X-Jit-Delivery") == "" {
			t.Errorf("%s: no X-Jit-Delivery header", what)
		}
		body := d.event(t)
		if body["event"] != name || body["user"] != "alice" || body["role"] != role || body["session_id"] != sid {
			t.Errorf("%s: body %s, want event %s, user alice, role %s, session_id %s", what, d.Body, name, role, sid)
		}
		if name == "break_glass" {
			if body["break_glass"] != true || body["justification"] != why {
				t.Errorf("%s: body %s, want break_glass true and the justification", what, d.Body)
			}
			if alert, _ := json.Marshal(body["alert"]); string(alert) != `["carol","dave"]` {
				t.Errorf("%s: alert %s, want the role's approvers [\"carol\",\"dave\"]; body %s", what, alert, d.Body)
			}
		}
	}

	// Refusals: a justification too short for an emergency; a role without break-glass;
	// a break_glass value other than on.
	r = e.browser("bob").activate(site, role, adminURI, bob.next(t), url.Values{"break_glass": {"on"}, "justification": {"urgent!"}})
	wantStatus(t, r, http.StatusBadRequest, "break-glass with a 7-character justification")
	wfNoSessionCookie(t, r, "break-glass with a short justification")
	r = e.browser("frank").activate(site, plain, adminURI, frank.next(t), url.Values{"break_glass": {"on"}, "justification": {why}})
	wantStatus(t, r, http.StatusBadRequest, "break-glass on a role without break_glass")
	wfNoSessionCookie(t, r, "break-glass on a role without break_glass")
	e.waitEvent(match{"event": "activation_failed", "user": "frank", "reason": "break_glass_not_allowed"})
	r = e.browser("alice").activate(site, role, adminURI, alice.next(t), url.Values{"break_glass": {"yes"}, "justification": {why}})
	wantStatus(t, r, http.StatusBadRequest, "break_glass=yes")
	wfNoSessionCookie(t, r, "break_glass=yes")
	for _, u := range []string{"bob", "frank"} {
		if s := e.sessions("?user=" + u); len(s) != 0 {
			t.Errorf("a refused break-glass activation started a session for %s: %+v", u, s)
		}
	}
}

// extendForm returns the extension form of the caller's only session on the status page.
func (b *browser) extendForm(site string) url.Values {
	b.t.Helper()
	p := b.get(site + "/.jit/")
	if p.StatusCode != http.StatusOK {
		b.t.Fatalf("GET /.jit/ as %s: want 200, got %s", b.user, p)
	}
	fs := forms(b.t, p.Body, "/.jit/extend")
	if len(fs) != 1 {
		b.t.Fatalf("%s's status page has %d extension forms, want 1: %s", b.user, len(fs), pageText(b.t, p.Body))
	}
	return fs[0]
}

func (b *browser) extend(site string, form url.Values, duration, justification, code string) *response {
	b.t.Helper()
	f := url.Values{}
	for k, vs := range form {
		f[k] = slices.Clone(vs)
	}
	f.Set("duration", duration)
	f.Set("justification", justification)
	f.Set("code", code)
	return b.postForm(site+"/.jit/extend", f)
}

// W6. Extending a session: within max_total it gets a new token that ends later; past
// max_total it is refused. The extension counts from now (the contract's new end is
// min(now+duration, start+max_total)).
func TestWorkflowExtendWithinMaxTotal(t *testing.T) {
	e := newEnv(t, envOptions{
		JitOptions: `
		role ops {
			max_duration 10m
			max_total 15m
			justification optional
			eligible r1 r3
		}
		role ops-capped {
			max_duration 10m
			max_total 10m3s
			justification optional
			eligible r2
		}`,
		Sites: []siteSpec{{Auth: true, Jit: "\tjit ops ops-capped"}},
	})
	site := e.site(0)
	r1, r2, r3 := e.enroll("r1"), e.enroll("r2"), e.enroll("r3")
	b1, b2, b3 := e.browser("r1"), e.browser("r2"), e.browser("r3")
	ten := url.Values{"duration": {"10m"}}

	// r2's session of ops-capped starts first: its 3 s of headroom must pass before it
	// is extended, to reach max_total.
	capped := b2.mustActivate(site, "ops-capped", "/", r2, ten)
	token := b1.mustActivate(site, "ops", adminURI, r1, ten)
	activatedAt := time.Now()
	sid := sessionID(t, token)
	oldExp := tokenExpiry(t, token)

	// Within max_total: 10 more minutes from now, a second or more after the start.
	sleepUntil(t, activatedAt.Add(1200*time.Millisecond), "so that now+10m is past the session's end")
	f := b1.extendForm(site)
	if f.Get("session") != sid || f.Get("csrf") == "" {
		t.Errorf("the extension form carries session=%q csrf=%q, want the session %s and a token", f.Get("session"), f.Get("csrf"), sid)
	}
	const why = "the migration runs late"
	r := b1.extend(site, f, "10m", why, r1.next(t))
	if !wantStatus(t, r, http.StatusOK, "extending by 10m within max_total") {
		t.FailNow()
	}
	if txt := pageText(t, r.Body); !strings.Contains(txt, "now lasts until") {
		t.Errorf("the extension page does not say \"now lasts until\": %s", txt)
	}
	extended := wfSessionCookie(t, r, "extension")
	newExp := tokenExpiry(t, extended)
	if sessionID(t, extended) != sid {
		t.Errorf("the extended token's sid %s, want the same session %s", sessionID(t, extended), sid)
	}
	if !newExp.After(oldExp) {
		t.Errorf("the extended token expires at %s, not later than before (%s)", newExp, oldExp)
	}
	if limit := activatedAt.Add(10*time.Minute + 30*time.Second); newExp.After(limit) {
		t.Errorf("extended by 10m right away, the token expires at %s, after now+10m (%s)", newExp, limit)
	}
	if ev := e.waitEvent(match{"event": "extended", "session_id": sid}); ev != nil {
		if ev.str("from") != oldExp.UTC().Format(time.RFC3339) || ev.str("expires") != newExp.UTC().Format(time.RFC3339) || ev.str("extension_justification") != why {
			t.Errorf("audit: extended = %v, want from %s, expires %s, extension_justification %q",
				ev, oldExp.UTC().Format(time.RFC3339), newExp.UTC().Format(time.RFC3339), why)
		}
	}
	if wantStatus(t, b1.get(site+adminURI), http.StatusOK, "the protected URL with the extended token") {
		if got := e.up.last(t).Header.Get("X-Jit-Session"); got != sid {
			t.Errorf("upstream X-Jit-Session %q, want %s", got, sid)
		}
	}

	// An extension that would not go past the current end (now+5m < now+10m) is refused.
	b3.mustActivate(site, "ops", "/", r3, ten)
	r = b3.extend(site, b3.extendForm(site), "5m", "just five more minutes", r3.next(t))
	if wantStatus(t, r, http.StatusBadRequest, "extending a fresh 10m session by 5m") {
		if txt := pageText(t, r.Body); !strings.Contains(txt, "already runs until") {
			t.Errorf("the refusal does not say \"already runs until\": %s", txt)
		}
	}
	wfNoSessionCookie(t, r, "the refused 5m extension")

	// ops-capped: the first extension reaches start+max_total, the second is refused.
	// From the session's start as the server recorded it (whole seconds, the token's
	// nbf), not from when the test asked: under load the two differ, and an extension
	// that stops short of the cap would leave the second one "already running until".
	sleepUntil(t, tokenTime(t, capped, "nbf").Add(4*time.Second), "past ops-capped's max_total headroom")
	cf := b2.extendForm(site)
	capSid := sessionID(t, capped)
	r = b2.extend(site, cf, "10m", "one last check", r2.next(t))
	if wantStatus(t, r, http.StatusOK, "extending ops-capped up to max_total") {
		c := wfSessionCookie(t, r, "extension up to max_total")
		if gain := tokenExpiry(t, c).Sub(tokenExpiry(t, capped)); gain < 2*time.Second || gain > 4*time.Second {
			t.Errorf("extended up to max_total (10m3s) from a 10m session, the end moved by %s, want 3s", gain)
		}
	}
	r = b2.extend(site, url.Values{"session": {capSid}, "csrf": {cf.Get("csrf")}}, "10m", "and one more", r2.next(t))
	if !wantStatus(t, r, http.StatusForbidden, "a second extension past max_total") {
		t.Logf("extension_failed events: %v", e.events(match{"event": "extension_failed"}))
	} else {
		if txt := pageText(t, r.Body); !strings.Contains(txt, "max_total") {
			t.Errorf("the refusal past max_total does not mention max_total: %s", txt)
		}
	}
	wfNoSessionCookie(t, r, "the extension past max_total")
	if evs := e.events(match{"event": "extended", "session_id": capSid}); len(evs) != 1 {
		t.Errorf("audit: %d extended events for the capped session, want 1: %v", len(evs), evs)
	}
}

// W7. A scheduled session gets its cookie at once, and admits only from its start.
func TestWorkflowScheduledStart(t *testing.T) {
	const role = "batch"
	e := newEnv(t, envOptions{
		JitOptions: `
		role batch {
			max_duration 1h
			justification optional
			eligible p1
		}`,
		Sites: []siteSpec{{Auth: true, Jit: "\tjit " + role}},
	})
	site := e.site(0)
	p1 := e.enroll("p1")
	b := e.browser("p1")

	start := time.Now().Add(4 * time.Second).UTC().Truncate(time.Second)
	r := b.activate(site, role, adminURI, p1.next(t), url.Values{"start": {start.Format(time.RFC3339)}})
	if !wantStatus(t, r, http.StatusOK, "a scheduled activation") {
		t.FailNow()
	}
	if txt := pageText(t, r.Body); !strings.Contains(strings.ToLower(txt), "scheduled") {
		t.Errorf("the page after a scheduled activation does not say \"scheduled\": %s", txt)
	}
	token := wfSessionCookie(t, r, "a scheduled activation")
	if nbf := tokenTime(t, token, "nbf"); !nbf.Equal(start) {
		t.Errorf("the scheduled token's nbf is %s, want the start %s", nbf.UTC(), start)
	}

	if before := time.Now(); before.Before(start) {
		r = b.get(site + adminURI)
		if time.Now().Before(start) {
			t.Logf("asked %s before the start", start.Sub(before).Round(time.Millisecond))
			wantActivationRedirect(t, r, role, adminURI)
			wantNoUpstream(t, e.up, 0, "the protected URL before the scheduled start")
		}
	} else {
		t.Fatalf("the activation took until after the scheduled start %s; the test cannot check the time before it", start)
	}

	sleepUntil(t, start.Add(300*time.Millisecond), "until the scheduled start")
	hits := e.up.count()
	r = b.get(site + adminURI)
	if wantStatus(t, r, http.StatusOK, "the protected URL after the scheduled start") {
		if e.up.count() != hits+1 || e.up.last(t).Header.Get("X-Jit-User") != "p1" {
			t.Errorf("after the start the request did not reach the upstream as p1: %s", r)
		}
	}
}

// W8. Outside the role's allowed hours activation is refused, unless break-glass.
func TestWorkflowOutsideAllowedHours(t *testing.T) {
	// A daily window of one hour starting two hours from now: now is never inside,
	// whatever the time of day (a window across midnight spans it).
	now := time.Now().UTC()
	from, to := now.Add(2*time.Hour), now.Add(3*time.Hour)
	window := fmt.Sprintf("daily %02d:%02d-%02d:%02d UTC", from.Hour(), from.Minute(), to.Hour(), to.Minute())
	e := newEnv(t, envOptions{
		JitOptions: fmt.Sprintf(`
		role night-ops {
			max_duration 1h
			justification optional
			eligible p2
			allowed_hours %[1]s
		}
		role night-ops-bg {
			max_duration 1h
			justification optional
			eligible p3
			allowed_hours %[1]s
			break_glass
		}`, window),
		Sites: []siteSpec{{Auth: true, Jit: "\tjit night-ops night-ops-bg"}},
	})
	t.Logf("now %s, allowed hours %s", now.Format("15:04"), window)
	site := e.site(0)
	p2, p3 := e.enroll("p2"), e.enroll("p3")
	b2, b3 := e.browser("p2"), e.browser("p3")

	r := b2.activate(site, "night-ops", adminURI, p2.next(t), nil)
	if wantStatus(t, r, http.StatusForbidden, "activation outside the allowed hours") {
		if txt := pageText(t, r.Body); !strings.Contains(txt, "allowed hours") {
			t.Errorf("the refusal does not mention \"allowed hours\": %s", txt)
		}
	}
	wfNoSessionCookie(t, r, "activation outside the allowed hours")
	e.waitEvent(match{"event": "activation_failed", "user": "p2", "reason": "outside_allowed_hours"})
	if s := e.sessions("?user=p2"); len(s) != 0 {
		t.Errorf("a session started outside the allowed hours: %+v", s)
	}
	wantActivationRedirect(t, b2.get(site+adminURI), "night-ops", adminURI)

	// The role with break-glass: refused without it, admitted with it. (formFields
	// reports the unchecked break_glass checkbox as "on", which no browser would send:
	// an override of "" removes it.)
	r = b3.activate(site, "night-ops-bg", adminURI, p3.next(t), url.Values{"break_glass": {""}})
	wantStatus(t, r, http.StatusForbidden, "activation of the break-glass role outside the hours, without break-glass")
	wfNoSessionCookie(t, r, "without break-glass outside the hours")
	r = b3.activate(site, "night-ops-bg", adminURI, p3.next(t),
		url.Values{"break_glass": {"on"}, "justification": {"paging alert on the batch cluster"}})
	if wantStatus(t, r, http.StatusSeeOther, "break-glass outside the allowed hours") {
		wfSessionCookie(t, r, "break-glass outside the allowed hours")
		if wantStatus(t, b3.get(site+adminURI), http.StatusOK, "the protected URL under break-glass outside the hours") {
			if got := e.up.last(t).Header.Get("X-Jit-User"); got != "p3" {
				t.Errorf("upstream X-Jit-User %q, want p3", got)
			}
		}
	}
}

// W9. max_active: a second holder is refused until the first one deactivates.
func TestWorkflowMaxActive(t *testing.T) {
	const role = "primary-db"
	e := newEnv(t, envOptions{
		JitOptions: `
		role primary-db {
			max_duration 1h
			justification optional
			eligible alice bob
			max_active 1
		}`,
		Sites: []siteSpec{{Auth: true, Jit: "\tjit " + role}},
	})
	site := e.site(0)
	alice, bob := e.enroll("alice"), e.enroll("bob")
	a, b := e.browser("alice"), e.browser("bob")

	a.mustActivate(site, role, adminURI, alice, nil)
	wantStatus(t, a.get(site+adminURI), http.StatusOK, "alice's session")

	r := b.activate(site, role, adminURI, bob.next(t), nil)
	if wantStatus(t, r, http.StatusForbidden, "bob's activation while alice holds the only place") {
		if txt := pageText(t, r.Body); !strings.Contains(txt, "max_active") {
			t.Errorf("the refusal does not mention max_active: %s", txt)
		}
	}
	wfNoSessionCookie(t, r, "bob's activation at max_active")
	before := e.up.count()
	wantActivationRedirect(t, b.get(site+adminURI), role, adminURI)
	wantNoUpstream(t, e.up, before, "bob after the max_active refusal")

	// alice deactivates with the form on her status page.
	p := a.get(site + "/.jit/")
	fs := forms(t, p.Body, "/.jit/deactivate")
	if len(fs) != 1 {
		t.Fatalf("alice's status page has %d deactivation forms, want 1: %s", len(fs), pageText(t, p.Body))
	}
	r = a.postForm(site+"/.jit/deactivate", fs[0])
	if r.StatusCode >= 400 {
		t.Fatalf("alice's deactivation: %s", r)
	}
	e.waitEvent(match{"event": "deactivated", "user": "alice"})
	wantActivationRedirect(t, a.get(site+adminURI), role, adminURI)

	r = b.activate(site, role, adminURI, bob.next(t), nil)
	if wantStatus(t, r, http.StatusSeeOther, "bob's activation after alice deactivated") {
		wfSessionCookie(t, r, "bob's activation after alice deactivated")
		if wantStatus(t, b.get(site+adminURI), http.StatusOK, "bob's session") {
			if got := e.up.last(t).Header.Get("X-Jit-User"); got != "bob" {
				t.Errorf("upstream X-Jit-User %q, want bob", got)
			}
		}
	}
}

// W10. A webhook answered with 500 is delivered again, with the same delivery id and a
// valid signature, and no more once it got a 2xx.
func TestWorkflowWebhookRetries(t *testing.T) {
	const secret = "retry-secret-41"
	hook := newHookReceiver(t, func(n int) int {
		if n == 0 {
			return http.StatusInternalServerError
		}
		return http.StatusOK
	})
	e := newEnv(t, envOptions{JitOptions: "\t\tnotify webhook " + hook.url() + " " + secret})
	site := e.site(0)
	r1 := e.enroll("r1")

	token := e.browser("r1").mustActivate(site, roleAdmin, "/", r1, nil)
	sid := sessionID(t, token)

	var first hookDelivery
	var retry *hookDelivery
	ds := hook.waitFor(t, 6*time.Second, "a second delivery of the first notification", func(ds []hookDelivery) bool {
		if len(ds) < 2 {
			return false
		}
		id := ds[0].Header.Get("X-Jit-Delivery")
		return slices.ContainsFunc(ds[1:], func(d hookDelivery) bool { return d.Header.Get("X-Jit-Delivery") == id })
	})
	if len(ds) == 0 {
		t.FailNow()
	}
	first = ds[0]
	for i := range ds[1:] {
		if ds[1+i].Header.Get("X-Jit-Delivery") == first.Header.Get("X-Jit-Delivery") {
			retry = &ds[1+i]
			break
		}
	}
	if first.Header.Get("X-Jit-Delivery") == "" {
		t.Errorf("the first delivery has no X-Jit-Delivery: %s", first)
	}
	if ev := first.event(t); ev["event"] != "activated" || ev["session_id"] != sid || first.Header.Get("X-Jit-Event") != "activated" {
		t.Errorf("the first delivery is not the activation of %s: %s", sid, first)
	}
	wantSignature(t, secret, first, "the first delivery (answered 500)")
	if retry == nil {
		t.FailNow()
	}
	wantSignature(t, secret, *retry, "the retried delivery")
	if gap := retry.At.Sub(first.At); gap < 800*time.Millisecond || gap > 5*time.Second {
		t.Errorf("the retry came %s after the failed delivery, want about 1 s", gap)
	}
	a, b := first.event(t), retry.event(t)
	for _, k := range []string{"event", "session_id", "user", "role", "time"} {
		if a[k] != b[k] {
			t.Errorf("the retry's body differs in %s: %v, first %v", k, b[k], a[k])
		}
	}
	if retry.Header.Get("X-Jit-Event") != first.Header.Get("X-Jit-Event") {
		t.Errorf("the retry's X-Jit-Event %q, first %q", retry.Header.Get("X-Jit-Event"), first.Header.Get("X-Jit-Event"))
	}

	// Delivered: no more attempts (the next retry would have come 2 s later).
	time.Sleep(2500 * time.Millisecond)
	n := 0
	for _, d := range hook.deliveries() {
		if d.Header.Get("X-Jit-Delivery") == first.Header.Get("X-Jit-Delivery") {
			n++
		}
	}
	if n != 2 {
		t.Errorf("the notification was delivered %d times, want 2 (one 500, one 200)", n)
	}
}

// W11. `notify email` sends a message per event through the smtp server.
func TestWorkflowEmailNotification(t *testing.T) {
	ms := newMailServer(t)
	e := newEnv(t, envOptions{JitOptions: fmt.Sprintf(`
		smtp {
			address %s
			from jit@example.test
		}
		notify email sec@example.test`, ms.addr)})
	site := e.site(0)
	alice := e.enroll("alice")
	token := e.browser("alice").mustActivate(site, roleAdmin, "/", alice, nil)
	sid := sessionID(t, token)

	var msg *mailMessage
	var parsed *mail.Message
	ok := pollUntil(10*time.Second, func() bool {
		for _, m := range ms.messages() {
			pm, err := mail.ReadMessage(bytes.NewReader(m.Data))
			if err != nil {
				continue
			}
			if slices.Contains(m.To, "sec@example.test") && strings.HasPrefix(pm.Header.Get("Subject"), "[caddy-jit] activated: alice") {
				msg, parsed = &m, pm
				return true
			}
		}
		return false
	})
	if !ok {
		var sb strings.Builder
		for _, m := range ms.messages() {
			fmt.Fprintf(&sb, "MAIL FROM %s RCPT %v\n%s\n---\n", m.From, m.To, m.Data)
		}
		t.Fatalf("no message to sec@example.test with Subject \"[caddy-jit] activated: alice…\" within 10 s; the server got:\n%s", sb.String())
	}
	if msg.From != "jit@example.test" {
		t.Errorf("MAIL FROM %q, want jit@example.test", msg.From)
	}
	if from := parsed.Header.Get("From"); !strings.Contains(from, "jit@example.test") {
		t.Errorf("From: %q, want jit@example.test", from)
	}
	if to := parsed.Header.Get("To"); !strings.Contains(to, "sec@example.test") {
		t.Errorf("To: %q, want sec@example.test", to)
	}
	if subj, want := parsed.Header.Get("Subject"), "[caddy-jit] activated: alice, role "+roleAdmin; subj != want {
		t.Errorf("Subject %q, want %q", subj, want)
	}
	if ev := parsed.Header.Get("X-Jit-Event"); ev != "activated" {
		t.Errorf("X-Jit-Event %q, want activated", ev)
	}
	body, _ := io.ReadAll(parsed.Body)
	text := string(body)
	i := strings.Index(text, "{")
	if i < 0 {
		t.Fatalf("the message body holds no JSON: %s", text)
	}
	if summary := strings.TrimSpace(text[:i]); summary == "" || strings.Contains(summary, "\n") || !strings.Contains(summary, "alice") {
		t.Errorf("the body should start with a one-line summary naming alice, got %q", summary)
	}
	var n map[string]any
	if err := json.Unmarshal([]byte(text[i:]), &n); err != nil {
		t.Fatalf("the message body's JSON does not parse: %v: %s", err, text[i:])
	}
	if n["event"] != "activated" || n["user"] != "alice" || n["role"] != roleAdmin || n["session_id"] != sid {
		t.Errorf("the message's JSON %v, want event activated, user alice, role %s, session_id %s", n, roleAdmin, sid)
	}
}

// W12. Requests live in storage: a request made on one instance of a cluster is
// listed and approved on the other, and the requester's waiting page on the first
// hands over the session.
func TestWorkflowClusterApprovalAcrossInstances(t *testing.T) {
	const role = "deploy"
	storage := filepath.Join(t.TempDir(), "shared-storage")
	site := siteSpec{Host: clusterHost, Bind: "127.0.0.1", Auth: true,
		Jit: "\tjit " + role + " {\n\t\taudience http://" + clusterHost + "\n\t}"}
	opts := envOptions{StorageDir: storage, Stopped: true, JitOptions: `
		sync_interval 200ms
		role deploy {
			max_duration 1h
			eligible alice
			approval {
				approvers carol
			}
		}`}
	opts.Sites = []siteSpec{site}
	a := newEnv(t, opts)
	opts.Sites = []siteSpec{site}
	b := newEnv(t, opts)
	startTogether(a, b)
	alice, carol := a.enroll("alice"), a.enroll("carol")
	ba, bc := a.browser("alice"), b.browser("carol")
	siteA, siteB := a.site(0), b.site(0)

	id := wfRequestID(t, ba.activate(siteA, role, adminURI, alice.next(t), nil), "alice's request on A")
	if ids := bc.listedRequests(siteB); !slices.Contains(ids, id) {
		t.Fatalf("carol's approvals page on B lists %v, want alice's request %s made on A", ids, id)
	}
	form := bc.approvalForm(siteB, id)
	if r := bc.decide(siteB, form, "approve", "", carol.next(t)); !wantStatus(t, r, http.StatusOK, "carol's approval on B") {
		t.FailNow()
	}
	r := ba.get(siteA + "/.jit/requests/" + id)
	if !wantStatus(t, r, http.StatusSeeOther, "alice's waiting page on A after the approval on B") {
		t.FailNow()
	}
	if loc := r.Header.Get("Location"); loc != adminURI {
		t.Errorf("the waiting page sent alice to %q, want %q", loc, adminURI)
	}
	wfSessionCookie(t, r, "the waiting page on A after the approval on B")
	if r := ba.get(siteA + adminURI); wantStatus(t, r, http.StatusOK, "the protected URL on A") {
		if got := a.up.last(t).Header.Get("X-Jit-User"); got != "alice" {
			t.Errorf("A's upstream X-Jit-User=%q, want alice", got)
		}
	}
	// The decision and the session are B's, in B's audit log, tied to the request.
	b.waitEvent(match{"event": "request_approved", "request_id": id, "by": "carol"})
	b.waitEvent(match{"event": "activation_succeeded", "request_id": id, "user": "alice"})
}
