package integration

import (
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"
)

// Real-browser tests of passkeys (issue 14): headless Chromium with a virtual
// authenticator per tab (DevTools WebAuthn domain: CTAP2, internal transport, user
// verification) on http://localhost:PORT sites, RP ID localhost. Helpers are in
// browser_passkey_helpers_test.go.

// passkeyRole is a role whose step_up accepts only a passkey; erin is eligible too and
// never registers one.
const passkeyRole = "ops"

// passkeyRoleOptions configures passkeyRole.
const passkeyRoleOptions = `
		role ops {
			max_duration 1h
			justification required 10
			eligible alice erin
			step_up webauthn
		}`

// newPasskeyEnv is a Caddy with one site gated by passkeyRole.
func newPasskeyEnv(t *testing.T) *env {
	t.Helper()
	return newEnv(t, envOptions{
		JitOptions: passkeyRoleOptions,
		Sites:      []siteSpec{{Auth: true, Jit: "\tjit " + passkeyRole}},
	})
}

// passkeyFresh is how recent a step-up the dangerous requests of newPasskeyFreshEnv
// need: short, since the test waits it out once, and long enough for a browser on a
// loaded machine to follow the redirect after a re-confirmation within it.
const passkeyFresh = 3 * time.Second

// passkeyApprovalRole needs a passkey of its requester and of its approver, bob.
const passkeyApprovalRole = "deploy"

// newPasskeyApprovalEnv is a Caddy with one site gated by passkeyApprovalRole.
func newPasskeyApprovalEnv(t *testing.T) *env {
	t.Helper()
	return newEnv(t, envOptions{
		JitOptions: `
		role deploy {
			max_duration 1h
			justification required 10
			eligible alice
			step_up webauthn
			approval {
				approvers bob
				count 1
			}
		}`,
		Sites: []siteSpec{{Auth: true, Jit: "\tjit " + passkeyApprovalRole}},
	})
}

