package integration

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// ---------------------------------------------------------------------------
// Class 3: TOTP replay, lockout, malformed codes, other users' codes.

func TestSecurityClass03TOTP(t *testing.T) {
	e := newEnv(t, envOptions{})
	site := e.site(0)

	// refusedActivation posts an activation and checks the refusal: status, no
	// cookie, the code not echoed, nothing upstream.
	refused := func(t *testing.T, b *browser, code string, status int, what string) *response {
		t.Helper()
		before := e.up.count()
		r := b.activate(site, roleAdmin, "/", code, nil)
		wantStatus(t, r, status, what)
		if c := setCookie(r, cookieName); c != nil && c.Value != "" {
			t.Errorf("%s: a session cookie was set: %s", what, r)
		}
		if code != "" && r.StatusCode == http.StatusBadRequest {
			if f := formFields(t, r.Body, "/.jit/activate"); f.Get("code") != "" {
				t.Errorf("%s: the re-rendered form keeps the code %q", what, f.Get("code"))
			}
		}
		wantNoUpstream(t, e.up, before, what)
		return r
	}

	t.Run("replay", func(t *testing.T) {
		alice := e.enroll("alice")
		cur := currentStep()
		alice.lastStep = cur + 1
		newer, older := codeAt(t, alice.secret, cur+1), codeAt(t, alice.secret, cur)
		cases := []struct {
			name, code string
			status     int
			reason     string
		}{
			{"the next step's code, first use", newer, http.StatusSeeOther, ""},
			{"the same code again, same browser", newer, http.StatusBadRequest, "totp_replayed"},
			{"the same code again, new browser", newer, http.StatusBadRequest, "totp_replayed"},
			{"the current step's code after the next step's was used", older, http.StatusBadRequest, "totp_replayed"},
		}
		b := e.browser("alice")
		for i, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				bb := b
				if i >= 2 {
					bb = e.browser("alice")
				}
				if tc.status == http.StatusSeeOther {
					activateWith(t, bb, site, roleAdmin, "/", tc.code, nil)
					return
				}
				r := refused(t, bb, tc.code, tc.status, tc.name)
				if !strings.Contains(r.Body, "already used") {
					t.Errorf("the refusal does not say the code was used: %s", r)
				}
				e.waitEvent(match{"event": "activation_failed", "user": "alice", "reason": tc.reason})
			})
		}
	})

	t.Run("wrong length and non-digit codes", func(t *testing.T) {
		bob := e.enroll("bob")
		right := codeAt(t, bob.secret, currentStep()+1)
		bob.lastStep = currentStep() + 1
		fullwidth := strings.Map(func(r rune) rune { return r - '0' + '０' }, right)
		arabic := strings.Map(func(r rune) rune { return r - '0' + '٠' }, right)
		b := e.browser("bob")
		for _, tc := range []struct{ name, code string }{
			{"empty", ""},
			{"five digits", "12345"},
			{"seven digits", "1234567"},
			{"the right code with a seventh digit", right + "0"},
			{"the right code without its last digit", right[:5]},
			{"letters", "abcdef"},
			{"a letter among digits", right[:5] + "a"},
			{"a space inside", right[:3] + " " + right[3:]},
			{"a sign", "+" + right[:5]},
			{"hexadecimal", "0x1e24"},
			{"exponent", "1e5000"},
			{"fullwidth digits of the right code", fullwidth},
			{"Arabic-Indic digits of the right code", arabic},
			{"the right code with a NUL", right + "\x00"},
			{"the right code with a zero-width space", right + "\u200b"},
			{"a very long code", strings.Repeat("1", 5000)},
		} {
			t.Run(tc.name, func(t *testing.T) {
				refused(t, b, tc.code, http.StatusBadRequest, "code "+tc.name)
				// Every failure counts towards the lockout; start each case afresh.
				e.adminOK(http.MethodPost, "/jit/lockouts/bob/clear?by=integration&reason=test", nil)
			})
		}
		// None of them used the right code up or locked the account.
		activateWith(t, b, site, roleAdmin, "/", right, nil)
	})

	t.Run("a code of another user's secret", func(t *testing.T) {
		frank, r1 := e.enroll("frank"), e.enroll("r1")
		code := r1.next(t)
		refused(t, e.browser("frank"), code, http.StatusBadRequest, "frank enters r1's code")
		e.waitEvent(match{"event": "activation_failed", "user": "frank", "reason": "totp_invalid"})
		// r1's own code is still good for r1 (frank's attempt did not use it up) …
		activateWith(t, e.browser("r1"), site, roleAdmin, "/", code, nil)
		// … and frank's own works for frank.
		e.browser("frank").mustActivate(site, roleAdmin, "/", frank, nil)
	})

	t.Run("the old secret after a new enrollment", func(t *testing.T) {
		old := e.enroll("r2")
		code := old.next(t)
		renewed := e.enroll("r2")
		if renewed.secret == old.secret {
			t.Fatalf("a new enrollment kept the secret")
		}
		if codeAt(t, renewed.secret, old.lastStep) == code {
			t.Skip("the old and the new secret give the same code for this step (1 in a million)")
		}
		refused(t, e.browser("r2"), code, http.StatusBadRequest, "the replaced secret's code")
	})

	t.Run("lockout is per account", func(t *testing.T) {
		locky := e.enroll("locky")
		first := e.browser("locky")
		// Five wrong codes spread over forms, cookie jars and browsers: they add up.
		spread := []struct {
			name string
			b    *browser
		}{
			{"first browser", first},
			{"first browser, a new form", first},
			{"a new cookie jar", e.browser("locky")},
			{"another new browser", e.browser("locky")},
			{"yet another browser", e.browser("locky")},
		}
		for i, s := range spread {
			want := http.StatusBadRequest
			if i == len(spread)-1 {
				want = http.StatusTooManyRequests
			}
			refused(t, s.b, locky.wrong(t), want, fmt.Sprintf("wrong code %d (%s)", i+1, s.name))
		}
		// The right code, refused before it is looked at, so it stays usable (30 s+).
		code := locky.next(t)
		right := func(t *testing.T, b *browser, what string) {
			t.Helper()
			r := refused(t, b, code, http.StatusTooManyRequests, "the right code "+what)
			if !strings.Contains(strings.ToLower(r.Body), "locked") {
				t.Errorf("the lockout page does not say locked: %s", r)
			}
		}
		for _, tc := range []struct {
			name   string
			before func()
			b      func() *browser
		}{
			{"with a new form", func() {}, func() *browser { return first }},
			{"with a new cookie jar", func() {}, func() *browser { return e.browser("locky") }},
			{"after a reload", e.reload, func() *browser { return e.browser("locky") }},
			{"after a restart", func() { first.client.CloseIdleConnections(); e.restart() }, func() *browser { return e.browser("locky") }},
		} {
			t.Run(tc.name, func(t *testing.T) {
				tc.before()
				right(t, tc.b(), tc.name)
			})
		}
		e.waitEvent(match{"event": "activation_failed", "user": "locky", "reason": "locked_out"})
		// Cleared by an operator, the same code works: the lockout alone refused it.
		e.adminOK(http.MethodPost, "/jit/lockouts/locky/clear?by=integration&reason=test", nil)
		activateWith(t, e.browser("locky"), site, roleAdmin, "/", code, nil)
		// Another instance sharing the storage: see TestClusterSharesSessionsRevocationsCodesAndLockouts.
	})
}

