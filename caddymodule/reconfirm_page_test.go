package caddymodule

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/pquerna/otp"
	"github.com/pquerna/otp/totp"

	"github.com/caddy-jit/caddy-jit/audit"
	"github.com/caddy-jit/caddy-jit/session"
)

// reconfirmFixture is a gate whose session's step-up is 10 minutes old, with alice's
// TOTP secret (enrolled again, so that the test knows it).
type reconfirmFixture struct {
	*benchGate
	stale, secret, sid string
	expires            time.Time
}

func newReconfirmFixture(t *testing.T) (*reconfirmFixture, func(string) []map[string]any) {
	t.Helper()
	g, logs := freshGate(t)
	uri, err := g.h.app.authority.StepUp.Enroll(context.Background(), "alice", "test")
	if err != nil {
		t.Fatal(err)
	}
	key, err := otp.NewKeyFromURL(uri)
	if err != nil {
		t.Fatal(err)
	}
	c := g.claims(t)
	f := &reconfirmFixture{benchGate: g, stale: g.tokenSteppedUp(t, 10*time.Minute), secret: key.Secret(), sid: c.SessionID, expires: c.Expires()}
	logs.TakeAll()
	return f, func(event string) []map[string]any {
		var out []map[string]any
		for _, e := range logs.FilterMessage(event).All() {
			out = append(out, e.ContextMap())
		}
		return out
	}
}

// code is a code of the next time step: the activation spent the current one.
func (f *reconfirmFixture) code(t *testing.T) string {
	t.Helper()
	code, err := totp.GenerateCodeCustom(f.secret, time.Now().Add(30*time.Second), totp.ValidateOpts{Period: 30, Digits: otp.DigitsSix, Algorithm: otp.AlgorithmSHA1})
	if err != nil {
		t.Fatal(err)
	}
	return code
}

// wrongCode is a six-digit code valid for no time step near now.
func (f *reconfirmFixture) wrongCode(t *testing.T) string {
	t.Helper()
	near := map[string]bool{}
	for s := -3; s <= 3; s++ {
		code, err := totp.GenerateCodeCustom(f.secret, time.Now().Add(time.Duration(s)*30*time.Second), totp.ValidateOpts{Period: 30, Digits: otp.DigitsSix, Algorithm: otp.AlgorithmSHA1})
		if err != nil {
			t.Fatal(err)
		}
		near[code] = true
	}
	for _, c := range []string{"000000", "111111", "222222", "333333", "444444", "555555", "666666", "777777"} {
		if !near[c] {
			return c
		}
	}
	t.Fatal("eight codes in a row are all valid near now")
	return ""
}

// page sends a request to the re-confirmation page with the cookie ("" for none);
// a form makes it a POST carrying a valid CSRF token.
func (f *reconfirmFixture) page(t *testing.T, cookie string, form url.Values) *httptest.ResponseRecorder {
	t.Helper()
	r := f.request(cookie)
	target := reconfirmURL(f.sid, "/admin/page?x=1")
	r.URL, _ = url.Parse(target)
	r.RequestURI = target
	if form != nil {
		if form.Get("csrf") == "" {
			form.Set("csrf", f.h.app.authority.Keyring.CSRFToken("alice", "http://console.example", time.Now()))
		}
		r.Method = http.MethodPost
		r.URL.RawQuery = ""
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		r.Body = bodyOf(form.Encode())
	}
	w := httptest.NewRecorder()
	if err := f.h.ServeHTTP(w, r, f.next); err != nil {
		t.Fatal(err)
	}
	return w
}

func (f *reconfirmFixture) form(code, ret string) url.Values {
	return url.Values{"session": {f.sid}, "return": {ret}, "code": {code}}
}

func TestReconfirmPageRenewsTheStepUpAndSendsTheBrowserBack(t *testing.T) {
	f, events := newReconfirmFixture(t)
	w := f.page(t, f.stale, nil)
	if w.Code != http.StatusOK || !strings.Contains(w.Body.String(), `action="/.jit/reconfirm"`) ||
		!strings.Contains(w.Body.String(), `name="return" value="/admin/page?x=1"`) {
		t.Fatalf("GET the page: %d %s", w.Code, w.Body)
	}

	w = f.page(t, f.stale, f.form(f.code(t), "/admin/page?x=1"))
	if w.Code != http.StatusSeeOther || w.Header().Get("Location") != "/admin/page?x=1" {
		t.Fatalf("POST the code: %d to %q, want 303 to the page: %s", w.Code, w.Header().Get("Location"), w.Body)
	}
	var token string
	for _, c := range w.Result().Cookies() {
		if c.Name == CookieName {
			token = c.Value
		}
	}
	c, err := f.h.app.authority.Verifier.Verify(token, session.Want{Subject: "alice", Audience: "http://console.example", Roles: []string{"admin"}}, time.Now())
	if err != nil {
		t.Fatalf("the new cookie does not admit: %v", err)
	}
	if age := time.Since(time.Unix(c.AuthTime, 0)); c.SessionID != f.sid || age > 5*time.Second || !c.Expires().Equal(f.expires) {
		t.Errorf("new token: session %s, step-up %s ago, end %s; want %s, now, the old end %s", c.SessionID, age, c.Expires(), f.sid, f.expires)
	}
	if evs := events(audit.EventSessionReconfirmed); len(evs) != 1 || evs[0]["session_id"] != f.sid {
		t.Errorf("session_reconfirmed events %v, want one for %s", evs, f.sid)
	}

	// The fresh route now admits the new cookie, and still refuses the old one.
	fresh := f.handler(5*time.Minute, "admin")
	for cookie, want := range map[string]int{token: http.StatusOK, f.stale: http.StatusFound} {
		rw := &benchWriter{header: http.Header{}}
		if err := fresh.ServeHTTP(rw, f.request(cookie), f.next); err != nil || rw.code != want {
			t.Errorf("the fresh route answered %d (%v), want %d", rw.code, err, want)
		}
	}
}