// P1. alice registers a passkey on the passkeys page with her current code, opens the
// console, is sent to the activation page of a step_up webauthn role (no code field
// there), types a justification, presses "Use a passkey", and lands back on exactly
// the URL she asked for, answered by the upstream under a session whose amr is hwk.
func TestBrowserPasskeyRegisterActivateAndReachTheConsole(t *testing.T) {
	e := newPasskeyEnv(t)
	site := e.site(0)
	c := newChrome(t, 90*time.Second)
	alice := newPasskeyHolder(e, c, "alice")
	a := alice.tab

	alice.openPasskeysPage()
	if s := a.state(); !strings.Contains(s.Text, "You have no passkey registered yet.") {
		t.Errorf("the passkeys page before any registration does not say \"You have no passkey registered yet.\": %s", s.Text)
	}
	alice.registerPasskey("work laptop")
	countAfterRegistration := alice.signCount()
	if a.sessionCookie() != nil {
		t.Errorf("registering a passkey left a %s cookie: it must start no session", cookieName)
	}

	// The console sends her to the activation page, which offers her passkey and no code.
	a.open(browserURI)
	a.wantActivationPage(passkeyRole, browserURI, "alice opening "+browserURI)
	wantNoUpstream(t, e.up, 0, "the console without a session")
	if n := chromeEval[int](a, "counting code fields", `document.querySelectorAll('input[name=code]').length`); n != 0 {
		t.Errorf("the activation page of the step_up webauthn role has %d code fields, want none", n)
	}
	if !a.passkeyButtonVisible("activate:" + passkeyRole) {
		t.Fatalf("the activation page shows no \"Use a passkey\" button to alice, who has one registered: %s", a.state().Text)
	}

	status := a.activateWithPasskey(passkeyRole, browserJustification)
	want := site + browserURI
	s := a.state()
	if s.URL != want {
		st, _ := a.tryPasskeyStatus()
		t.Fatalf("after activating with the passkey, the browser is on %s, want exactly %s; the page says: %s (passkey status: %q)", s.URL, want, s.Text, st)
	}
	if status != http.StatusOK {
		t.Errorf("the console after activation answered %d, want 200", status)
	}
	echo := a.upstreamEcho(s, "the console after the passkey activation")
	if echo.Path != "/admin/page" || echo.RawQuery != "x=1&tab=users" {
		t.Errorf("the upstream got path %q query %q, want /admin/page and x=1&tab=users", echo.Path, echo.RawQuery)
	}
	if got := echo.Header.Values("X-Jit-User"); !slices.Equal(got, []string{"alice"}) {
		t.Errorf("the upstream's answer shows X-Jit-User %q, want [alice]", got)
	}
	if got := echo.Header.Values("X-Jit-Role"); !slices.Equal(got, []string{passkeyRole}) {
		t.Errorf("the upstream's answer shows X-Jit-Role %q, want [%s]", got, passkeyRole)
	}
	if echo.Header.Get("X-Jit-Session") == "" {
		t.Errorf("the upstream's answer shows no X-Jit-Session")
	}
	ck := a.sessionCookie()
	if ck == nil {
		t.Fatalf("the browser holds no %s cookie after the passkey activation", cookieName)
	}
	if _, claims := tokenParts(t, ck.Value); event(claims).str("amr") != `["hwk"]` {
		t.Errorf("the session token's amr is %v, want [\"hwk\"] (a device-bound passkey)", claims["amr"])
	}
	if used := alice.signCount(); used <= countAfterRegistration {
		t.Errorf("the authenticator's sign count is %v after the activation, %v after the registration: want it to grow with the assertion", used, countAfterRegistration)
	}

	id := credentialIDText(alice.credential)
	e.waitEvent(match{"event": "passkey_verified", "user": "alice", "credential_id": id, "rp_id": passkeyRPID})
	if ev := e.waitEvent(match{"event": "activation_succeeded", "user": "alice", "role": passkeyRole}); ev != nil && ev.str("amr") != `["hwk"]` {
		t.Errorf("audit: activation_succeeded has amr %s, want [\"hwk\"]: %v", ev.str("amr"), ev)
	}
	if evs := e.events(match{"event": "activation_failed"}); len(evs) != 0 {
		t.Errorf("audit: %d activation_failed events, want none: %v", len(evs), evs)
	}

	// Issue 14's acceptance goes on in P5 (a `fresh` route re-confirmed with the passkey,
	// TestBrowserPasskeyReconfirmsAFreshRoute) and P6 (the passkey removed, then refused,
	// TestBrowserPasskeyRemovedIsRefused), each with a Caddy and a browser of its own.
}

