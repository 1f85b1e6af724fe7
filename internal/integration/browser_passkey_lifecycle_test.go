package integration

import (
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"
)

// Real-browser tests of a passkey's later life: a fresh route re-confirmed with it, and
// the passkey removed by an operator and refused. Helpers are in
// browser_passkey_helpers_test.go; the first tests in browser_passkey_test.go.

// freshPasskeyURI is a console page that needs a step-up younger than passkeyFresh.
const freshPasskeyURI = "/admin/danger/zone?n=1&tab=keys"

// newPasskeyFreshEnv is a Caddy with one site gated by passkeyRole whose deletes and
// posts, and whose pages under /admin/danger, need a step-up younger than passkeyFresh:
// the Caddyfile of docs/caddyfile.md's `fresh`. The gate's own pages (/.jit/…), whose
// forms are posts, are served by the jit handlers before any rule.
func newPasskeyFreshEnv(t *testing.T) *env {
	t.Helper()
	fresh := " " + passkeyRole + " {\n\t\tfresh " + passkeyFresh.String() + "\n\t}"
	return newEnv(t, envOptions{
		JitOptions: passkeyRoleOptions,
		Sites: []siteSpec{{Auth: true, Jit: "\t@deletes method DELETE POST\n\t@danger path /admin/danger*\n" +
			"\tjit " + passkeyRole + "\n\tjit @deletes" + fresh + "\n\tjit @danger" + fresh}},
	})
}

