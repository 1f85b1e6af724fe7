package integration

import (
	"maps"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// Security class 11, step-up binding, for enrollment links (issue 12, finding 2): a
// link and the user's password must not be enough to take over the user's codes.
// Written against the HTTP surface only, as an attacker and a user would use it.

// openEnrollLink opens a link in b and returns the page's key and form.
func openEnrollLink(t *testing.T, b *browser, site, linkPath, who string) enrollPage {
	t.Helper()
	r := b.get(site + linkPath)
	if !wantStatus(t, r, http.StatusOK, who+" opening the link") {
		t.FailNow()
	}
	return parseEnrollPage(t, r.Body)
}

// confirmForm is the page's form with code and, when current is not "", a code of
// the user's current authenticator.
func confirmForm(p enrollPage, code, current string) url.Values {
	f := maps.Clone(p.form)
	f.Set("code", code)
	f.Del("current_code")
	if current != "" {
		f.Set("current_code", current)
	}
	return f
}

// Each case has its own Caddy, so that their waits for fresh TOTP steps overlap.
func TestSecurityClass11EnrollmentLinkBoundToTheBrowser(t *testing.T) {
	waitsForTOTPSteps(t)
	newSite := func(t *testing.T) (*env, string) {
		waitsForTOTPSteps(t)
		e := newEnv(t, envOptions{})
		return e, e.site(0)
	}

	t.Run("an attacker who opens the link first gets a key that never works", func(t *testing.T) {
		e, site := newSite(t)
		link := e.enrollLink("r1", "")
		attacker, victim := e.browser("r1"), e.browser("r1")
		seen := openEnrollLink(t, attacker, site, link.LinkPath, "the attacker")
		mine := openEnrollLink(t, victim, site, link.LinkPath, "the victim")
		if mine.secret == seen.secret {
			t.Errorf("the victim's page shows the key the attacker saw first")
		}

		// After the victim opened the link, the key the attacker saw cannot be confirmed.
		atk := &totpUser{name: "r1", secret: seen.secret}
		r := attacker.postForm(site+"/.jit/enroll", confirmForm(seen, atk.next(t), ""))
		wantNot2xx(t, r, "the attacker confirming the key he saw")
		if strings.Contains(r.Body, mine.secret) {
			t.Errorf("the attacker's refusal shows the victim's key")
		}

		// The victim confirms hers.
		vic := &totpUser{name: "r1", secret: mine.secret, lastStep: atk.lastStep}
		r = victim.postForm(site+"/.jit/enroll", confirmForm(mine, vic.next(t), ""))
		wantStatus(t, r, http.StatusOK, "the victim confirming her key")
		wantBodySays(t, r, "the victim's confirmation", "Your authenticator is set up")

		// The attacker's key activates nothing; the victim's does.
		atk.lastStep = max(atk.lastStep, vic.lastStep)
		r = e.browser("r1").activate(site, roleAdmin, "/", atk.next(t), nil)
		wantStatus(t, r, http.StatusBadRequest, "activating with the key the attacker saw")
		if c := setCookie(r, cookieName); c != nil && c.Value != "" {
			t.Errorf("the attacker's key got a session cookie")
		}
		vic.lastStep = max(vic.lastStep, atk.lastStep)
		e.browser("r1").mustActivate(site, roleAdmin, "/", vic, nil)

		// The spent link shows the attacker nothing.
		r = attacker.get(site + link.LinkPath)
		wantStatus(t, r, http.StatusGone, "the attacker opening the spent link")
		if strings.Contains(r.Body, mine.secret) || strings.Contains(r.Body, "<img") {
			t.Errorf("the spent link shows a key: %s", r)
		}
		e.waitEvent(match{"event": "enroll_link_failed", "user": "r1", "reason": "enroll_link_other_browser"})
		e.waitEvent(match{"event": "enrolled", "user": "r1", "via": "link", "authorized_by": "first_enrollment"})
	})

	t.Run("an older link fails after a newer enrollment", func(t *testing.T) {
		e, site := newSite(t)
		working := e.enroll("r2")
		older := e.enrollLink("r2", "")
		ob := e.browser("r2")
		page := openEnrollLink(t, ob, site, older.LinkPath, "r2")

		// An operator enrolls r2 again: the older link, open in a browser, is cancelled.
		working = e.enroll("r2")
		stale := &totpUser{name: "r2", secret: page.secret}
		r := ob.postForm(site+"/.jit/enroll", confirmForm(page, stale.next(t), working.next(t)))
		wantStatus(t, r, http.StatusGone, "confirming the older link after a direct enrollment")
		r = ob.get(site + older.LinkPath)
		wantStatus(t, r, http.StatusGone, "opening the older link after a direct enrollment")
		wantBodySays(t, r, "the older link", "cancelled")
		e.waitEvent(match{"event": "enroll_link_cancelled", "user": "r2", "reason": "enrolled"})

		// A newer link cancels an older one, open or not; confirming the newer one
		// leaves the older one dead.
		first := e.enrollLink("r2", "")
		firstPage := openEnrollLink(t, ob, site, first.LinkPath, "r2 (first link)")
		second := e.enrollLink("r2", "")
		nb := e.browser("r2")
		secondPage := openEnrollLink(t, nb, site, second.LinkPath, "r2 (second link)")
		renewed := &totpUser{name: "r2", secret: secondPage.secret}
		working.lastStep = max(working.lastStep, stale.lastStep)
		r = nb.postForm(site+"/.jit/enroll", confirmForm(secondPage, renewed.next(t), working.next(t)))
		wantStatus(t, r, http.StatusOK, "confirming the newer link")
		old := &totpUser{name: "r2", secret: firstPage.secret, lastStep: renewed.lastStep}
		r = ob.postForm(site+"/.jit/enroll", confirmForm(firstPage, old.next(t), renewed.next(t)))
		wantStatus(t, r, http.StatusGone, "confirming the older link after the newer one")
		e.waitEvent(match{"event": "enroll_link_cancelled", "user": "r2", "reason": "newer_link"})

		// The enrollment of the newer link is the one that works.
		renewed.lastStep = max(renewed.lastStep, old.lastStep)
		e.browser("r2").mustActivate(site, roleAdmin, "/", renewed, nil)
	})

	t.Run("replacing a working key through a link needs a code of it", func(t *testing.T) {
		e, site := newSite(t)
		working := e.enroll("r3")
		link := e.enrollLink("r3", "")
		b := e.browser("r3")
		page := openEnrollLink(t, b, site, link.LinkPath, "r3")
		pending := &totpUser{name: "r3", secret: page.secret}
		r := b.postForm(site+"/.jit/enroll", confirmForm(page, pending.next(t), ""))
		wantStatus(t, r, http.StatusBadRequest, "replacing a working key with only a code of the new one")
		wantBodySays(t, r, "the refusal", "current authenticator")
		if strings.Contains(r.Body, page.secret) {
			t.Errorf("the refusal shows the key again")
		}
		e.waitEvent(match{"event": "enroll_link_failed", "user": "r3", "reason": "current_totp_required"})
		// Nothing changed: the working key activates, the pending one does not.
		e.browser("r3").mustActivate(site, roleAdmin, "/", working, nil)
		pending.lastStep = max(pending.lastStep, working.lastStep)
		r = e.browser("r3").activate(site, roleAdmin, "/", pending.next(t), nil)
		wantStatus(t, r, http.StatusBadRequest, "activating with the unconfirmed key")

		// With a code of the working key as well, the same page confirms.
		working.lastStep = max(working.lastStep, pending.lastStep)
		r = b.postForm(site+"/.jit/enroll", confirmForm(page, pending.next(t), working.next(t)))
		wantStatus(t, r, http.StatusOK, "replacing with a code of each")
		e.waitEvent(match{"event": "enrolled", "user": "r3", "via": "link", "authorized_by": "current_code"})

		// An operator's replacing link needs no code of the current key.
		rl := e.enrollLink("r3", "&replace=1")
		rb := e.browser("r3")
		rp := openEnrollLink(t, rb, site, rl.LinkPath, "r3 (replacing link)")
		if _, asks := rp.form["current_code"]; asks {
			t.Errorf("the replacing link asks for a current code")
		}
		lost := &totpUser{name: "r3", secret: rp.secret, lastStep: pending.lastStep}
		r = rb.postForm(site+"/.jit/enroll", confirmForm(rp, lost.next(t), ""))
		wantStatus(t, r, http.StatusOK, "confirming an operator's replacing link without a current code")
		e.waitEvent(match{"event": "enrolled", "user": "r3", "via": "link", "authorized_by": "replace_link"})
	})
}