// P2. A step_up webauthn role takes no code. alice, who has a passkey, sends the
// activation form with a valid code added to it (as a script or a hand-made form would):
// refused, saying a passkey is needed and where to register one, with no session and
// nothing sent upstream. So is erin, who has no passkey, posting a plain form with her
// code. Without JavaScript, the page shows erin no code field but how to register a
// passkey, and alice that her passkey needs the script.
func TestBrowserPasskeyRoleRefusesACode(t *testing.T) {
	e := newPasskeyEnv(t)
	site := e.site(0)
	c := newChrome(t, 90*time.Second)
	alice := newPasskeyHolder(e, c, "alice")
	a := alice.tab
	alice.registerPasskey("work laptop")
	erin := e.enroll("erin")

	a.open(activationPath(passkeyRole, browserURI))
	a.wantActivationPage(passkeyRole, browserURI, "alice opening the activation page")
	a.typeInto("Justification", browserJustification)
	chromeEval[bool](a, "adding a code to the form", `(() => {
	const code = document.createElement('input');
	code.type = 'hidden';
	code.name = 'code';
	code.value = `+jsString(alice.totp.next(t))+`;
	document.querySelector('form[action="/.jit/activate"]').appendChild(code);
	return true;
})()`)
	if st := a.click("Activate " + passkeyRole); st != http.StatusBadRequest {
		t.Errorf("the activation form with a code answered %d, want 400", st)
	}
	s := a.state()
	for _, want := range []string{"Not activated", "needs a passkey or security key, not an authenticator code", "/.jit/enroll"} {
		if !strings.Contains(s.Text, want) {
			t.Errorf("the refusal of alice's code does not say %q: %s", want, s.Text)
		}
	}
	if a.sessionCookie() != nil {
		t.Errorf("alice's browser holds a %s cookie after her code was refused", cookieName)
	}
	if !a.passkeyButtonVisible("activate:" + passkeyRole) {
		t.Errorf("the page refusing alice's code does not offer her passkey: %s", s.Text)
	}
	e.waitEvent(match{"event": "activation_failed", "user": "alice", "role": passkeyRole, "reason": "passkey_required"})

	// erin has no passkey: a plain form post (no JavaScript anywhere) with her code.
	r := e.browser("erin").activate(site, passkeyRole, browserURI, erin.next(t), nil)
	if wantStatus(t, r, http.StatusBadRequest, "erin's activation with a code") {
		if text := pageText(t, r.Body); !strings.Contains(text, "needs a passkey or security key") || !strings.Contains(text, "/.jit/enroll") {
			t.Errorf("the refusal of erin's code does not say she needs a passkey and where to register one: %s", text)
		}
	}
	wfNoSessionCookie(t, r, "erin's activation with a code")
	e.waitEvent(match{"event": "activation_failed", "user": "erin", "role": passkeyRole, "reason": "passkey_required"})

	// The page as people without JavaScript see it.
	noJS := c.tab("erin-without-javascript", "erin", site)
	noJS.withoutScripts()
	noJS.open(activationPath(passkeyRole, browserURI))
	noJS.wantActivationPage(passkeyRole, browserURI, "erin opening the activation page without JavaScript")
	if n := chromeEval[int](noJS, "counting code fields", `document.querySelectorAll('input[name=code]').length`); n != 0 {
		t.Errorf("erin's activation page has %d code fields, want none: the role takes no code", n)
	}
	s = noJS.state()
	if want := "This role needs a passkey or security key, and you have none registered for this site."; !strings.Contains(s.Text, want) {
		t.Errorf("erin's activation page does not say %q: %s", want, s.Text)
	}
	if n := chromeEval[int](noJS, "finding the link to the passkeys page", `document.querySelectorAll('main a[href="/.jit/enroll"]').length`); n != 1 {
		t.Errorf("erin's activation page has %d links to /.jit/enroll, want 1", n)
	}
	if noJS.passkeyButtonVisible("activate:" + passkeyRole) {
		t.Errorf("erin's activation page shows a passkey button, and she has no passkey")
	}

	aliceNoJS := c.tab("alice-without-javascript", "alice", site)
	aliceNoJS.withoutScripts()
	aliceNoJS.open(activationPath(passkeyRole, browserURI))
	if s := aliceNoJS.state(); !strings.Contains(s.Text, "This role needs a passkey, which needs JavaScript") {
		t.Errorf("alice's activation page without JavaScript does not say that her passkey needs it: %s", s.Text)
	}
	if aliceNoJS.passkeyButtonVisible("activate:" + passkeyRole) {
		t.Errorf("alice's activation page without JavaScript shows a passkey button, which cannot work there")
	}

	wantNoUpstream(t, e.up, 0, "code activations of a step_up webauthn role")
	if evs := e.events(match{"event": "activation_succeeded"}); len(evs) != 0 {
		t.Errorf("audit: %d activation_succeeded events, want none: %v", len(evs), evs)
	}
}

