package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	stdpng "image/png"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// 20. Over HTTPS the session cookie is __Host-jit_session, Secure, and bound to the
// https origin; the plain cookie name is not accepted there.
func TestHTTPSUsesHostPrefixedSecureCookie(t *testing.T) {
	const secureCookie = "__Host-jit_session"
	e := newEnv(t, envOptions{
		Global: "\tlocal_certs\n\tskip_install_trust\n\tauto_https disable_redirects\n" +
			fmt.Sprintf("\thttp_port %d", freePort(t)),
		Sites: []siteSpec{{Auth: true, TLS: true, Jit: "\tjit " + roleAdmin}},
	})
	alice := e.enroll("alice")
	b := e.browser("alice")
	site := e.site(0)
	if !strings.HasPrefix(site, "https://localhost:") {
		t.Fatalf("test bug: site %s is not https", site)
	}

	wantActivationRedirect(t, b.get(site+adminURI), roleAdmin, adminURI)
	r := b.activate(site, roleAdmin, adminURI, alice.next(t), nil)
	if !wantStatus(t, r, http.StatusSeeOther, "activation over HTTPS") {
		t.FailNow()
	}
	c := setCookie(r, secureCookie)
	if c == nil || c.Value == "" {
		t.Fatalf("no %s cookie: %s", secureCookie, r)
	}
	if plain := setCookie(r, cookieName); plain != nil {
		t.Errorf("over HTTPS the plain %s cookie was set too: %s", cookieName, r)
	}
	if !c.Secure || !c.HttpOnly || c.SameSite != http.SameSiteLaxMode || c.Path != "/" || c.Domain != "" {
		t.Errorf("cookie attributes Secure=%v HttpOnly=%v SameSite=%v Path=%q Domain=%q; want Secure, HttpOnly, Lax, /, no Domain (%q)",
			c.Secure, c.HttpOnly, c.SameSite, c.Path, c.Domain, r.Header.Values("Set-Cookie"))
	}
	for _, sc := range r.Header.Values("Set-Cookie") {
		if strings.HasPrefix(sc, secureCookie+"=") && strings.Contains(strings.ToLower(sc), "domain=") {
			t.Errorf("the __Host- cookie carries a Domain attribute: %q", sc)
		}
	}
	token := c.Value
	if _, claims := tokenParts(t, token); claims["aud"] != site {
		t.Errorf("token aud=%v, want %s", claims["aud"], site)
	}

	hits := e.up.count()
	r = b.get(site + adminURI)
	if wantStatus(t, r, http.StatusOK, "request under the session over HTTPS") {
		got := e.up.last(t)
		if got.Header.Get("X-Jit-User") != "alice" {
			t.Errorf("upstream X-Jit-User=%q, want alice", got.Header.Get("X-Jit-User"))
		}
		if cookies := strings.Join(got.Header.Values("Cookie"), "; "); strings.Contains(cookies, token) {
			t.Errorf("the upstream received our session cookie: Cookie: %q", cookies)
		}
	}
	hits = e.up.count()

	// The same token under the plain name is no session over HTTPS.
	r = b.raw(http.MethodGet, site+adminURI, withBasicAuth("alice"), withCookieHeader(cookieName+"="+token))
	wantActivationRedirect(t, r, roleAdmin, adminURI)
	wantNoUpstream(t, e.up, hits, "the token under the plain cookie name over HTTPS")
	// A control: the same raw request with the __Host- name passes.
	r = b.raw(http.MethodGet, site+adminURI, withBasicAuth("alice"), withCookieHeader(secureCookie+"="+token))
	wantStatus(t, r, http.StatusOK, "the token under the __Host- name, sent by hand")
}

