package caddymodule

import (
	"crypto/tls"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestStepUpTemplateShowsWhatTheRoleAccepts(t *testing.T) {
	for _, tt := range []struct {
		name      string
		view      stepUpView
		want, not []string
	}{
		{name: "any, no passkey yet", view: stepUpView{Form: "activate:db", User: "alice", Code: true, Passkey: true, CodeID: "code"},
			want: []string{`name="code"`, ` required`, `name="passkey_ceremony"`}, not: []string{`data-passkey="login"`}},
		{name: "any, a passkey", view: stepUpView{Form: "activate:db", User: "alice", Code: true, Passkey: true, Registered: true, CodeID: "code"},
			want: []string{`name="code"`, `data-passkey="login"`, `data-passkey-form="activate:db"`, `(or use a passkey)`}, not: []string{` required`}},
		{name: "webauthn, a passkey", view: stepUpView{Form: "activate:db", User: "alice", Passkey: true, Registered: true, CodeID: "code"},
			want: []string{`data-passkey="login"`, `<noscript>`}, not: []string{`name="code"`}},
		{name: "webauthn, none registered", view: stepUpView{Form: "activate:db", User: "alice", Passkey: true, CodeID: "code"},
			want: []string{`href="/.jit/enroll"`, `you have none registered`}, not: []string{`name="code"`, `data-passkey="login"`}},
		{name: "webauthn where passkeys cannot run", view: stepUpView{Form: "activate:db", User: "alice", CodeID: "code"},
			want: []string{`rp_id`}, not: []string{`name="code"`, `data-passkey`}},
		{name: "totp", view: stepUpView{Form: "decide:R", User: "bob", Code: true, CodeID: "code-R", CodeHint: "Your own code."},
			want: []string{`id="code-R"`, `Your own code.`, ` required`}, not: []string{`data-passkey`}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var b strings.Builder
			if err := pageTemplates.ExecuteTemplate(&b, "stepup", tt.view); err != nil {
				t.Fatal(err)
			}
			for _, w := range tt.want {
				if !strings.Contains(b.String(), w) {
					t.Errorf("missing %q in\n%s", w, b.String())
				}
			}
			for _, n := range tt.not {
				if strings.Contains(b.String(), n) {
					t.Errorf("unexpected %q in\n%s", n, b.String())
				}
			}
		})
	}
}

func TestErrorSummaryLinksOnlyToAFieldOnThePage(t *testing.T) {
	passkeyOnly, withCode := stepUpView{Passkey: true}, stepUpView{Code: true, Passkey: true}
	if got := passkeyOnly.linkableField("code"); got != "" {
		t.Errorf("a passkey-only form links its error to %q", got)
	}
	if got := withCode.linkableField("code"); got != "code" {
		t.Errorf("a form with a code field links its error to %q", got)
	}
	if got := passkeyOnly.linkableField("justification"); got != "justification" {
		t.Errorf("the justification error links to %q", got)
	}
}

func TestPasskeyCookie(t *testing.T) {
	for _, tt := range []struct {
		name       string
		tls        bool
		cookieName string
		path       string
	}{
		{"http", false, PasskeyCookieName, "/.jit/"},
		{"https", true, SecurePasskeyCookieName, "/"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodPost, "/.jit/passkey", nil)
			if tt.tls {
				r.TLS = &tls.ConnectionState{}
			}
			value, c := passkeyBinding(r)
			if c.Name != tt.cookieName || c.Path != tt.path || !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || c.Secure != tt.tls || c.Value != value || c.MaxAge != 600 {
				t.Fatalf("cookie %+v", c)
			}
			// The browser keeps its binding: a second ceremony renews the same value.
			r.AddCookie(c)
			if got := passkeyCookie(r); got != value {
				t.Fatalf("passkeyCookie = %q, want %q", got, value)
			}
			if again, _ := passkeyBinding(r); again != value {
				t.Errorf("a second ceremony got a new binding %q, want %q", again, value)
			}
		})
	}
	// A value of the wrong shape, or under the other scheme's name, is no binding.
	r := httptest.NewRequest(http.MethodPost, "/.jit/passkey", nil)
	r.TLS = &tls.ConnectionState{}
	r.AddCookie(&http.Cookie{Name: PasskeyCookieName, Value: strings.Repeat("A", 43)})
	if got := passkeyCookie(r); got != "" {
		t.Errorf("an HTTPS request's plain-named cookie was taken: %q", got)
	}
	r = httptest.NewRequest(http.MethodPost, "/.jit/passkey", nil)
	r.AddCookie(&http.Cookie{Name: PasskeyCookieName, Value: "short"})
	if got, _ := passkeyBinding(r); got == "short" || len(got) != 43 {
		t.Errorf("a malformed binding was kept: %q", got)
	}
}
