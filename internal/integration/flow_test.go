package integration

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// 1. An eligible user without a session is sent to activation, returning to the URI.
func TestEligibleWithoutSessionRedirectsToActivation(t *testing.T) {
	e := newEnv(t, envOptions{})
	b := e.browser("alice")

	r := b.get(e.site(0) + adminURI)
	wantActivationRedirect(t, r, roleAdmin, adminURI)
	if loc := r.Header.Get("Location"); !strings.Contains(loc, "return="+url.QueryEscape(adminURI)) {
		t.Errorf("Location %q: want the return parameter URL-escaped as %q", loc, url.QueryEscape(adminURI))
	}

	// A query with & must survive as one return value, not leak into the activation URL.
	r = b.get(e.site(0) + "/admin/page?x=1&y=2")
	wantActivationRedirect(t, r, roleAdmin, "/admin/page?x=1&y=2")

	wantNoUpstream(t, e.up, 0, "eligible user without a session")
	e.waitEvent(match{"event": "access_denied", "user": "alice"})
}

// 2. An API client gets 401 JSON with the activation URL instead of a redirect.
func TestAPIClientWithoutSessionGets401JSON(t *testing.T) {
	e := newEnv(t, envOptions{})
	b := e.browser("alice")
	b.accept = "application/json"

	r := b.get(e.site(0) + adminURI)
	if !wantStatus(t, r, http.StatusUnauthorized, "API client without session") {
		return
	}
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("Content-Type %q, want application/json", ct)
	}
	var body map[string]any
	if err := json.Unmarshal([]byte(r.Body), &body); err != nil {
		t.Fatalf("the 401 body is not JSON: %v: %s", err, r.Body)
	}
	if body["error"] != "activation_required" {
		t.Errorf("error=%v, want activation_required; body %s", body["error"], r.Body)
	}
	if body["role"] != roleAdmin {
		t.Errorf("role=%v, want %s; body %s", body["role"], roleAdmin, r.Body)
	}
	if m, _ := body["message"].(string); m == "" {
		t.Errorf("no message in %s", r.Body)
	}
	activate, _ := body["activate_url"].(string)
	wantActivateURL(t, activate, roleAdmin, adminURI)
	wantNoUpstream(t, e.up, 0, "API client without session")
}

// 3. A user who is not eligible is forbidden, whatever they try; the upstream is never hit.
func TestNotEligibleIsForbidden(t *testing.T) {
	e := newEnv(t, envOptions{})
	carol := e.enroll("carol")
	b := e.browser("carol")

	wantStatus(t, b.get(e.site(0)+adminURI), http.StatusForbidden, "not eligible, page navigation")
	b.accept = "application/json"
	wantStatus(t, b.get(e.site(0)+adminURI), http.StatusForbidden, "not eligible, API client")
	b.accept = "text/html"
	wantStatus(t, b.get(e.site(0)+activationPath(roleAdmin, "/")), http.StatusForbidden, "not eligible, activation page")

	// Even a well-formed activation POST is refused: carol takes the CSRF token from the
	// form of the role she is eligible for (viewer), and sends a right code.
	f := b.activationForm(e.site(0), roleViewer, "/")
	f.Set("role", roleAdmin)
	f.Set("justification", "let me in, I am carol")
	f.Set("code", carol.next(t))
	r := b.postForm(e.site(0)+"/.jit/activate", f)
	wantStatus(t, r, http.StatusForbidden, "not eligible, activation POST with a valid CSRF token and code")
	if c := setCookie(r, cookieName); c != nil && c.Value != "" {
		t.Errorf("a session cookie was set for an ineligible user: %s", r)
	}
	e.waitEvent(match{"event": "activation_failed", "user": "carol", "reason": "not_eligible"})
	wantStatus(t, b.get(e.site(0)+adminURI), http.StatusForbidden, "not eligible, after the POST")
	wantNoUpstream(t, e.up, 0, "not eligible")
}