// Another browser of alice's, which knows her password and even a current code, gets
// neither the form nor a token, and spends no code trying.
func TestReconfirmPageRefusesABrowserThatDoesNotHoldTheSession(t *testing.T) {
	f, events := newReconfirmFixture(t)
	code := f.code(t)
	other := f.tokenOfAnotherSession(t)
	for name, cookie := range map[string]string{"no cookie": "", "another session's cookie": other} {
		if w := f.page(t, cookie, nil); w.Code != http.StatusForbidden || strings.Contains(w.Body.String(), `name="code"`) {
			t.Errorf("%s: GET answered %d with %s, want 403 without the form", name, w.Code, w.Body)
		}
		w := f.page(t, cookie, f.form(code, "/admin/page?x=1"))
		if w.Code != http.StatusForbidden || len(w.Result().Cookies()) != 0 {
			t.Errorf("%s: POST answered %d with cookies %v, want 403 and none", name, w.Code, w.Result().Cookies())
		}
	}
	failed := events(audit.EventReconfirmFailed)
	if len(failed) != 2 || failed[0]["reason"] != "session_not_held" || len(events(audit.EventSessionReconfirmed)) != 0 {
		t.Errorf("reconfirm_failed events %v, want two for session_not_held, and no session_reconfirmed", failed)
	}
	if w := f.page(t, f.stale, f.form(code, "/admin/page?x=1")); w.Code != http.StatusSeeOther {
		t.Errorf("the holder's POST with the same code answered %d: the refused ones spent it", w.Code)
	}
}

func TestReconfirmPageRefusals(t *testing.T) {
	f, events := newReconfirmFixture(t)
	tests := []struct {
		name   string
		form   url.Values
		status int
		want   string
	}{
		{"wrong code", f.form(f.wrongCode(t), "/admin"), http.StatusBadRequest, "The code is wrong"},
		{"no csrf token", url.Values{"session": {f.sid}, "code": {"123456"}, "csrf": {"x"}}, http.StatusForbidden, "Form expired"},
		{"unknown session", url.Values{"session": {"AAAAAAAAAAAAAAAAAAAAAA"}, "code": {"123456"}}, http.StatusNotFound, "No such session"},
		{"field twice", url.Values{"session": {f.sid, f.sid}, "code": {"123456"}}, http.StatusBadRequest, "more than once"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := f.page(t, f.stale, tt.form)
			if w.Code != tt.status || !strings.Contains(w.Body.String(), tt.want) || len(w.Result().Cookies()) != 0 {
				t.Errorf("answered %d with cookies %v: %s; want %d saying %q and no cookie", w.Code, w.Result().Cookies(), w.Body, tt.status, tt.want)
			}
		})
	}
	if n := len(events(audit.EventSessionReconfirmed)); n != 0 {
		t.Errorf("%d session_reconfirmed events after refusals", n)
	}
	// An open redirect through return ends on the site's root.
	if w := f.page(t, f.stale, f.form(f.code(t), "//evil.example/x")); w.Code != http.StatusSeeOther || w.Header().Get("Location") != "/" {
		t.Errorf("return //evil.example/x: %d to %q, want 303 to /", w.Code, w.Header().Get("Location"))
	}
}

// tokenOfAnotherSession starts a second session of alice's (a browser elsewhere) and
// returns its token.
func (f *reconfirmFixture) tokenOfAnotherSession(t *testing.T) string {
	t.Helper()
	rec, err := f.h.app.authority.Records.Load(context.Background(), "alice", f.sid)
	if err != nil {
		t.Fatal(err)
	}
	other := session.NewRecord(session.Spec{User: "alice", Role: "admin", Audience: rec.Audience, Start: time.Now(), Expires: time.Now().Add(30 * time.Minute)})
	if err := f.h.app.authority.Records.SaveIndexed(context.Background(), other); err != nil {
		t.Fatal(err)
	}
	token, err := f.h.app.authority.SignRecord(other, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return token
}
