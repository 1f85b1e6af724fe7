package integration

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"
)

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