// 4. A valid code activates the role; the session reaches the upstream with our
// headers and without our cookie; both are audited.
func TestActivationReachesUpstream(t *testing.T) {
	e := newEnv(t, envOptions{})
	alice := e.enroll("alice")
	b := e.browser("alice")
	site := e.site(0)

	r := b.get(site + adminURI)
	wantActivationRedirect(t, r, roleAdmin, adminURI)
	page := b.get(site + r.Header.Get("Location"))
	if !wantStatus(t, page, http.StatusOK, "activation page") {
		t.FailNow()
	}
	f := formFields(t, page.Body, "/.jit/activate")
	for _, name := range []string{"role", "duration", "justification", "code", "return", "csrf"} {
		if _, ok := f[name]; !ok {
			t.Errorf("the activation form has no input named %q; fields: %v", name, f)
		}
	}
	if _, ok := f["ticket"]; ok {
		t.Errorf("the activation form asks for a ticket, but the role requires none")
	}
	if f.Get("role") != roleAdmin || f.Get("return") != adminURI {
		t.Errorf("the form carries role=%q return=%q, want %q and %q", f.Get("role"), f.Get("return"), roleAdmin, adminURI)
	}
	if ct := page.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/html") {
		t.Errorf("activation page Content-Type %q", ct)
	}

	f.Set("justification", "integration test: checking the console")
	f.Set("code", alice.next(t))
	r = b.postForm(site+"/.jit/activate", f)
	if !wantStatus(t, r, http.StatusSeeOther, "activation POST") {
		t.FailNow()
	}
	if loc := r.Header.Get("Location"); loc != adminURI {
		t.Errorf("after activation Location=%q, want %q", loc, adminURI)
	}
	c := setCookie(r, cookieName)
	if c == nil || c.Value == "" {
		t.Fatalf("no %s cookie: %s", cookieName, r)
	}
	if !c.HttpOnly || c.SameSite != http.SameSiteLaxMode || c.Path != "/" || c.Secure {
		t.Errorf("cookie attributes: HttpOnly=%v SameSite=%v Path=%q Secure=%v; want HttpOnly, Lax, /, not Secure over HTTP (%s)",
			c.HttpOnly, c.SameSite, c.Path, c.Secure, r.Header.Get("Set-Cookie"))
	}
	header, claims := tokenParts(t, c.Value)
	if header["alg"] != "EdDSA" || header["typ"] != "jit-session+jwt" || header["kid"] == nil {
		t.Errorf("token header %v: want alg EdDSA, typ jit-session+jwt and a kid", header)
	}
	for _, k := range []string{"iss", "sub", "aud", "role", "sid", "iat", "nbf", "exp", "amr"} {
		if _, ok := claims[k]; !ok {
			t.Errorf("token claims lack %q: %v", k, claims)
		}
	}
	if claims["sub"] != "alice" || claims["role"] != roleAdmin || claims["aud"] != site {
		t.Errorf("token claims sub=%v role=%v aud=%v, want alice, %s, %s", claims["sub"], claims["role"], claims["aud"], roleAdmin, site)
	}

	// Other cookies of the client must still reach the upstream.
	b.setCookie(site, "theme", "dark")
	b.setCookie(site, "lang", "en")
	r = b.get(site + r.Header.Get("Location"))
	if !wantStatus(t, r, http.StatusOK, "request under the session") {
		t.FailNow()
	}
	if r.Header.Get("X-Upstream") != "integration" {
		t.Errorf("the 200 did not come from the upstream: %s", r)
	}
	got := e.up.last(t)
	if got.Path != "/admin/page" || got.RawQuery != "x=1" {
		t.Errorf("upstream got %s ?%s, want /admin/page ?x=1", got.Path, got.RawQuery)
	}
	sid := got.Header.Get("X-Jit-Session")
	if u := got.Header.Values("X-Jit-User"); len(u) != 1 || u[0] != "alice" {
		t.Errorf("upstream X-Jit-User=%q, want [alice]", u)
	}
	if role := got.Header.Values("X-Jit-Role"); len(role) != 1 || role[0] != roleAdmin {
		t.Errorf("upstream X-Jit-Role=%q, want [%s]", role, roleAdmin)
	}
	if sid == "" || sid != claims["sid"] {
		t.Errorf("upstream X-Jit-Session=%q, want the token's sid %v", sid, claims["sid"])
	}
	cookies := strings.Join(got.Header.Values("Cookie"), "; ")
	if strings.Contains(cookies, cookieName) || strings.Contains(cookies, c.Value) {
		t.Errorf("the upstream received our session cookie: Cookie: %q", cookies)
	}
	for _, want := range []string{"theme=dark", "lang=en"} {
		if !strings.Contains(cookies, want) {
			t.Errorf("the upstream did not receive the client's cookie %s: Cookie: %q", want, cookies)
		}
	}

	e.waitEvent(match{"event": "activation_succeeded", "user": "alice", "role": roleAdmin, "session_id": sid})
	acc := e.waitEvent(match{"event": "access", "session_id": sid, "status": "200", "method": "GET"})
	if acc != nil {
		if uri := acc.str("uri"); uri != adminURI {
			t.Errorf("access event uri=%q, want %q: %v", uri, adminURI, acc)
		}
		for _, k := range []string{"bytes", "duration_us", "instance", "seq", "prev", "time"} {
			if _, ok := acc[k]; !ok {
				t.Errorf("access event lacks %q: %v", k, acc)
			}
		}
	}
	raw := e.auditRaw()
	if strings.Contains(raw, c.Value) || strings.Contains(raw, strings.Split(c.Value, ".")[2]) {
		t.Errorf("the audit log contains the session token")
	}
	if strings.Contains(raw, alice.secret) {
		t.Errorf("the audit log contains the TOTP secret")
	}
}