// 21. `caddy jit enroll` enrolls through the running Caddy's admin API: its secret
// activates, enrolling again replaces it, and the secret is written nowhere but to the
// operator.
func TestEnrollCLI(t *testing.T) {
	e := newEnv(t, envOptions{})
	site := e.site(0)
	if out, err := runCaddy(t, e.dir, "jit", "enroll", "--help"); err != nil {
		t.Fatalf("the binary has no working `caddy jit enroll` (%v):\n%s", err, out)
	}

	first := e.enrollCLI("alice")
	b := e.browser("alice")
	b.mustActivate(site, roleAdmin, adminURI, first, nil)
	if !wantStatus(t, b.get(site+adminURI), http.StatusOK, "under the session from the CLI's secret") {
		t.FailNow()
	}
	accepted := first.lastStep

	second := e.enrollCLI("alice")
	if second.secret == first.secret {
		t.Fatalf("enrolling again gave the same secret")
	}
	// The old secret's next code is refused as wrong, not as replayed.
	r := e.browser("alice").activate(site, roleAdmin, "/", first.next(t), nil)
	wantStatus(t, r, http.StatusBadRequest, "a code of the replaced secret")
	if c := setCookie(r, cookieName); c != nil && c.Value != "" {
		t.Errorf("a code of the replaced secret set a session cookie: %s", r)
	}
	e.waitEvent(match{"event": "activation_failed", "user": "alice", "reason": "totp_invalid"})
	// The new secret works; its code must be for a step after the last accepted one.
	second.lastStep = accepted
	e.browser("alice").mustActivate(site, roleAdmin, "/", second, nil)

	enrolled := e.events(match{"event": "enrolled", "user": "alice"})
	if len(enrolled) != 2 {
		t.Errorf("audit: %d enrolled events for alice, want 2: %v", len(enrolled), enrolled)
	} else {
		if got := enrolled[0].str("replaced"); got != "false" {
			t.Errorf("audit: the first enrollment has replaced=%q, want false: %v", got, enrolled[0])
		}
		if got := enrolled[1].str("replaced"); got != "true" {
			t.Errorf("audit: the second enrollment has replaced=%q, want true: %v", got, enrolled[1])
		}
	}
	for _, u := range []*totpUser{first, second} {
		if strings.Contains(e.auditRaw(), u.secret) {
			t.Errorf("the audit log contains a TOTP secret")
		}
		if strings.Contains(e.logs.String(), u.secret) {
			t.Errorf("Caddy's own log contains a TOTP secret")
		}
	}

	// --png writes the QR code to a file only the operator can read, even over an
	// older file that others could read.
	png := filepath.Join(e.dir, "bob-qr.png")
	if err := os.WriteFile(png, []byte("an older file"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(png, 0o644); err != nil {
		t.Fatal(err)
	}
	bob := e.enrollCLI("bob", "--png", png)
	data, err := os.ReadFile(png)
	if err != nil {
		t.Fatalf("--png %s: %v", png, err)
	}
	if !bytes.HasPrefix(data, []byte("\x89PNG\r\n\x1a\n")) {
		t.Errorf("--png wrote no PNG: it starts with %q", data[:min(len(data), 8)])
	} else if cfg, err := stdpng.DecodeConfig(bytes.NewReader(data)); err != nil || cfg.Width < 100 || cfg.Height < 100 {
		t.Errorf("--png wrote an image that does not decode or is tiny: %+v %v", cfg, err)
	}
	if fi, err := os.Stat(png); err == nil && fi.Mode().Perm() != 0o600 {
		t.Errorf("--png wrote the file with mode %v, want 0600", fi.Mode().Perm())
	}
	e.waitEvent(match{"event": "enrolled", "user": "bob", "replaced": "false"})
	if bob != nil && (strings.Contains(e.auditRaw(), bob.secret) || strings.Contains(e.logs.String(), bob.secret)) {
		t.Errorf("a log contains bob's TOTP secret")
	}
}

// enrollCLI runs `caddy jit enroll USER --address ADMIN` with extra arguments and returns
// the secret of the otpauth URI it prints (if it prints one: with --png it may not).
func (e *env) enrollCLI(user string, extra ...string) *totpUser {
	t := e.t
	t.Helper()
	args := append([]string{"jit", "enroll", user, "--address", fmt.Sprintf("localhost:%d", e.data.AdminPort)}, extra...)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, caddyBin, args...)
	cmd.Dir = e.dir
	cmd.Env = append(os.Environ(), "HOME="+e.dir)
	cmd.WaitDelay = 5 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("caddy %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	out := strings.ReplaceAll(stdout.String(), `\u0026`, "&")
	m := otpauthURI.FindString(out)
	if m == "" {
		if len(extra) == 0 {
			t.Fatalf("caddy %s printed no otpauth URI; stdout:\n%s\nstderr:\n%s", strings.Join(args, " "), stdout.String(), stderr.String())
		}
		return nil
	}
	u, err := url.Parse(m)
	if err != nil {
		t.Fatalf("caddy jit enroll printed an otpauth URI that does not parse: %q: %v", m, err)
	}
	secret := u.Query().Get("secret")
	if raw, err := base64Std32(secret); err != nil || len(raw) != 20 {
		t.Fatalf("caddy jit enroll printed %q: the secret should be 20 bytes of base32 (%d bytes, %v)", m, len(raw), err)
	}
	return &totpUser{name: user, secret: secret}
}

var otpauthURI = regexp.MustCompile(`otpauth://totp/[^\s"'<>]+`)

// 22. The enrollment admin API refuses what is not an enrollment, saying why.
func TestEnrollmentAdminAPIRefusesBadInput(t *testing.T) {
	e := newEnv(t, envOptions{})
	cases := []struct {
		name, method, path string
		status             int
		// want is a piece of the error message, lower case.
		want string
	}{
		{"GET", http.MethodGet, "/jit/enrollments/alice", http.StatusMethodNotAllowed, "post"},
		{"empty user", http.MethodPost, "/jit/enrollments/", http.StatusBadRequest, "no user name"},
		{"newline in user", http.MethodPost, "/jit/enrollments/ali%0Ace", http.StatusBadRequest, "control character"},
		{"control character in user", http.MethodPost, "/jit/enrollments/ali%01ce", http.StatusBadRequest, "control character"},
	}
	client := &http.Client{Timeout: 10 * time.Second}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequest(tc.method, e.adminURL(tc.path), nil)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.status {
				t.Errorf("%s %s: want %d, got %d %s", tc.method, tc.path, tc.status, resp.StatusCode, body)
			}
			var apiErr struct {
				Error string `json:"error"`
			}
			if err := json.Unmarshal(body, &apiErr); err != nil {
				t.Fatalf("%s %s: the body is not JSON: %v: %s", tc.method, tc.path, err, body)
			}
			if !strings.Contains(strings.ToLower(apiErr.Error), tc.want) {
				t.Errorf("%s %s: error %q does not say %q", tc.method, tc.path, apiErr.Error, tc.want)
			}
			if strings.Contains(string(body), "otpauth") {
				t.Errorf("%s %s: a refusal carries an otpauth URI: %s", tc.method, tc.path, body)
			}
		})
	}
	// None of them enrolled anyone.
	if evs := e.events(match{"event": "enrolled"}); len(evs) != 0 {
		t.Errorf("refused enrollments were audited as enrolled: %v", evs)
	}
	// A control: the same API enrolls a good name.
	e.enroll("alice")
	e.waitEvent(match{"event": "enrolled", "user": "alice"})
}
