package caddymodule

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

// FuzzSafeReturn: whatever the return check lets through resolves to this very site.
func FuzzSafeReturn(f *testing.F) {
	for _, seed := range []string{"/", "/admin?x=1", "//evil.example", `/\evil.example`, "/%2F%2Fevil.example",
		"/%5Cevil.example", "https://evil.example", "/\t/evil.example", "/a/../../b", "/.%2e/x", "javascript:alert(1)"} {
		f.Add(seed)
	}
	base, _ := url.Parse("https://console.example/.jit/activate")
	f.Fuzz(func(t *testing.T, in string) {
		out := safeReturn(in)
		if out != "/" && out != in {
			t.Fatalf("safeReturn(%q) = %q: it must keep the input or fall back to /", in, out)
		}
		u, err := base.Parse(out)
		if err != nil {
			t.Fatalf("safeReturn(%q) = %q, which does not parse: %v", in, out, err)
		}
		if u.Scheme != "https" || u.Host != "console.example" || u.User != nil {
			t.Fatalf("safeReturn(%q) = %q resolves off-site to %v", in, out, u)
		}
		if strings.HasPrefix(out, "//") || strings.ContainsAny(out, "\\\t\r\n\x00 ") {
			t.Fatalf("safeReturn(%q) = %q keeps a character a browser could read as a new authority", in, out)
		}
	})
}

// FuzzReadForm: the activation form parser never panics, never returns a field it was
// not asked for, and refuses a field sent twice.
func FuzzReadForm(f *testing.F) {
	f.Add("application/x-www-form-urlencoded", "role=admin&duration=30m&justification=x&code=123456&csrf=abc&return=%2F")
	f.Add("application/x-www-form-urlencoded", "code=1&code=2")
	f.Add("application/x-www-form-urlencoded", "a=%zz")
	f.Add("multipart/form-data; boundary=x", "--x--")
	f.Add("application/x-www-form-urlencoded; charset=utf-8", strings.Repeat("a", maxFormSize+10))
	fields := []string{"role", "duration", "justification", "ticket", "code", "return", "csrf"}
	f.Fuzz(func(t *testing.T, contentType, body string) {
		r := httptest.NewRequest(http.MethodPost, "/.jit/activate", strings.NewReader(body))
		r.Header.Set("Content-Type", contentType)
		form, err := readForm(httptest.NewRecorder(), r, fields...)
		if err != nil {
			if form != nil {
				t.Fatal("refused the form but returned fields")
			}
			return
		}
		if len(body) > maxFormSize {
			t.Fatalf("accepted a body of %d bytes, over the %d limit", len(body), maxFormSize)
		}
		for name := range form {
			if !strings.Contains(" "+strings.Join(fields, " ")+" ", " "+name+" ") {
				t.Fatalf("returned a field %q that was not asked for", name)
			}
			if len(r.PostForm[name]) != 1 {
				t.Fatalf("accepted %q sent %d times", name, len(r.PostForm[name]))
			}
		}
	})
}

// FuzzSessionCookie: after our cookie is removed, no value of it is left for the
// upstream, and every other cookie survives.
func FuzzSessionCookie(f *testing.F) {
	f.Add("a=1; jit_session=tok; b=2")
	f.Add(`jit_session="x"; jit_session=y`)
	f.Add("jit_session2=keep;jit_session")
	f.Add(";;; ;")
	f.Fuzz(func(t *testing.T, header string) {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.Header.Set("Cookie", header)
		_ = sessionCookie(r)
		removeSessionCookie(r)
		if got := sessionCookie(r); got != "" {
			t.Fatalf("after removal the cookie header %q still yields a session %q", r.Header.Get("Cookie"), got)
		}
		for _, part := range strings.Split(r.Header.Get("Cookie"), ";") {
			if isSessionCookie(strings.TrimSpace(part)) {
				t.Fatalf("after removal %q still holds our cookie", r.Header.Get("Cookie"))
			}
		}
	})
}

// FuzzCaddyfile: any global jit option the parser accepts must also provision; the
// parser and Provision must agree, so that a JSON config and a Caddyfile fail alike.
func FuzzCaddyfile(f *testing.F) {
	f.Add("role admin {\n max_duration 1h\n eligible alice\n}")
	f.Add("issuer x\nlockout {\n max_failures 3\n duration 1m\n}\nrole a {\n max_duration 2h\n default_duration 1h\n justification required 5\n ticket \"INC-[0-9]+\"\n eligible bob group:ops from 2026-01-01 until 2026-12-31\n}")
	f.Add("role a {\n max_duration 1h\n justification optional\n eligible x until 2026-01-01T00:00:00Z\n}")
	f.Add("role a {\n max_duration 0s\n}")
	f.Fuzz(func(t *testing.T, body string) {
		src := "{\n\tjit {\n" + body + "\n\t}\n}\n"
		cfg, err := adaptForFuzz(src)
		if err != nil {
			return
		}
		appsRaw, _ := cfg["apps"].(map[string]any)
		raw, err := json.Marshal(appsRaw["jit"])
		if err != nil {
			t.Fatal(err)
		}
		var app App
		if err := json.Unmarshal(raw, &app); err != nil {
			t.Fatalf("accepted %q but its JSON does not decode: %v", body, err)
		}
		if _, err := buildRoles(app.Roles); err != nil {
			t.Fatalf("the Caddyfile parser accepted %q but Provision refuses it: %v", body, err)
		}
	})
}