// P5. A `fresh` route with a passkey: alice activates with her passkey, waits until her
// step-up is older than the route's fresh, and opens a page under /admin/danger. The
// browser lands on the re-confirmation page, which offers her passkey and no code; she
// presses "Use a passkey" and is back on exactly that URL, answered by the upstream.
// The session keeps its id and its end (nothing is extended); its step-up time and amr
// are the passkey's. With JIT_SCREENSHOTS=DIR the page is saved as
// DIR/reconfirm-passkey.png and reconfirm-passkey-phone.png (see docShots).
func TestBrowserPasskeyReconfirmsAFreshRoute(t *testing.T) {
	e := newPasskeyFreshEnv(t)
	site := e.site(0)
	shots := newDocShots(t)
	c := newChrome(t, 120*time.Second)
	alice := newPasskeyHolder(e, c, "alice")
	a := alice.tab
	alice.registerPasskey("work laptop")

	// The activation form posts through `@deletes method DELETE POST`: the gate's own
	// pages are not gated.
	a.open(browserURI)
	a.wantActivationPage(passkeyRole, browserURI, "alice opening "+browserURI)
	a.activateWithPasskey(passkeyRole, browserJustification)
	if s := a.state(); s.URL != site+browserURI {
		st, _ := a.tryPasskeyStatus()
		t.Fatalf("after activating with the passkey, the browser is on %s, want %s; the page says: %s (passkey status: %q)", s.URL, site+browserURI, s.Text, st)
	}
	ck := a.sessionCookie()
	if ck == nil {
		t.Fatalf("the browser holds no %s cookie after the passkey activation", cookieName)
	}
	sid, end, steppedUp := sessionID(t, ck.Value), tokenExpiry(t, ck.Value), authTime(t, ck.Value)
	storedEnd := e.storedExpiry("alice", sid)

	sleepUntil(t, steppedUp.Add(passkeyFresh+500*time.Millisecond), "alice's step-up ages past fresh "+passkeyFresh.String())

	before, countBefore := e.up.count(), alice.signCount()
	a.open(freshPasskeyURI)
	s := a.state()
	rel, ok := strings.CutPrefix(s.URL, site)
	if !ok || !strings.HasPrefix(s.Title, "Confirm it is you") {
		t.Fatalf("alice opening %s with a step-up older than %s: the browser is on %s titled %q, want the re-confirmation page; it says: %s",
			freshPasskeyURI, passkeyFresh, s.URL, s.Title, s.Text)
	}
	reconfirmLocation(t, rel, sid, freshPasskeyURI)
	wantNoUpstreamPage(t, e.up, before, "the fresh route with an old step-up")
	if ev := e.waitEvent(match{"event": "reauth_required", "session_id": sid, "uri": freshPasskeyURI}); ev != nil && ev.str("fresh") != passkeyFresh.String() {
		t.Errorf("audit: reauth_required has fresh %q, want %q: %v", ev.str("fresh"), passkeyFresh, ev)
	}
	if n := chromeEval[int](a, "counting code fields", `document.querySelectorAll('input[name=code]').length`); n != 0 {
		t.Errorf("the re-confirmation page of the step_up webauthn role has %d code fields, want none", n)
	}
	if !a.passkeyButtonVisible("reconfirm:" + sid) {
		t.Fatalf("the re-confirmation page shows alice no \"Use a passkey\" button: %s", s.Text)
	}
	if want := "confirming does not extend it"; !strings.Contains(s.Text, want) {
		t.Errorf("the re-confirmation page does not say %q: %s", want, s.Text)
	}
	shots.render(a, "reconfirm-passkey")

	status := a.pressPasskey(passkeyButtonJS("reconfirm:" + sid))
	s = a.state()
	if s.URL != site+freshPasskeyURI {
		st, _ := a.tryPasskeyStatus()
		t.Fatalf("after re-confirming with the passkey, the browser is on %s, want exactly %s; the page says: %s (passkey status: %q)",
			s.URL, site+freshPasskeyURI, s.Text, st)
	}
	if status != http.StatusOK {
		t.Errorf("the fresh route after the re-confirmation answered %d, want 200", status)
	}
	echo := a.upstreamEcho(s, "the fresh route after the re-confirmation")
	if echo.Path != "/admin/danger/zone" || echo.RawQuery != "n=1&tab=keys" {
		t.Errorf("the upstream got path %q query %q, want /admin/danger/zone and n=1&tab=keys", echo.Path, echo.RawQuery)
	}
	if got := echo.Header.Values("X-Jit-User"); !slices.Equal(got, []string{"alice"}) {
		t.Errorf("the upstream's answer shows X-Jit-User %q, want [alice]", got)
	}
	wantOneAccess(t, e, freshPasskeyURI, passkeyFresh.String())

	// The same session, with its end; a new step-up, by the passkey.
	ck = a.sessionCookie()
	if ck == nil {
		t.Fatalf("the browser holds no %s cookie after the re-confirmation", cookieName)
	}
	if got := sessionID(t, ck.Value); got != sid {
		t.Errorf("after the re-confirmation the browser holds session %s, want still %s", got, sid)
	}
	if got := tokenExpiry(t, ck.Value); !got.Equal(end) {
		t.Errorf("the re-confirmed token ends at %s, want still %s: re-confirming must not extend", got, end)
	}
	if got := authTime(t, ck.Value); !got.After(steppedUp) {
		t.Errorf("the re-confirmed token's auth_time is %s, want after the activation's %s", got, steppedUp)
	}
	if _, claims := tokenParts(t, ck.Value); event(claims).str("amr") != `["hwk"]` {
		t.Errorf("the re-confirmed token's amr is %v, want [\"hwk\"]", claims["amr"])
	}
	if got := e.storedExpiry("alice", sid); !got.Equal(storedEnd) {
		t.Errorf("the admin API lists alice's session ending at %s after the re-confirmation, %s before: want it unchanged", got, storedEnd)
	}
	if used := alice.signCount(); used <= countBefore {
		t.Errorf("the authenticator's sign count is %v after the re-confirmation, %v before: want it to grow with the assertion", used, countBefore)
	}
	if ev := e.waitEvent(match{"event": "session_reconfirmed", "session_id": sid, "user": "alice"}); ev != nil && ev.str("amr") != `["hwk"]` {
		t.Errorf("audit: session_reconfirmed has amr %s, want [\"hwk\"]: %v", ev.str("amr"), ev)
	}
	if n := len(e.events(match{"event": "passkey_verified", "user": "alice", "credential_id": credentialIDText(alice.credential)})); n != 2 {
		t.Errorf("audit: %d passkey_verified events of alice's passkey, want 2 (the activation and the re-confirmation)", n)
	}
	for _, name := range []string{"extended", "reconfirm_failed", "passkey_failed"} {
		if evs := e.events(match{"event": name}); len(evs) != 0 {
			t.Errorf("audit: %d %s events, want none: %v", len(evs), name, evs)
		}
	}
	shots.report()
}