// ---------------------------------------------------------------------------
// Class 4: CSRF on every state-changing POST; nothing changes state on GET.

func TestSecurityClass04CSRF(t *testing.T) {
	e := newEnv(t, envOptions{Sites: []siteSpec{
		{Auth: true, Jit: "\tjit " + roleAdmin},
		{Auth: true, Jit: "\tjit " + roleAdmin},
	}})
	siteA, siteB := e.site(0), e.site(1)
	alice := e.enroll("alice")
	b := e.browser("alice")
	code := alice.next(t)
	good := b.activationForm(siteA, roleAdmin, adminURI)
	good.Set("justification", "integration test: checking the console")
	good.Set("code", code)
	csrf := good.Get("csrf")
	bobCSRF := e.browser("bob").activationForm(siteA, roleAdmin, "/").Get("csrf")
	siteBCSRF := b.activationForm(siteB, roleAdmin, "/").Get("csrf")
	flipped := []byte(csrf)
	if mid := len(flipped) / 2; flipped[mid] == 'A' {
		flipped[mid] = 'B'
	} else {
		flipped[mid] = 'A'
	}

	with := func(base url.Values, k, v string, drop bool) url.Values {
		f := cloneValues(base)
		if drop {
			f.Del(k)
		} else {
			f.Set(k, v)
		}
		return f
	}
	type postCase struct {
		name   string
		form   url.Values
		opts   []reqOption
		status int
		// query sends the form in the query string and an empty body.
		query bool
		// contentType replaces the form content type, with the form as the body.
		contentType string
	}
	attacks := func(base url.Values, activate bool) []postCase {
		// The activation form names no role without its fields (400, before the CSRF
		// check); the deactivation form fails the CSRF check (403).
		noFields := http.StatusForbidden
		if activate {
			noFields = http.StatusBadRequest
		}
		return []postCase{
			{name: "no csrf field", form: with(base, "csrf", "", true), status: http.StatusForbidden},
			{name: "empty csrf", form: with(base, "csrf", "", false), status: http.StatusForbidden},
			{name: "wrong csrf", form: with(base, "csrf", strings.Repeat("A", len(csrf)), false), status: http.StatusForbidden},
			{name: "csrf with one character changed", form: with(base, "csrf", string(flipped), false), status: http.StatusForbidden},
			{name: "another user's csrf (bob's)", form: with(base, "csrf", bobCSRF, false), status: http.StatusForbidden},
			{name: "csrf made for another site (B)", form: with(base, "csrf", siteBCSRF, false), status: http.StatusForbidden},
			{name: "csrf twice (bob's and alice's)", form: func() url.Values { f := cloneValues(base); f["csrf"] = []string{bobCSRF, csrf}; return f }(), status: http.StatusBadRequest},
			{name: "Sec-Fetch-Site cross-site", form: base, opts: []reqOption{withHeader("Sec-Fetch-Site", "cross-site")}, status: http.StatusForbidden},
			{name: "Sec-Fetch-Site same-site", form: base, opts: []reqOption{withHeader("Sec-Fetch-Site", "same-site")}, status: http.StatusForbidden},
			{name: "foreign Origin", form: base, opts: []reqOption{withHeader("Origin", "http://evil.example")}, status: http.StatusForbidden},
			{name: "Origin null", form: base, opts: []reqOption{withHeader("Origin", "null")}, status: http.StatusForbidden},
			{name: "Origin of site B (another port)", form: base, opts: []reqOption{withHeader("Origin", siteB)}, status: http.StatusForbidden},
			{name: "fields in the query string, empty body", form: base, query: true, status: noFields},
			{name: "text/plain body (a cross-site form's enctype)", form: base, contentType: "text/plain", status: http.StatusBadRequest},
			{name: "multipart body", form: base, contentType: "multipart/form-data; boundary=x", status: http.StatusBadRequest},
		}
	}
	post := func(t *testing.T, path string, tc postCase) *response {
		t.Helper()
		switch {
		case tc.query:
			return b.do(http.MethodPost, siteA+path+"?"+tc.form.Encode(), strings.NewReader(""),
				append([]reqOption{withHeader("Content-Type", "application/x-www-form-urlencoded")}, tc.opts...)...)
		case tc.contentType != "":
			return b.do(http.MethodPost, siteA+path, strings.NewReader(tc.form.Encode()),
				append([]reqOption{withHeader("Content-Type", tc.contentType)}, tc.opts...)...)
		}
		return b.postForm(siteA+path, tc.form, tc.opts...)
	}
	noSession := func(t *testing.T, what string) {
		t.Helper()
		if ss := e.sessions("?user=alice"); len(ss) != 0 {
			t.Fatalf("%s: alice has sessions: %+v", what, ss)
		}
		if b.cookie(siteA) != "" {
			t.Fatalf("%s: the browser holds a session cookie", what)
		}
	}

	t.Run("POST /.jit/activate", func(t *testing.T) {
		for _, tc := range attacks(good, true) {
			t.Run(tc.name, func(t *testing.T) {
				r := post(t, "/.jit/activate", tc)
				wantStatus(t, r, tc.status, tc.name)
				if c := setCookie(r, cookieName); c != nil && c.Value != "" {
					t.Errorf("a session cookie was set: %s", r)
				}
				noSession(t, tc.name)
			})
		}
		e.waitEvent(match{"event": "activation_failed", "user": "alice", "reason": "csrf"})
	})

	t.Run("GET and HEAD /.jit/activate with every field in the query", func(t *testing.T) {
		for _, method := range []string{http.MethodGet, http.MethodHead} {
			r := b.do(method, siteA+"/.jit/activate?"+good.Encode(), nil)
			wantStatus(t, r, http.StatusOK, method+" with the form as query")
			if c := setCookie(r, cookieName); c != nil {
				t.Errorf("%s set a session cookie: %s", method, r)
			}
			noSession(t, method+" with the form as query")
		}
		wantActivationRedirect(t, b.get(siteA+adminURI), roleAdmin, adminURI)
	})

	// None of the refusals used the code up or counted towards a lockout.
	r := b.postForm(siteA+"/.jit/activate", good)
	if !wantStatus(t, r, http.StatusSeeOther, "the genuine form after the refused ones") {
		t.FailNow()
	}
	token := b.cookie(siteA)
	sid := sessionID(t, token)
	wantAdmitted(t, e, b, "alice", token, sid, "the session")
	st := formFields(t, b.get(siteA+"/.jit/").Body, "/.jit/deactivate")
	dcsrf := st.Get("csrf")
	dgood := url.Values{"session": {sid}, "csrf": {dcsrf}}

	t.Run("POST /.jit/deactivate", func(t *testing.T) {
		for _, tc := range attacks(dgood, false) {
			t.Run(tc.name, func(t *testing.T) {
				r := post(t, "/.jit/deactivate", tc)
				wantStatus(t, r, tc.status, tc.name)
				wantAdmitted(t, e, b, "alice", token, sid, "the session after a refused deactivation")
			})
		}
		// Bob, with his own valid CSRF token (from his activation form: CSRF tokens are
		// bound to the user and the site, not to a page), cannot end alice's session.
		bb := e.browser("bob")
		wantStatus(t, bb.postForm(siteA+"/.jit/deactivate", url.Values{"session": {sid}, "csrf": {bobCSRF}}), http.StatusNotFound, "bob deactivating alice's session")
		wantAdmitted(t, e, b, "alice", token, sid, "the session after bob's attempt")
	})

	t.Run("no state change on other methods of /.jit/deactivate", func(t *testing.T) {
		for _, method := range []string{http.MethodGet, http.MethodHead, http.MethodPut, http.MethodDelete, http.MethodPatch} {
			r := b.do(method, siteA+"/.jit/deactivate?"+dgood.Encode(), nil)
			if wantStatus(t, r, http.StatusMethodNotAllowed, method+" /.jit/deactivate?session=…") && method != http.MethodHead {
				if allow := r.Header.Get("Allow"); allow != http.MethodPost {
					t.Errorf("%s: Allow %q, want POST", method, allow)
				}
			}
			wantAdmitted(t, e, b, "alice", token, sid, "the session after "+method+" /.jit/deactivate")
		}
	})

	// A control: the genuine deactivation works.
	if wantStatus(t, b.postForm(siteA+"/.jit/deactivate", dgood), http.StatusSeeOther, "the genuine deactivation") {
		wantRefused(t, e, b, "alice", token, "after the genuine deactivation")
	}
}
