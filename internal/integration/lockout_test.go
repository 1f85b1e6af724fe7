package integration

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// 7. Five wrong codes lock the account; the lockout survives a config reload (and a
// restart): even the right code is refused.
func TestLockoutSurvivesReload(t *testing.T) {
	e := newEnv(t, envOptions{})
	locky := e.enroll("locky")
	b := e.browser("locky")
	site := e.site(0)

	for i := 1; i <= 5; i++ {
		r := b.activate(site, roleAdmin, "/", locky.wrong(t), nil)
		want := http.StatusBadRequest
		if i == 5 {
			want = http.StatusTooManyRequests
		}
		wantStatus(t, r, want, "wrong code #"+string(rune('0'+i)))
		if c := setCookie(r, cookieName); c != nil && c.Value != "" {
			t.Errorf("a wrong code set a session cookie: %s", r)
		}
	}
	if n := len(e.events(match{"event": "activation_failed", "user": "locky", "reason": "totp_invalid"})); n < 4 {
		t.Errorf("audit: %d activation_failed events with reason totp_invalid, want at least 4", n)
	}

	// The right code, reused for each check below: a locked account must refuse it
	// before looking at it, so it is never used up (it stays valid for at least 30 s).
	code := locky.next(t)
	right := func(what string) {
		t.Helper()
		lockedBefore := len(e.events(match{"event": "activation_failed", "user": "locky", "reason": "locked_out"}))
		// A new browser: the lockout belongs to the account, not to the form or cookie.
		r := e.browser("locky").activate(site, roleAdmin, "/", code, nil)
		wantStatus(t, r, http.StatusTooManyRequests, "the right code "+what)
		if c := setCookie(r, cookieName); c != nil && c.Value != "" {
			t.Errorf("the right code %s set a session cookie although locked out: %s", what, r)
		}
		lower := strings.ToLower(r.Body)
		if !strings.Contains(lower, "locked") || !strings.Contains(lower, "until") {
			t.Errorf("the lockout page should say it is locked and until when: %s", r)
		}
		deadline := time.Now().Add(3 * time.Second)
		for len(e.events(match{"event": "activation_failed", "user": "locky", "reason": "locked_out"})) <= lockedBefore {
			if time.Now().After(deadline) {
				t.Errorf("audit: no new activation_failed event with reason locked_out for the right code %s", what)
				break
			}
			time.Sleep(25 * time.Millisecond)
		}
	}

	right("before the reload")
	e.reload()
	right("after a config reload")
	b.client.CloseIdleConnections()
	e.restart()
	right("after a restart")

	// The lockout is per account: another user is unaffected.
	alice := e.enroll("alice")
	r := e.browser("alice").activate(site, roleAdmin, "/", alice.next(t), url.Values{})
	wantStatus(t, r, http.StatusSeeOther, "another user while locky is locked out")
	wantNoUpstream(t, e.up, 0, "lockout")
}
