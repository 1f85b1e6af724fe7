package integration

import (
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
)

// B-pickup. alice requests a role that needs carol's approval and leaves the waiting
// page. Later, the approval given, she opens the console again in the same browser and
// is admitted at once, with no code. A second browser context signed in as alice (her
// password, nothing more) gets nothing, before or after.
func TestBrowserPickupAfterLeavingTheWaitingPage(t *testing.T) {
	e := newPickupEnv(t)
	site := e.site(0)
	alice, carol := e.enroll("alice"), e.enroll("carol")
	c := newChrome(t, 90*time.Second)
	a := c.tab("alice", "alice", site)
	other := c.tab("alice-elsewhere", "alice", site)

	a.open(browserURI)
	a.wantActivationPage(pickupRole, browserURI, "alice opening "+browserURI)
	a.typeInto("Justification", browserJustification)
	a.typeInto("Authenticator code", alice.next(t))
	a.click("Request " + pickupRole)
	id, ok := strings.CutPrefix(a.state().URL, site+"/.jit/requests/")
	if !ok || !wfRequestIDPattern.MatchString(id) {
		t.Fatalf("after the request, alice's browser is on %s, want the waiting page", a.state().URL)
	}

	// She leaves. What she carries away is an HttpOnly, SameSite=Lax secret that lasts
	// as long as the request could still end in a session: the approval's 24 h deadline
	// and the session's hour, so coming back hours later still works.
	a.leave()
	pc := a.cookieNamed(cookieName + "_pickup_" + id)
	if pc == nil {
		t.Fatalf("alice's browser holds no pickup secret for request %s", id)
	}
	if !pc.HTTPOnly || pc.SameSite != network.CookieSameSiteLax || pc.Path != "/" {
		t.Errorf("the pickup cookie: HttpOnly=%v SameSite=%q Path=%q, want HttpOnly, Lax, /", pc.HTTPOnly, pc.SameSite, pc.Path)
	}
	if left := time.Until(time.Unix(int64(pc.Expires), 0)); left < 24*time.Hour+50*time.Minute || left > 25*time.Hour+time.Minute {
		t.Errorf("the pickup cookie lasts %s, want the request's 24 h deadline plus the session's 1 h", left.Round(time.Minute))
	}

	// The other context, before the approval: the console shows the open request,
	// not a form for a second one.
	other.open(browserURI)
	if s := other.state(); !strings.Contains(s.Text, "You already have a request for "+pickupRole) || strings.Contains(s.Text, "Authenticator code") {
		t.Errorf("the second context's console while the request waits: want the open request and no form, got %s: %s", s.URL, s.Text)
	}

	cb := e.browser("carol")
	if r := cb.decide(site, cb.approvalForm(site, id), "approve", "", carol.next(t)); !wantStatus(t, r, http.StatusOK, "carol approves") {
		t.FailNow()
	}

	// The other context, after the approval: still nothing.
	other.open(browserURI)
	if s := other.state(); s.URL == site+browserURI || !strings.Contains(s.Text, "goes only to the browser you made the request in") {
		t.Errorf("the second context after the approval: want the request's page saying the session is not here, got %s: %s", s.URL, s.Text)
	}
	if other.sessionCookie() != nil {
		t.Fatalf("the second context holds a session cookie")
	}
	wantNoUpstream(t, e.up, 0, "the second context's requests")

	// alice comes back to the console in her own browser: admitted, no code asked.
	a.open(browserURI)
	s := a.state()
	if s.URL != site+browserURI {
		t.Fatalf("alice back on the console: the browser is on %s, want %s; the page says: %s", s.URL, site+browserURI, s.Text)
	}
	if got := a.upstreamEcho(s, "the console after the approval").Header.Values("X-Jit-User"); !slices.Equal(got, []string{"alice"}) {
		t.Errorf("the upstream's answer shows X-Jit-User %q, want [alice]", got)
	}
	if a.sessionCookie() == nil || a.cookieNamed(pc.Name) != nil {
		t.Errorf("after the pickup alice's browser should hold the session and no pickup secret")
	}

	other.open(browserURI)
	if other.sessionCookie() != nil || other.state().URL == site+browserURI {
		t.Errorf("the second context got the session after alice picked it up: %s", other.state().URL)
	}
	e.waitEvent(match{"event": "session_picked_up", "request_id": id, "user": "alice"})
	if n := len(e.events(match{"event": "activation_failed"})); n != 0 {
		t.Errorf("audit: %d activation_failed events, want none: only two codes were ever typed", n)
	}
}

// leave navigates away from the site, as closing the tab's page would.
func (b *chromeTab) leave() {
	b.t.Helper()
	ctx, cancel := b.step()
	defer cancel()
	if err := chromedp.Do(ctx, chromedp.Navigate("about:blank")); err != nil {
		b.t.Fatalf("%s leaving the site: %v", b.name, err)
	}
}
