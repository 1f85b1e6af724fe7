package integration

import (
	"net/http"
	"testing"
	"time"
)

// 8. Eligibility windows: a window in the past forbids; a window that ends while a
// session runs caps the session and forbids afterwards.
func TestEligibilityWindowOver(t *testing.T) {
	// erin is eligible until a few seconds after Caddy starts (RFC 3339 in the Caddyfile).
	until := time.Now().Add(6 * time.Second).Truncate(time.Second).UTC()
	e := newEnv(t, envOptions{ExtraEligible: []string{
		"dave until 2020-01-01",
		"erin until " + until.Format(time.RFC3339),
	}})
	site := e.site(0)

	t.Run("window in the past", func(t *testing.T) {
		e.enroll("dave")
		b := e.browser("dave")
		wantStatus(t, b.get(site+adminURI), http.StatusForbidden, "eligibility ended in 2020")
		wantStatus(t, b.get(site+activationPath(roleAdmin, "/")), http.StatusForbidden, "activation page, eligibility ended")
		wantNoUpstream(t, e.up, 0, "eligibility ended")
	})

	t.Run("window ends during the session", func(t *testing.T) {
		erin := e.enroll("erin")
		if left := time.Until(until); left < 1500*time.Millisecond {
			t.Fatalf("test setup too slow: only %s of erin's window left before activation", left)
		}
		b := e.browser("erin")
		// The role's default duration (15m) is far longer than what is left.
		token := b.mustActivate(site, roleAdmin, adminURI, erin, nil)
		exp := tokenExpiry(t, token)
		if exp.After(until) {
			t.Errorf("the session expires at %s, after the eligibility ends at %s", exp.UTC().Format(time.RFC3339), until.Format(time.RFC3339))
		}
		if time.Until(until) > 300*time.Millisecond {
			if !wantStatus(t, b.get(site+adminURI), http.StatusOK, "inside the window") {
				t.FailNow()
			}
		}
		hits := e.up.count()

		sleepUntil(t, until.Add(1200*time.Millisecond), "until erin's eligibility has ended")
		wantStatus(t, b.get(site+adminURI), http.StatusForbidden, "after the window, browser")
		r := b.raw(http.MethodGet, site+adminURI, withBasicAuth("erin"), withCookieHeader(cookieName+"="+token))
		wantNot2xx(t, r, "after the window, the session token itself")
		wantStatus(t, r, http.StatusForbidden, "after the window, the session token itself")
		wantStatus(t, e.browser("erin").get(site+adminURI), http.StatusForbidden, "after the window, no session")
		wantStatus(t, b.get(site+activationPath(roleAdmin, "/")), http.StatusForbidden, "after the window, activation page")
		wantNoUpstream(t, e.up, hits, "after the window")
	})
}