// P3. A step_up webauthn role with approval: its approver, too, proves presence with a
// passkey. alice requests it with her passkey; bob's code alone is refused; bob, in his
// own browser context with his own authenticator and passkey, opens the request's page
// and approves with his passkey; alice's waiting page then takes her to the console.
func TestBrowserApproveWithAPasskey(t *testing.T) {
	e := newPasskeyApprovalEnv(t)
	site := e.site(0)
	c := newChrome(t, 120*time.Second)
	alice := newPasskeyHolder(e, c, "alice")
	bob := newPasskeyHolder(e, c, "bob")
	a, b := alice.tab, bob.tab
	alice.registerPasskey("work laptop")
	bob.registerPasskey("bob's laptop")

	// alice presses the form's own button, without a code: that asks for her passkey too.
	a.open(browserURI)
	a.wantActivationPage(passkeyApprovalRole, browserURI, "alice opening "+browserURI)
	a.typeInto("Justification", browserJustification)
	if st := a.click("Request " + passkeyApprovalRole); st != http.StatusOK {
		t.Errorf("the waiting page after the request answered %d, want 200", st)
	}
	waiting := a.state()
	id, ok := strings.CutPrefix(waiting.URL, site+"/.jit/requests/")
	if !ok || !wfRequestIDPattern.MatchString(id) {
		t.Fatalf("after requesting with her passkey, alice's browser is on %s, want %s/.jit/requests/ID; the page says: %s", waiting.URL, site, waiting.Text)
	}
	e.waitEvent(match{"event": "activation_requested", "request_id": id, "user": "alice"})
	e.waitEvent(match{"event": "passkey_verified", "user": "alice", "credential_id": credentialIDText(alice.credential)})

	// bob's code, without his passkey: refused, and the request still waits.
	plain := e.browser("bob")
	form := plain.approvalForm(site, id)
	if form == nil {
		t.Fatalf("bob's approvals page does not list request %s", id)
	}
	if form.Has("code") {
		t.Errorf("bob's decision form for a step_up webauthn role has a code field: %v", form)
	}
	r := plain.decide(site, form, "approve", "", bob.totp.next(t))
	if wantStatus(t, r, http.StatusBadRequest, "bob approving with a code") {
		if text := pageText(t, r.Body); !strings.Contains(text, "needs a passkey or security key") {
			t.Errorf("the refusal of bob's code does not say a passkey is needed: %s", text)
		}
	}
	e.waitEvent(match{"event": "approval_failed", "request_id": id, "by": "bob", "reason": "passkey_required"})
	if evs := e.events(match{"event": "request_approved"}); len(evs) != 0 {
		t.Fatalf("audit: the request was approved with bob's code alone: %v", evs)
	}

	// bob, in his own browser, on the request's own page, with his passkey.
	before := bob.signCount()
	b.open("/.jit/approvals/" + id)
	if s := b.state(); !strings.Contains(s.Text, passkeyApprovalRole+" for alice") || !strings.Contains(s.Text, browserJustification) {
		t.Fatalf("bob's page of request %s does not show alice's request for %s with its justification: %s", id, passkeyApprovalRole, s.Text)
	}
	if n := chromeEval[int](b, "counting code fields", `document.querySelectorAll('input[name=code]').length`); n != 0 {
		t.Errorf("bob's decision form has %d code fields, want none", n)
	}
	// A lone passkey button would not say whether it approves or denies: the decision
	// buttons ask for the passkey.
	if b.passkeyButtonVisible("decide:" + id) {
		t.Errorf("bob's decision form shows a passkey button beside Approve and Deny")
	}
	if st, _ := b.tryPasskeyStatus(); st != "Press Approve or Deny: your browser then asks for your passkey." {
		t.Errorf("bob's decision form says %q on its passkey line, want that Approve or Deny asks for the passkey", st)
	}
	b.typeInto("Comment", "checked with the on-call lead")
	if st := b.click("Approve"); st != http.StatusOK {
		t.Errorf("bob's approval with his passkey answered %d, want 200", st)
	}
	if s := b.state(); !strings.Contains(s.Text, "You approved alice's request for "+passkeyApprovalRole+" (1 of 1).") {
		st, _ := b.tryPasskeyStatus()
		t.Fatalf("bob's page after approving with his passkey does not say \"You approved alice's request for %s (1 of 1).\": %s (passkey status: %q)", passkeyApprovalRole, s.Text, st)
	}
	if after := bob.signCount(); after <= before {
		t.Errorf("bob's authenticator's sign count is %v after the approval, %v before: want it to grow with the assertion", after, before)
	}
	if b.sessionCookie() != nil {
		t.Errorf("bob's browser holds a %s cookie: the approver got a session", cookieName)
	}
	e.waitEvent(match{"event": "passkey_verified", "user": "bob", "credential_id": credentialIDText(bob.credential)})
	if ev := e.waitEvent(match{"event": "request_approved", "request_id": id, "by": "bob"}); ev != nil {
		if ev.str("amr") != `["hwk"]` || ev.str("comment") != "checked with the on-call lead" {
			t.Errorf("audit: request_approved has amr %s and comment %q, want [\"hwk\"] and bob's comment: %v", ev.str("amr"), ev.str("comment"), ev)
		}
	}

	// alice does nothing: her waiting page reloads itself (every 5 s) and goes on.
	want := site + browserURI
	s, ok := a.waitFor(20*time.Second, func(s pageState) bool { return s.URL == want })
	if !ok {
		t.Fatalf("alice's waiting page did not take her to %s within 20 s of the approval; it is on %s and says: %s", want, s.URL, s.Text)
	}
	echo := a.upstreamEcho(s, "the console after the approval")
	if got := echo.Header.Values("X-Jit-User"); !slices.Equal(got, []string{"alice"}) {
		t.Errorf("the upstream's answer shows X-Jit-User %q, want [alice]", got)
	}
	if got := echo.Header.Values("X-Jit-Role"); !slices.Equal(got, []string{passkeyApprovalRole}) {
		t.Errorf("the upstream's answer shows X-Jit-Role %q, want [%s]", got, passkeyApprovalRole)
	}
	if ev := e.waitEvent(match{"event": "activation_succeeded", "request_id": id, "user": "alice"}); ev != nil && ev.str("amr") != `["hwk"]` {
		t.Errorf("audit: activation_succeeded has amr %s, want alice's [\"hwk\"]: %v", ev.str("amr"), ev)
	}
}