// 6. A code is accepted once: the identical code again is refused and audited as a replay.
func TestReplayedCodeIsRefused(t *testing.T) {
	e := newEnv(t, envOptions{})
	alice := e.enroll("alice")
	site := e.site(0)

	code := alice.next(t)
	r := e.browser("alice").activate(site, roleAdmin, "/", code, nil)
	if !wantStatus(t, r, http.StatusSeeOther, "first use of the code") {
		t.FailNow()
	}

	// An onlooker with alice's password replays the code in another browser.
	r = e.browser("alice").activate(site, roleAdmin, "/", code, nil)
	wantStatus(t, r, http.StatusBadRequest, "second use of the same code")
	if !strings.Contains(r.Body, "already used") {
		t.Errorf("the refusal does not say the code was already used: %s", r)
	}
	if c := setCookie(r, cookieName); c != nil && c.Value != "" {
		t.Errorf("a replayed code set a session cookie: %s", r)
	}
	// The form comes back with the input kept, except the code.
	if f := formFields(t, r.Body, "/.jit/activate"); f.Get("justification") == "" || f.Get("code") != "" {
		t.Errorf("the form after a refusal should keep the justification and drop the code; fields: %v", f)
	}
	e.waitEvent(match{"event": "activation_failed", "user": "alice", "reason": "totp_replayed"})
}

// 9. An expired session sends the user back to activation.
func TestExpiredSessionGoesBackToActivation(t *testing.T) {
	e := newEnv(t, envOptions{})
	alice := e.enroll("alice")
	b := e.browser("alice")
	site := e.site(0)

	token := b.mustActivate(site, roleAdmin, adminURI, alice, url.Values{"duration": {"2s"}})
	exp := tokenExpiry(t, token)
	if d := time.Until(exp); d > 3*time.Second {
		t.Errorf("a 2s session expires in %s", d)
	}
	if !wantStatus(t, b.get(site+adminURI), http.StatusOK, "right after activation") {
		t.FailNow()
	}
	hits := e.up.count()

	sleepUntil(t, exp.Add(time.Second), "until the session has expired")
	// The browser (which may already have dropped the cookie) …
	wantActivationRedirect(t, b.get(site+adminURI), roleAdmin, adminURI)
	// … and the server, which must refuse the token itself.
	r := b.raw(http.MethodGet, site+adminURI, withBasicAuth("alice"), withCookieHeader(cookieName+"="+token))
	wantActivationRedirect(t, r, roleAdmin, adminURI)
	wantNoUpstream(t, e.up, hits, "expired session")
}

// 10. Deactivation ends the session at once.
func TestDeactivateEndsSessionAtOnce(t *testing.T) {
	e := newEnv(t, envOptions{})
	alice := e.enroll("alice")
	b := e.browser("alice")
	site := e.site(0)

	token := b.mustActivate(site, roleAdmin, adminURI, alice, nil)
	if !wantStatus(t, b.get(site+adminURI), http.StatusOK, "before deactivation") {
		t.FailNow()
	}
	sid := e.up.last(t).Header.Get("X-Jit-Session")

	st := b.get(site + "/.jit/")
	if !wantStatus(t, st, http.StatusOK, "status page") {
		t.FailNow()
	}
	form := formFields(t, st.Body, "/.jit/deactivate")
	if !containsString(form["session"], sid) {
		t.Errorf("the status page offers to deactivate %q, want the session %q among them", form["session"], sid)
	}
	csrf := form.Get("csrf")
	if csrf == "" {
		t.Fatalf("the status page has no csrf token in its deactivate form: %s", st)
	}
	hits := e.up.count()

	r := b.postForm(site+"/.jit/deactivate", url.Values{"session": {sid}, "csrf": {csrf}})
	if !wantStatus(t, r, http.StatusSeeOther, "deactivate") {
		t.FailNow()
	}
	if loc := r.Header.Get("Location"); loc != "/.jit/" {
		t.Errorf("after deactivation Location=%q, want /.jit/", loc)
	}
	wantActivationRedirect(t, b.get(site+adminURI), roleAdmin, adminURI)
	// The token itself must be dead, not merely its cookie cleared.
	r = b.raw(http.MethodGet, site+adminURI, withBasicAuth("alice"), withCookieHeader(cookieName+"="+token))
	wantActivationRedirect(t, r, roleAdmin, adminURI)
	wantNoUpstream(t, e.up, hits, "after deactivation")
	e.waitEvent(match{"event": "deactivated", "session_id": sid, "user": "alice"})

	if st := b.get(site + "/.jit/"); st.StatusCode == http.StatusOK {
		if ids := formFields(t, st.Body, "/.jit/deactivate")["session"]; containsString(ids, sid) {
			t.Errorf("the status page still lists the ended session %s", sid)
		}
	}

	// The revocation outlives a config reload and a restart.
	e.reload()
	r = b.raw(http.MethodGet, site+adminURI, withBasicAuth("alice"), withCookieHeader(cookieName+"="+token))
	wantActivationRedirect(t, r, roleAdmin, adminURI)
	b.client.CloseIdleConnections()
	e.restart()
	r = b.raw(http.MethodGet, site+adminURI, withBasicAuth("alice"), withCookieHeader(cookieName+"="+token))
	wantActivationRedirect(t, r, roleAdmin, adminURI)
	wantNoUpstream(t, e.up, hits, "the ended session after a reload and a restart")
}