// P6. An operator removes alice's passkey with the admin API (what `caddy jit
// credentials remove` calls) while two windows of hers are open, each with the key in
// its authenticator: in one her passkey prompt is under way (the server has begun the
// ceremony), the other shows the activation page from before the removal. The key is
// refused either way: the ceremony under way ends with the authenticator's assertion
// refused, and the page from before cannot begin one. No session, nothing upstream;
// the removal and both refusals are audited.
func TestBrowserPasskeyRemovedIsRefused(t *testing.T) {
	e := newPasskeyEnv(t)
	site := e.site(0)
	c := newChrome(t, 120*time.Second)
	alice := newPasskeyHolder(e, c, "alice")
	a := alice.tab
	alice.registerPasskey("work laptop")
	id := credentialIDText(alice.credential)

	// The passkey works: alice activates with it, then deactivates on her status page.
	a.open(browserURI)
	a.wantActivationPage(passkeyRole, browserURI, "alice opening "+browserURI)
	a.activateWithPasskey(passkeyRole, browserJustification)
	if s := a.state(); s.URL != site+browserURI {
		st, _ := a.tryPasskeyStatus()
		t.Fatalf("after activating with the passkey, the browser is on %s, want %s; the page says: %s (passkey status: %q)", s.URL, site+browserURI, s.Text, st)
	}
	a.open("/.jit/")
	if st := a.click("Deactivate " + passkeyRole); st != http.StatusOK {
		t.Errorf("the status page after deactivation answered %d, want 200", st)
	}
	if a.sessionCookie() != nil {
		t.Fatalf("alice's browser still holds a %s cookie after deactivating", cookieName)
	}
	e.waitEvent(match{"event": "deactivated", "user": "alice", "role": passkeyRole})

	// A second window, with the same key, shows the activation page before the removal.
	other := alice.secondWindow(c, "alice-second-window")
	o := other.tab
	o.open(activationPath(passkeyRole, browserURI))
	o.wantActivationPage(passkeyRole, browserURI, "alice's second window opening the activation page")
	if !o.passkeyButtonVisible("activate:" + passkeyRole) {
		t.Fatalf("the activation page in alice's second window shows no passkey button: %s", o.state().Text)
	}
	o.typeInto("Justification", browserJustification)

	// In the first window she presses "Use a passkey": the server begins the ceremony,
	// offering her passkey, and the answer is held before the page's script gets it...
	a.open(browserURI)
	a.wantActivationPage(passkeyRole, browserURI, "alice opening "+browserURI+" after deactivating")
	a.typeInto("Justification", browserJustification)
	upstreamBefore, countBefore := e.up.count(), alice.signCount()
	held := a.pressPasskeyHeld(passkeyButtonJS("activate:" + passkeyRole))
	if held.Status != http.StatusOK {
		t.Fatalf("the server answered the passkey button's request with %d, want 200 and the ceremony's options: %s", held.Status, held.Body)
	}
	if offered := held.allowedCredentials(); !slices.Equal(offered, []string{id}) {
		t.Fatalf("the ceremony offers the credentials %q, want alice's passkey [%s]", offered, id)
	}

	// ... while an operator removes the passkey, found by its listing.
	listed := e.passkeysOf("alice")
	if len(listed) != 1 || listed[0].ID != id || listed[0].Name != "work laptop" || listed[0].RPID != passkeyRPID || listed[0].LastUsed == nil {
		t.Fatalf("GET /jit/credentials/alice lists %+v, want her work laptop %s at %s, used", listed, id, passkeyRPID)
	}
	if left := e.removePasskey("alice", id, "integration-op", "laptop lost"); left != 0 {
		t.Errorf("after the removal alice has %d passkeys left, want 0", left)
	}
	if ev := e.waitEvent(match{"event": "passkey_removed", "user": "alice", "credential_id": id, "reason": "laptop lost"}); ev != nil &&
		!strings.HasPrefix(ev.str("by"), "integration-op") {
		t.Errorf("audit: passkey_removed by %q, want integration-op's doing: %v", ev.str("by"), ev)
	}
	if listed := e.passkeysOf("alice"); len(listed) != 0 {
		t.Errorf("after the removal GET /jit/credentials/alice lists %+v, want none", listed)
	}
	if n := len(alice.auth.credentials()); n != 1 {
		t.Fatalf("alice's authenticator holds %d credentials, want still the removed one", n)
	}

	// The script gets the options; the authenticator answers with the removed key, and
	// the form is sent: refused.
	status := held.release()
	if used := alice.signCount(); used <= countBefore {
		t.Errorf("the authenticator's sign count is %v after the held ceremony, %v before: the removed key was not tried", used, countBefore)
	}
	s := a.state()
	if status != http.StatusBadRequest {
		t.Errorf("the activation with the removed passkey answered %d, want 400", status)
	}
	for _, want := range []string{"Not activated", "That passkey is not registered for you on this site: register one on /.jit/enroll, or use another."} {
		if !strings.Contains(s.Text, want) {
			t.Errorf("the refusal of the removed passkey (%s) does not say %q: %s", s.URL, want, s.Text)
		}
	}
	if a.sessionCookie() != nil {
		t.Errorf("alice's browser holds a %s cookie after the removed passkey was refused", cookieName)
	}
	e.waitEvent(match{"event": "passkey_failed", "user": "alice", "credential_id": id, "reason": "passkey_unknown_credential"})
	e.waitEvent(match{"event": "activation_failed", "user": "alice", "role": passkeyRole, "reason": "passkey_unknown_credential"})
	// The refusal's page knows she has none left: no button, the way to register one.
	if a.passkeyButtonVisible("activate:" + passkeyRole) {
		t.Errorf("the page refusing the removed passkey still offers a passkey button")
	}
	if want := "you have none registered for this site"; !strings.Contains(s.Text, want) {
		t.Errorf("the page refusing the removed passkey does not say %q: %s", want, s.Text)
	}

	// The second window's page from before the removal still shows the button; pressed,
	// the server begins no ceremony, and the key in that authenticator is never asked.
	otherCount := other.signCount()
	o.pressPasskeyForNoPage(passkeyButtonJS("activate:"+passkeyRole),
		"Passkey not used: you have no passkey for this site: register one on /.jit/enroll")
	if used := other.signCount(); used != otherCount {
		t.Errorf("the second window's authenticator signed (count %v, was %v): the server began a ceremony for a removed passkey", used, otherCount)
	}
	if o.sessionCookie() != nil {
		t.Errorf("alice's second window holds a %s cookie", cookieName)
	}
	e.waitEvent(match{"event": "passkey_failed", "user": "alice", "ceremony": "login", "reason": "passkey_not_registered"})

	wantNoUpstreamPage(t, e.up, upstreamBefore, "alice's activations with the removed passkey")
	if n := len(e.events(match{"event": "activation_succeeded", "user": "alice"})); n != 1 {
		t.Errorf("audit: %d activation_succeeded events of alice, want 1 (before the removal)", n)
	}
	if n := len(e.events(match{"event": "passkey_verified", "user": "alice"})); n != 1 {
		t.Errorf("audit: %d passkey_verified events of alice, want 1 (before the removal)", n)
	}
	if active := e.sessions("?user=alice"); len(active) != 0 {
		t.Errorf("the admin API lists active sessions of alice after the removal: %+v", active)
	}
}