// P4. The passkey pages for the documentation, checked for their readers at desktop and
// phone width (see docShots): the passkeys page empty and with one passkey, the
// activation page of a step_up webauthn role with its passkey button, and the approvals
// page of such a role, whose decision buttons ask for the approver's passkey. With
// JIT_SCREENSHOTS=DIR they are saved as DIR/passkeys-empty.png, passkeys.png,
// activate-passkey.png and approvals-passkey.png, each with a -phone twin.
func TestBrowserPasskeyPagesScreenshots(t *testing.T) {
	e := newEnv(t, envOptions{
		JitOptions: `
		role ops {
			max_duration 1h
			default_duration 30m
			justification required 10
			eligible alice
			step_up webauthn
		}
		role deploy {
			max_duration 1h
			default_duration 30m
			justification required 10
			eligible alice
			step_up webauthn
			approval {
				approvers bob
				count 1
			}
		}`,
		Sites: []siteSpec{{Auth: true, Jit: "\tjit " + passkeyRole + " " + passkeyApprovalRole}},
	})
	shots := newDocShots(t)
	c := newChrome(t, 120*time.Second)
	alice := newPasskeyHolder(e, c, "alice")
	bob := newPasskeyHolder(e, c, "bob")
	a, b := alice.tab, bob.tab

	alice.openPasskeysPage()
	shots.render(a, "passkeys-empty")
	alice.registerPasskey("work laptop")
	shots.render(a, "passkeys")

	a.open(activationPath(passkeyRole, adminURI))
	a.wantActivationPage(passkeyRole, adminURI, "alice opening the activation page of "+passkeyRole)
	if !a.passkeyButtonVisible("activate:" + passkeyRole) {
		t.Errorf("the activation page of %s shows alice no passkey button: %s", passkeyRole, a.state().Text)
	}
	shots.render(a, "activate-passkey")

	a.open(activationPath(passkeyApprovalRole, adminURI))
	a.typeInto("Justification", "deploying the hotfix for the login page")
	a.click("Request " + passkeyApprovalRole)
	if s := a.state(); !strings.HasPrefix(s.Title, "Waiting for approval") {
		t.Fatalf("after requesting %s alice's browser is on %s titled %q, want the waiting page; it says: %s", passkeyApprovalRole, s.URL, s.Title, s.Text)
	}

	bob.registerPasskey("bob's security key")
	b.open("/.jit/approvals")
	if s := b.state(); !strings.Contains(s.Text, passkeyApprovalRole+" for alice") || !strings.Contains(s.Text, "your browser then asks for your passkey") {
		t.Errorf("bob's approvals page does not list alice's request with its decision buttons asking for a passkey: %s", s.Text)
	}
	shots.render(b, "approvals-passkey")
	shots.report()
}