// 11. Sessions survive a restart of Caddy on the same storage.
func TestSessionSurvivesRestart(t *testing.T) {
	e := newEnv(t, envOptions{})
	alice := e.enroll("alice")
	b := e.browser("alice")
	site := e.site(0)

	b.mustActivate(site, roleAdmin, adminURI, alice, nil)
	if !wantStatus(t, b.get(site+adminURI), http.StatusOK, "before the restart") {
		t.FailNow()
	}
	sid := e.up.last(t).Header.Get("X-Jit-Session")

	b.client.CloseIdleConnections()
	e.restart()

	hits := e.up.count()
	r := b.get(site + adminURI)
	if wantStatus(t, r, http.StatusOK, "after the restart") {
		if n := e.up.count(); n != hits+1 {
			t.Errorf("the upstream got %d requests, want 1", n-hits)
		} else if got := e.up.last(t).Header.Get("X-Jit-Session"); got != sid {
			t.Errorf("after the restart X-Jit-Session=%q, want the same session %q", got, sid)
		}
	}
}

// 13. The return path never leads off-site.
func TestOpenRedirectReturnFallsBackToRoot(t *testing.T) {
	e := newEnv(t, envOptions{})
	site := e.site(0)
	cases := []struct{ user, ret string }{
		{"r1", "//evil.example"},
		{"r2", `/\evil.example`},
		{"r3", "https://evil.example"},
		{"r4", "/%2F%2Fevil.example"},
		{"r5", "/%5Cevil.example"},
		{"r6", "/\t/evil.example"},
	}
	for _, tc := range cases {
		t.Run(tc.user+" "+strings.NewReplacer("/", "_", `\`, "_", "\t", "TAB", "%", "pct").Replace(tc.ret), func(t *testing.T) {
			u := e.enroll(tc.user)
			b := e.browser(tc.user)
			// The page may show the return value; check it, but the POST is what counts.
			if f := b.activationForm(site, roleAdmin, tc.ret); f.Get("return") == tc.ret {
				t.Logf("note: the activation page carries the unsafe return %q as is (the POST must still refuse it)", tc.ret)
			}
			r := b.activate(site, roleAdmin, "/", u.next(t), url.Values{"return": {tc.ret}})
			if !wantStatus(t, r, http.StatusSeeOther, "activation with return="+tc.ret) {
				return
			}
			if loc := r.Header.Get("Location"); loc != "/" {
				t.Errorf("return=%q: Location=%q, want /", tc.ret, loc)
			}
		})
	}
	// A control: a same-site path with a query is kept as is.
	t.Run("control same-site path", func(t *testing.T) {
		u := e.enroll("alice")
		r := e.browser("alice").activate(site, roleAdmin, "/", u.next(t), url.Values{"return": {"/admin/page?x=1&y=2"}})
		if wantStatus(t, r, http.StatusSeeOther, "activation with a same-site return") {
			if loc := r.Header.Get("Location"); loc != "/admin/page?x=1&y=2" {
				t.Errorf("Location=%q, want /admin/page?x=1&y=2", loc)
			}
		}
	})
}

// 14. State-changing POSTs need the user's CSRF token (and a same-origin request).
func TestCSRFProtection(t *testing.T) {
	e := newEnv(t, envOptions{})
	alice := e.enroll("alice")
	b := e.browser("alice")
	site := e.site(0)

	code := alice.next(t)
	good := b.activationForm(site, roleAdmin, adminURI)
	good.Set("justification", "integration test: checking the console")
	good.Set("code", code)
	bobCSRF := e.browser("bob").activationForm(site, roleAdmin, "/").Get("csrf")

	with := func(k, v string) url.Values {
		f := cloneValues(good)
		if v == "" {
			f.Del(k)
		} else {
			f.Set(k, v)
		}
		return f
	}
	cases := []struct {
		name string
		form url.Values
		opts []reqOption
	}{
		{"no csrf", with("csrf", ""), nil},
		{"empty csrf", func() url.Values { f := cloneValues(good); f.Set("csrf", ""); return f }(), nil},
		{"wrong csrf", with("csrf", strings.Repeat("A", 54)), nil},
		{"csrf of another user", with("csrf", bobCSRF), nil},
		{"cross-site fetch metadata", good, []reqOption{withHeader("Sec-Fetch-Site", "cross-site")}},
		{"foreign Origin", good, []reqOption{withHeader("Origin", "http://evil.example")}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := b.postForm(site+"/.jit/activate", tc.form, tc.opts...)
			wantStatus(t, r, http.StatusForbidden, tc.name)
			if c := setCookie(r, cookieName); c != nil && c.Value != "" {
				t.Errorf("%s: a session cookie was set: %s", tc.name, r)
			}
		})
	}
	if b.cookie(site) != "" {
		t.Fatalf("the browser holds a session after refused POSTs")
	}
	e.waitEvent(match{"event": "activation_failed", "user": "alice", "reason": "csrf"})
	wantActivationRedirect(t, b.get(site+adminURI), roleAdmin, adminURI)

	// The refused POSTs neither used up the code nor counted towards the lockout.
	r := b.postForm(site+"/.jit/activate", good)
	if !wantStatus(t, r, http.StatusSeeOther, "the same form with its CSRF token, after the refused ones") {
		t.FailNow()
	}
	if !wantStatus(t, b.get(site+adminURI), http.StatusOK, "under the session") {
		t.FailNow()
	}
	sid := e.up.last(t).Header.Get("X-Jit-Session")

	// Deactivation needs the token too.
	for name, form := range map[string]url.Values{
		"deactivate without csrf":  {"session": {sid}},
		"deactivate, wrong csrf":   {"session": {sid}, "csrf": {strings.Repeat("A", 54)}},
		"deactivate, bob's csrf":   {"session": {sid}, "csrf": {bobCSRF}},
		"deactivate, cross-origin": {"session": {sid}, "csrf": {good.Get("csrf")}},
	} {
		var opts []reqOption
		if name == "deactivate, cross-origin" {
			opts = append(opts, withHeader("Sec-Fetch-Site", "cross-site"))
		}
		wantStatus(t, b.postForm(site+"/.jit/deactivate", form, opts...), http.StatusForbidden, name)
	}
	wantStatus(t, b.get(site+adminURI), http.StatusOK, "the session after refused deactivations")
}

// 15. Without an identity in front, jit answers 401, never an activation redirect.
func TestNoIdentityIs401(t *testing.T) {
	e := newEnv(t, envOptions{Sites: []siteSpec{{Auth: false, Jit: "\tjit " + roleAdmin}}})
	site := e.site(0)
	anon := e.browser("")

	r := anon.get(site + adminURI)
	if wantStatus(t, r, http.StatusUnauthorized, "no identity") {
		if !strings.Contains(r.Body, "basic_auth") && !strings.Contains(r.Body, "forward_auth") {
			t.Errorf("the 401 does not name basic_auth/forward_auth: %s", r)
		}
	}
	// Credentials that nothing checks are no identity either.
	wantStatus(t, anon.get(site+adminURI, withBasicAuth("alice")), http.StatusUnauthorized, "basic auth header without basic_auth")
	anon.accept = "application/json"
	wantStatus(t, anon.get(site+adminURI), http.StatusUnauthorized, "no identity, API client")
	anon.accept = "text/html"
	wantStatus(t, anon.get(site+activationPath(roleAdmin, "/")), http.StatusUnauthorized, "no identity, activation page")
	wantNoUpstream(t, e.up, 0, "no identity")
}

func containsString(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func cloneValues(v url.Values) url.Values {
	out := make(url.Values, len(v))
	for k, vs := range v {
		out[k] = append([]string(nil), vs...)
	}
	return out
}
