package integration

import (
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// Real-browser tests: a headless Chromium (chromedp) clicks through the pages under
// /.jit/ the way a person does, with basic auth sent by the browser, against a real
// Caddy (newEnv). Helpers are in browser_helpers_test.go. With JIT_SCREENSHOTS=DIR,
// TestBrowserPagesScreenshots also saves PNGs of every page, at desktop and phone width.

// browserURI is the protected page the browser tests ask for: a query with two
// parameters, so that losing the second one on the way shows.
const browserURI = "/admin/page?x=1&tab=users"

// browserJustification is what the tests type as justification.
const browserJustification = "browser test: checking the users tab"

// B1. alice asks for a protected URL with a query, lands on the activation page, types
// a justification and her code into the labelled fields, submits, and the browser ends
// on exactly the URL she asked for, showing the upstream's answer made under her session.
func TestBrowserBlockedURLActivationAndBackToTheExactURL(t *testing.T) {
	e := newEnv(t, envOptions{})
	alice := e.enroll("alice")
	c := newChrome(t, 60*time.Second)
	a := c.tab("alice", "alice", e.site(0))

	if st := a.open(browserURI); st != http.StatusOK {
		t.Errorf("the activation page the gate redirected to answered %d, want 200", st)
	}
	a.wantActivationPage(roleAdmin, browserURI, "alice opening "+browserURI)
	wantNoUpstream(t, e.up, 0, "the protected URL without a session")
	if got := a.value("Duration"); got != "15m" {
		t.Errorf("the duration preselected is %q, want the role's default_duration 15m", got)
	}

	a.typeInto("Justification", browserJustification)
	a.typeInto("Authenticator code", alice.next(t))
	status := a.click("Activate " + roleAdmin)

	want := e.site(0) + browserURI
	s := a.state()
	if s.URL != want {
		t.Fatalf("after activating, the browser is on %s, want exactly %s; the page says: %s", s.URL, want, s.Text)
	}
	if status != http.StatusOK {
		t.Errorf("the protected URL after activation answered %d, want 200", status)
	}
	echo := a.upstreamEcho(s, "the protected URL after activation")
	if echo.Path != "/admin/page" || echo.RawQuery != "x=1&tab=users" {
		t.Errorf("the upstream got path %q query %q, want /admin/page and x=1&tab=users", echo.Path, echo.RawQuery)
	}
	if got := echo.Header.Values("X-Jit-User"); !slices.Equal(got, []string{"alice"}) {
		t.Errorf("the upstream's answer shows X-Jit-User %q, want [alice]", got)
	}
	if got := echo.Header.Values("X-Jit-Role"); !slices.Equal(got, []string{roleAdmin}) {
		t.Errorf("the upstream's answer shows X-Jit-Role %q, want [%s]", got, roleAdmin)
	}
	if echo.Header.Get("X-Jit-Session") == "" {
		t.Errorf("the upstream's answer shows no X-Jit-Session")
	}
	for _, v := range echo.Header.Values("Cookie") {
		if strings.Contains(v, cookieName) {
			t.Errorf("the session cookie reached the upstream: Cookie: %s", v)
		}
	}

	// The cookie the browser keeps: HttpOnly, SameSite=Lax, out of the page's reach.
	ck := a.sessionCookie()
	if ck == nil {
		t.Fatalf("the browser holds no %s cookie after activation", cookieName)
	}
	if !ck.HTTPOnly || ck.SameSite != "Lax" || ck.Path != "/" {
		t.Errorf("the browser's %s cookie: HttpOnly=%v SameSite=%q Path=%q, want HttpOnly, Lax, /", cookieName, ck.HTTPOnly, ck.SameSite, ck.Path)
	}
	if dc := chromeEval[string](a, "reading document.cookie", "document.cookie"); strings.Contains(dc, cookieName) {
		t.Errorf("the page's script can read the session cookie: document.cookie = %q", dc)
	}
	e.waitEvent(match{"event": "activation_succeeded", "user": "alice", "role": roleAdmin})
}

// B2. A role that needs carol's approval: alice requests it in one browser and waits;
// carol, in another browser context, approves it on /.jit/approvals with her code and
// a comment; alice's waiting page reloads itself and lands on the protected URL, without
// another code.
func TestBrowserApprovalBySecondUserInSecondContext(t *testing.T) {
	const role = "deploy"
	e := newEnv(t, envOptions{
		JitOptions: `
		role deploy {
			max_duration 1h
			justification required 10
			eligible alice
			approval {
				approvers carol
			}
		}`,
		Sites: []siteSpec{{Auth: true, Jit: "\tjit " + role}},
	})
	site := e.site(0)
	alice, carol := e.enroll("alice"), e.enroll("carol")
	c := newChrome(t, 60*time.Second)
	a := c.tab("alice", "alice", site)
	cb := c.tab("carol", "carol", site)

	a.open(browserURI)
	a.wantActivationPage(role, browserURI, "alice opening "+browserURI)
	if s := a.state(); !strings.Contains(s.Text, "This role needs the approval of 1 of: carol") {
		t.Errorf("the activation page does not say who approves: %s", s.Text)
	}
	a.typeInto("Justification", browserJustification)
	a.typeInto("Authenticator code", alice.next(t))
	if st := a.click("Request " + role); st != http.StatusOK {
		t.Errorf("the waiting page answered %d, want 200", st)
	}
	waiting := a.state()
	id, ok := strings.CutPrefix(waiting.URL, site+"/.jit/requests/")
	if !ok || !wfRequestIDPattern.MatchString(id) {
		t.Fatalf("after the request, alice's browser is on %s, want %s/.jit/requests/ID; the page says: %s", waiting.URL, site, waiting.Text)
	}
	if !strings.HasPrefix(waiting.Title, "Waiting for approval") || !strings.Contains(waiting.Text, "This page checks again every 5 seconds") {
		t.Errorf("alice's waiting page: title %q, text %q; want \"Waiting for approval\" and that it checks again every 5 seconds", waiting.Title, waiting.Text)
	}
	if got := chromeEval[string](a, "reading the meta refresh",
		`(document.querySelector('meta[http-equiv="refresh" i]') || {content: ''}).content`); got != "5" {
		t.Errorf("alice's waiting page: <meta http-equiv=refresh content=%q>, want \"5\"", got)
	}
	if a.sessionCookie() != nil {
		t.Errorf("alice's browser holds a %s cookie before any approval", cookieName)
	}
	wantNoUpstream(t, e.up, 0, "while the request waits")

	// carol, in a browser context of her own, decides.
	cb.open("/.jit/approvals")
	if s := cb.state(); !strings.Contains(s.Text, role+" for alice") || !strings.Contains(s.Text, browserJustification) {
		t.Fatalf("carol's approvals page does not list alice's request for %s with its justification: %s", role, s.Text)
	}
	cb.typeInto("Comment", "looks fine, go ahead")
	cb.typeInto("Authenticator code", carol.next(t))
	if st := cb.click("Approve"); st != http.StatusOK {
		t.Errorf("carol's approval answered %d, want 200", st)
	}
	if s := cb.state(); !strings.Contains(s.Text, "You approved alice's request for "+role+" (1 of 1).") {
		t.Errorf("carol's page after approving does not say \"You approved alice's request for %s (1 of 1).\": %s", role, s.Text)
	}
	if cb.sessionCookie() != nil {
		t.Errorf("carol's browser holds a %s cookie: the approver got a session", cookieName)
	}

	// alice does nothing: her waiting page reloads itself (every 5 s) and goes on.
	want := site + browserURI
	s, ok := a.waitFor(12*time.Second, func(s pageState) bool { return s.URL == want })
	if !ok {
		t.Fatalf("alice's waiting page did not take her to %s within 12 s of the approval; it is on %s and says: %s", want, s.URL, s.Text)
	}
	echo := a.upstreamEcho(s, "the protected URL after the approval")
	if got := echo.Header.Values("X-Jit-User"); !slices.Equal(got, []string{"alice"}) {
		t.Errorf("the upstream's answer shows X-Jit-User %q, want [alice]", got)
	}
	if got := echo.Header.Values("X-Jit-Role"); !slices.Equal(got, []string{role}) {
		t.Errorf("the upstream's answer shows X-Jit-Role %q, want [%s]", got, role)
	}
	if echo.RawQuery != "x=1&tab=users" {
		t.Errorf("the upstream got the query %q, want x=1&tab=users", echo.RawQuery)
	}
	if ev := e.waitEvent(match{"event": "request_approved", "request_id": id, "by": "carol"}); ev != nil && ev.str("comment") != "looks fine, go ahead" {
		t.Errorf("audit: request_approved has comment %q, want carol's comment: %v", ev.str("comment"), ev)
	}
	e.waitEvent(match{"event": "activation_succeeded", "request_id": id, "user": "alice"})
	// Only two codes were ever used: alice's for the request, carol's for the approval.
	if n := len(e.events(match{"event": "activation_failed"})); n != 0 {
		t.Errorf("audit: %d activation_failed events, want none", n)
	}
}

// B3. After activation, alice opens /.jit/, clicks "Deactivate console-admin", and the
// protected URL sends her back to the activation page; the old token is dead too.
func TestBrowserDeactivate(t *testing.T) {
	e := newEnv(t, envOptions{})
	site := e.site(0)
	alice := e.enroll("alice")
	c := newChrome(t, 60*time.Second)
	a := c.tab("alice", "alice", site)

	a.open(browserURI)
	a.typeInto("Justification", browserJustification)
	a.typeInto("Authenticator code", alice.next(t))
	a.click("Activate " + roleAdmin)
	if s := a.state(); s.URL != site+browserURI {
		t.Fatalf("after activating, the browser is on %s, want %s; the page says: %s", s.URL, site+browserURI, s.Text)
	}
	ck := a.sessionCookie()
	if ck == nil {
		t.Fatalf("the browser holds no %s cookie after activation", cookieName)
	}
	token := ck.Value

	a.open("/.jit/")
	s := a.state()
	if !strings.Contains(s.Text, roleAdmin+" until") || !strings.Contains(s.Text, "Why: "+browserJustification) {
		t.Fatalf("the status page does not show the active %s session with its justification: %s", roleAdmin, s.Text)
	}
	if st := a.click("Deactivate " + roleAdmin); st != http.StatusOK {
		t.Errorf("the status page after deactivation answered %d, want 200", st)
	}
	s = a.state()
	if s.URL != site+"/.jit/" || !strings.Contains(s.Text, "No active session.") {
		t.Errorf("after deactivation the browser is on %s saying %q; want %s/.jit/ saying \"No active session.\"", s.URL, s.Text, site)
	}
	if a.sessionCookie() != nil {
		t.Errorf("the browser still holds a %s cookie after deactivation", cookieName)
	}
	hits := e.up.count()
	a.open(browserURI)
	a.wantActivationPage(roleAdmin, browserURI, "the protected URL after deactivation")

	// Not merely the cookie cleared: the token itself is refused.
	a.putSessionCookie(token)
	a.open(browserURI)
	a.wantActivationPage(roleAdmin, browserURI, "the protected URL with the deactivated token put back")
	wantNoUpstream(t, e.up, hits, "after deactivation")
	e.waitEvent(match{"event": "deactivated", "user": "alice"})
}

// B4. A 2 s session: the duration select offers only durations up to the role's 3 s
// maximum, with 2 s preselected; once the session is over, reloading the protected
// URL shows the activation page, also with the expired token put back into the browser.
func TestBrowserExpiry(t *testing.T) {
	const role = "quick"
	e := newEnv(t, envOptions{
		JitOptions: `
		role quick {
			max_duration 3s
			default_duration 2s
			justification required 10
			eligible alice
		}`,
		Sites: []siteSpec{{Auth: true, Jit: "\tjit " + role}},
	})
	site := e.site(0)
	alice := e.enroll("alice")
	c := newChrome(t, 60*time.Second)
	a := c.tab("alice", "alice", site)

	a.open(browserURI)
	a.wantActivationPage(role, browserURI, "alice opening "+browserURI)
	options := chromeEval[[]string](a, "listing the durations", `[...document.getElementById('duration').options].map(o => o.value)`)
	if !slices.Equal(options, []string{"2s", "3s"}) {
		t.Errorf("the duration select offers %q, want [2s 3s] (nothing longer than max_duration 3s)", options)
	}
	if got := a.value("Duration"); got != "2s" {
		t.Errorf("the duration preselected is %q, want the default_duration 2s", got)
	}
	a.typeInto("Justification", browserJustification)
	a.typeInto("Authenticator code", alice.next(t))
	a.click("Activate " + role)
	s := a.state()
	if s.URL != site+browserURI {
		t.Fatalf("after activating, the browser is on %s, want %s; the page says: %s", s.URL, site+browserURI, s.Text)
	}
	if got := a.upstreamEcho(s, "the protected URL right after activation").Header.Get("X-Jit-User"); got != "alice" {
		t.Errorf("the upstream's answer shows X-Jit-User %q, want alice", got)
	}
	ck := a.sessionCookie()
	if ck == nil {
		t.Fatalf("the browser holds no %s cookie right after activation", cookieName)
	}
	token := ck.Value
	if left := time.Until(tokenExpiry(t, token)); left > 3*time.Second {
		t.Errorf("the session token expires in %s, want at most 2 s (+ rounding)", left)
	}

	sleepUntil(t, tokenExpiry(t, token).Add(1100*time.Millisecond), "until the 2 s session is over")
	hits := e.up.count()
	a.reload()
	a.wantActivationPage(role, browserURI, "reloading the protected URL after expiry")

	// The server refuses the expired token, whatever the browser's cookie jar did.
	a.putSessionCookie(token)
	a.reload()
	a.wantActivationPage(role, browserURI, "the protected URL with the expired token put back")
	wantNoUpstream(t, e.up, hits, "after expiry")
}

// B5. Every page, rendered by a real browser at desktop (1200 px) and phone (390 px)
// width: the activation page, the waiting-for-approval page, the approvals page, the
// status page with an active session and an error (a wrong code). Each is checked for
// what its readers need (see wantAccessible); the error summary must be an alert that
// links to the field. With JIT_SCREENSHOTS=DIR, each is also saved as DIR/NAME.png and
// DIR/NAME-phone.png.
func TestBrowserPagesScreenshots(t *testing.T) {
	const approvalRole = "deploy"
	e := newEnv(t, envOptions{
		JitOptions: `
		role deploy {
			max_duration 1h
			default_duration 30m
			justification required 10
			eligible alice
			approval {
				approvers carol
			}
		}`,
		Sites: []siteSpec{{Auth: true, Jit: "\tjit " + roleAdmin + " " + approvalRole}},
	})
	site := e.site(0)
	alice := e.enroll("alice")
	e.enroll("carol")
	shotsDir := os.Getenv("JIT_SCREENSHOTS")
	if shotsDir != "" {
		if err := os.MkdirAll(shotsDir, 0o755); err != nil {
			t.Fatalf("JIT_SCREENSHOTS=%s: %v", shotsDir, err)
		}
	}
	c := newChrome(t, 80*time.Second)
	a := c.tab("alice", "alice", site)
	cb := c.tab("carol", "carol", site)

	// render checks a page at both widths and, when asked, saves the screenshots.
	var saved []string
	render := func(tb *chromeTab, name string) pageFacts {
		t.Helper()
		tb.viewport(1200, 800, false, 1)
		f := tb.wantAccessible(name + " page")
		if shotsDir != "" {
			saved = append(saved, saveShot(t, tb, filepath.Join(shotsDir, name+".png")))
		}
		tb.viewport(390, 844, true, 2)
		tb.wantNoSidewaysScroll(name + " page at 390 px")
		if shotsDir != "" {
			saved = append(saved, saveShot(t, tb, filepath.Join(shotsDir, name+"-phone.png")))
		}
		tb.viewport(1200, 800, false, 1)
		return f
	}

	// The activation page, as the gate sends alice to it.
	a.open(adminURI)
	a.wantActivationPage(roleAdmin, adminURI, "alice opening "+adminURI)
	if f := render(a, "activate"); f.ErrorSummary != nil {
		t.Errorf("the activation page shows an error summary before anything was sent: %+v", f.ErrorSummary)
	}

	// An error: a wrong code. The summary is an alert linking to the code field.
	a.typeInto("Justification", browserJustification)
	a.typeInto("Authenticator code", alice.wrong(t))
	if st := a.click("Activate " + roleAdmin); st != http.StatusBadRequest {
		t.Errorf("a wrong code answered %d, want 400", st)
	}
	f := render(a, "error")
	switch {
	case f.ErrorSummary == nil:
		t.Errorf("after a wrong code the page has no #error-summary; it says: %s", a.state().Text)
	case f.ErrorSummary.Role != "alert":
		t.Errorf("the error summary has role=%q, want alert", f.ErrorSummary.Role)
	case !slices.Equal(f.ErrorSummary.Links, []string{"code"}):
		t.Errorf("the error summary links to %q, want [code] (the code field)", f.ErrorSummary.Links)
	default:
		if got := chromeEval[string](a, "reading aria-invalid", `document.getElementById('code').getAttribute('aria-invalid') || ''`); got != "true" {
			t.Errorf("the code field has aria-invalid=%q after a wrong code, want true", got)
		}
		a.clickLink("#error-summary", "#code")
		if got := chromeEval[string](a, "reading the focused element", `document.activeElement ? document.activeElement.id : ''`); got != "code" {
			t.Errorf("following the error summary's link focused %q, want the code field", got)
		}
	}
	if got := a.value("Justification"); got != browserJustification {
		t.Errorf("after a wrong code the form kept the justification %q, want %q", got, browserJustification)
	}
	if got := a.value("Authenticator code"); got != "" {
		t.Errorf("after a wrong code the form kept the code %q, want it empty", got)
	}

	// Right code: the session starts; the status page shows it.
	a.typeInto("Authenticator code", alice.next(t))
	a.click("Activate " + roleAdmin)
	if s := a.state(); s.URL != site+adminURI {
		t.Fatalf("after activating, the browser is on %s, want %s; the page says: %s", s.URL, site+adminURI, s.Text)
	}
	a.open("/.jit/")
	if s := a.state(); !strings.Contains(s.Text, roleAdmin+" until") {
		t.Errorf("the status page shows no active %s session: %s", roleAdmin, s.Text)
	}
	render(a, "status")

	// A request that waits for carol.
	a.open(activationPath(approvalRole, adminURI))
	a.typeInto("Justification", "deploying the hotfix for the login page")
	a.typeInto("Authenticator code", alice.next(t))
	a.click("Request " + approvalRole)
	if s := a.state(); !strings.HasPrefix(s.Title, "Waiting for approval") {
		t.Fatalf("after requesting %s alice's browser is on %s titled %q, want the waiting page; it says: %s", approvalRole, s.URL, s.Title, s.Text)
	}
	render(a, "waiting")

	// carol's approvals page lists it.
	cb.open("/.jit/approvals")
	if s := cb.state(); !strings.Contains(s.Text, approvalRole+" for alice") {
		t.Errorf("carol's approvals page does not list alice's request: %s", s.Text)
	}
	render(cb, "approvals")

	if shotsDir != "" {
		t.Logf("screenshots: %s", strings.Join(saved, ", "))
	}
}

// saveShot writes a full-page PNG of the tab to path and returns path.
func saveShot(t *testing.T, tb *chromeTab, path string) string {
	t.Helper()
	png, err := tb.screenshot()
	if err != nil {
		t.Fatalf("screenshot for %s: %v", path, err)
	}
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}
