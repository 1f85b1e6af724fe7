package integration

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/html"
)

// ---------------------------------------------------------------------------
// Classes 8 and 10 use a test-only identity taken from a request header, so that
// the tests can choose any user name (also ones basic_auth could not carry).

// headerIdentityOptions makes the identity a client-set header. TEST ONLY: never
// configure a client-controlled header as the identity in production.
const headerIdentityOptions = `		# TEST ONLY: the identity is a header any client can set, so that the
		# tests can choose user names freely. Never do this in production.
		identity {http.request.header.X-Test-User}`

// ticketRole is a role whose ticket field accepts any one-line text (up to the 128
// characters that caddy-jit allows), for tests of what a ticket carries.
const ticketRole = `		role ticketed {
			max_duration 1h
			justification optional
			ticket .+
			eligible alice bob <script>alert(1)</script> ` + "`\"><img src=x onerror=alert(1)>`" + `
		}`

func newHeaderIdentityEnv(t *testing.T) *env {
	t.Helper()
	return newEnv(t, envOptions{
		JitOptions: headerIdentityOptions + "\n" + ticketRole,
		Sites:      []siteSpec{{Auth: false, Jit: "\tjit " + roleAdmin}},
	})
}

// headerUser is a browser whose identity is user, sent in X-Test-User.
func (e *env) headerUser(user string) *browser {
	b := e.browser("")
	b.user = ""
	b.headers = http.Header{"X-Test-User": {user}}
	return b
}

// ---------------------------------------------------------------------------
// Class 8: clickjacking and content injection on our pages.

const (
	xssScript = `<script>alert(1)</script>`
	xssAttr   = `"><img src=x onerror=alert(1)>`
	xssSVG    = `<svg onload=alert(1)>`
)

// wantPageHeaders checks the headers every /.jit/ page and message must carry.
func wantPageHeaders(t *testing.T, r *response, what string) {
	t.Helper()
	csp := r.Header.Get("Content-Security-Policy")
	directives := map[string]string{}
	for d := range strings.SplitSeq(csp, ";") {
		name, value, _ := strings.Cut(strings.TrimSpace(d), " ")
		directives[name] = value
	}
	switch {
	case csp == "":
		t.Errorf("%s: no Content-Security-Policy (%s)", what, r.Status)
	case directives["frame-ancestors"] != "'none'":
		t.Errorf("%s: CSP %q lacks frame-ancestors 'none'", what, csp)
	case strings.Contains(csp, "unsafe-inline") || strings.Contains(csp, "unsafe-eval") || strings.Contains(csp, "*"):
		t.Errorf("%s: CSP %q allows unsafe sources", what, csp)
	case directives["default-src"] != "'none'" && directives["script-src"] == "":
		t.Errorf("%s: CSP %q does not restrict scripts", what, csp)
	}
	if v := r.Header.Get("X-Frame-Options"); v != "DENY" {
		t.Errorf("%s: X-Frame-Options %q, want DENY", what, v)
	}
	if v := r.Header.Get("X-Content-Type-Options"); v != "nosniff" {
		t.Errorf("%s: X-Content-Type-Options %q, want nosniff", what, v)
	}
}

// ourScripts are the page script tags of caddymodule/templates/layout.html.
var ourScripts = []string{`<script src="/.jit/app.js" defer></script>`, `<script src="/.jit/passkey.js" defer></script>`}

// wantInert parses an HTML page and checks that it holds no script, no event handler
// attribute and none of the injected elements; each of wantText must appear in the
// page's text or attribute values exactly (so it was escaped, not dropped).
func wantInert(t *testing.T, r *response, what string, wantText ...string) {
	t.Helper()
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/html") {
		return
	}
	// Our own script, the only one a page may load (same origin, allowed by the CSP).
	body := r.Body
	for _, s := range ourScripts {
		body = strings.ReplaceAll(body, s, "")
	}
	for _, raw := range []string{xssScript, xssAttr, xssSVG, "<img", "<script", "<svg"} {
		if strings.Contains(body, raw) {
			t.Errorf("%s: the page contains %q unescaped", what, raw)
		}
	}
	doc, err := html.Parse(strings.NewReader(body))
	if err != nil {
		t.Errorf("%s: the page does not parse: %v", what, err)
		return
	}
	var texts []string
	var walk func(*html.Node)
	walk = func(n *html.Node) {
		switch n.Type {
		case html.ElementNode:
			switch n.Data {
			case "script", "img", "svg", "iframe", "object", "embed":
				t.Errorf("%s: the page has a <%s> element", what, n.Data)
			}
			for _, a := range n.Attr {
				if strings.HasPrefix(strings.ToLower(a.Key), "on") {
					t.Errorf("%s: <%s> has an event handler attribute %s=%q", what, n.Data, a.Key, a.Val)
				}
				texts = append(texts, a.Val)
			}
		case html.TextNode:
			texts = append(texts, n.Data)
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c)
		}
	}
	walk(doc)
	all := strings.Join(texts, "\n")
	for _, w := range wantText {
		if !strings.Contains(all, w) {
			t.Errorf("%s: the page does not show %q (escaped) at all", what, w)
		}
	}
}

func TestSecurityClass08PagesAndInjection(t *testing.T) {
	e := newHeaderIdentityEnv(t)
	site := e.site(0)
	alice := e.enroll("alice")
	a := e.headerUser("alice")

	// alice's session of the ticketed role, with markup in its justification and ticket.
	token := activateWith(t, a, site, "ticketed", "/", alice.next(t), url.Values{"justification": {"why: " + xssScript}, "ticket": {xssAttr}})
	sid := sessionID(t, token)
	csrf := formFields(t, a.get(site+"/.jit/").Body, "/.jit/deactivate").Get("csrf")
	if csrf == "" {
		t.Fatalf("the status page has no deactivation form")
	}

	type pageCase struct {
		name   string
		req    func() *response
		status int
		// text must be shown, escaped.
		text []string
	}
	form := func(b *browser, role string, change url.Values) func() *response {
		return func() *response {
			f := b.activationForm(site, role, "/")
			for k, v := range change {
				f[k] = v
			}
			return b.postForm(site+"/.jit/activate", f)
		}
	}
	get := func(b *browser, p string) func() *response { return func() *response { return b.get(site + p) } }
	cases := []pageCase{
		{"activation page", get(a, activationPath(roleAdmin, "/admin")), http.StatusOK, nil},
		{"activation page with markup in return", get(a, activationPath(roleAdmin, `/"><script>alert(1)</script>`)), http.StatusOK, []string{`/"><script>alert(1)</script>`}},
		{"activation form re-rendered: markup in justification and ticket", form(a, "ticketed", url.Values{
			"justification": {xssScript + " " + xssAttr}, "ticket": {xssAttr}, "duration": {"forever"}}), http.StatusBadRequest,
			[]string{xssScript + " " + xssAttr}},
		{"activation form re-rendered: markup in a ticket that does not match", form(a, "ticketed", url.Values{
			"justification": {"x"}, "ticket": {xssScript + "\n"}, "code": {"000000"}}), http.StatusBadRequest, nil},
		{"activation form re-rendered: markup in duration", form(a, "ticketed", url.Values{"ticket": {"T-1"}, "duration": {xssScript}}), http.StatusBadRequest, nil},
		{"activation refused for CSRF", form(a, roleAdmin, url.Values{"csrf": {"x"}, "justification": {xssAttr}}), http.StatusForbidden, []string{xssAttr}},
		{"status page with markup in justification and ticket", get(a, "/.jit/"), http.StatusOK, []string{"why: " + xssScript, xssAttr}},
		{"unknown role with markup", get(a, "/.jit/activate?role="+url.QueryEscape(xssScript)), http.StatusNotFound, []string{xssScript}},
		{"unknown page with markup", get(a, "/.jit/"+url.PathEscape(xssSVG)), http.StatusNotFound, []string{xssSVG}},
		{"deactivate by GET", get(a, "/.jit/deactivate?session="+sid), http.StatusMethodNotAllowed, nil},
		{"deactivate an unknown session", func() *response {
			return a.postForm(site+"/.jit/deactivate", url.Values{"session": {xssScript}, "csrf": {csrf}})
		}, http.StatusNotFound, nil},
		{"deactivate with a bad form", func() *response {
			return a.postForm(site+"/.jit/deactivate", url.Values{"session": {sid, sid}, "csrf": {csrf}})
		}, http.StatusBadRequest, nil},
		{"JWKS", get(a, "/.jit/jwks.json"), http.StatusOK, nil},
		{"style sheet", get(a, "/.jit/style.css"), http.StatusOK, nil},
		{"no identity on a page", get(e.browser(""), "/.jit/"), http.StatusUnauthorized, nil},
		{"no identity at the gate", get(e.browser(""), "/admin"), http.StatusUnauthorized, nil},
		{"not eligible at the gate", get(e.headerUser("carol"), "/admin"), http.StatusForbidden, nil},
		{"not eligible on the activation page", get(e.headerUser("carol"), activationPath(roleAdmin, "/")), http.StatusForbidden, nil},
	}
	for _, name := range []string{xssScript, xssAttr, xssSVG} {
		u := e.headerUser(name)
		eligible := name != xssSVG
		cases = append(cases,
			pageCase{"status page of user " + name, get(u, "/.jit/"), http.StatusOK, []string{name}},
			pageCase{"gate page of user " + name, get(u, "/admin"), http.StatusForbidden, []string{name}},
			pageCase{"unknown page of user " + name, get(u, "/.jit/nope"), http.StatusNotFound, nil},
		)
		if eligible {
			cases = append(cases,
				pageCase{"activation page of user " + name, get(u, activationPath("ticketed", "/")), http.StatusOK, []string{name}},
				pageCase{"re-rendered form of user " + name, form(u, "ticketed", url.Values{"ticket": {""}}), http.StatusBadRequest, []string{name}},
			)
		} else {
			cases = append(cases, pageCase{"activation page of ineligible user " + name, get(u, activationPath("ticketed", "/")), http.StatusForbidden, []string{name}})
		}
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := e.up.count()
			r := tc.req()
			wantStatus(t, r, tc.status, tc.name)
			wantPageHeaders(t, r, tc.name)
			wantInert(t, r, tc.name, tc.text...)
			wantNoUpstream(t, e.up, before, tc.name)
		})
	}
}

// ---------------------------------------------------------------------------
// Class 9: log injection.

func TestSecurityClass09LogInjection(t *testing.T) {
	e := newEnv(t, envOptions{JitOptions: ticketRole})
	site := e.site(0)
	alice, bob := e.enroll("alice"), e.enroll("bob")

	const forgedSID = "FORGED-SESSION-ID"
	fake := `{"level":"info","ts":1700000000,"logger":"http.handlers.jit.audit","msg":"activation_succeeded","event":"activation_succeeded","user":"mallory","role":"console-admin","session_id":"` + forgedSID + `"}`
	// Four copies of the forged line (the justification is bounded to 1000 characters).
	payload := "checking the console\n" + fake + "\r\n" + fake + "\r" + fake + "\u2028\u0085\x00\x1b[2K" + fake

	var aliceToken string
	cases := []struct {
		name string
		do   func(t *testing.T)
	}{
		{"justification of a successful activation", func(t *testing.T) {
			aliceToken = activateWith(t, e.browser("alice"), site, roleAdmin, "/", alice.next(t), url.Values{"justification": {payload}})
		}},
		{"justification and ticket of a refused activation", func(t *testing.T) {
			r := e.browser("bob").activate(site, "ticketed", "/", "000000", url.Values{"justification": {payload}, "ticket": {"T-1\n" + fake}})
			wantStatus(t, r, http.StatusBadRequest, "a ticket with a line break")
		}},
		{"user agent with Unicode line separators, activation and access", func(t *testing.T) {
			ua := withHeader("User-Agent", "Mozilla/5.0 \u2028"+fake+"\u2029"+fake+"\u0085"+fake)
			b := e.browser("bob")
			f := b.activationForm(site, roleAdmin, "/")
			f.Set("justification", "integration test: user agent")
			f.Set("code", bob.next(t))
			r := b.postForm(site+"/.jit/activate", f, ua)
			if wantStatus(t, r, http.StatusSeeOther, "activation") {
				wantStatus(t, b.get(site+adminURI, ua), http.StatusOK, "access")
			}
		}},
		{"user agent with CR LF on the wire", func(t *testing.T) {
			for _, eol := range []string{"\r\n", "\n", "\r"} {
				raw := "GET " + adminURI + " HTTP/1.1\r\nHost: " + strings.TrimPrefix(site, "http://") + "\r\n" +
					"Authorization: Basic " + base64.StdEncoding.EncodeToString([]byte("alice:"+password("alice"))) + "\r\n" +
					"User-Agent: x" + eol + fake + "\r\n" + "Cookie: " + cookieName + "=" + aliceToken + "\r\nConnection: close\r\n\r\n"
				status := rawHTTP(t, site, raw)
				if status == http.StatusOK {
					t.Logf("a user agent followed by %q and a JSON line was accepted as a separate (ignored) header", eol)
				}
			}
		}},
		{"request URI", func(t *testing.T) {
			u := adminURI + "&q=" + url.QueryEscape("\n"+fake) + "&r=%0d%0a" + url.PathEscape(fake)
			wantStatus(t, e.browser("alice").raw(http.MethodGet, site+u, withBasicAuth("alice"), withToken(aliceToken)), http.StatusOK, "access")
			wantStatus(t, e.browser("carol").get(site+u), http.StatusForbidden, "access denied")
		}},
		{"operator's by and reason", func(t *testing.T) {
			e.adminOK(http.MethodDelete, "/jit/sessions/"+sessionID(t, aliceToken)+"?by="+url.QueryEscape("ops\n"+fake)+"&reason="+url.QueryEscape("r\r\n"+fake), nil)
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, tc.do)
	}

	// Let the last events reach the file.
	if aliceToken == "" {
		t.Fatalf("alice's activation failed; the rest depends on it")
	}
	e.waitEvent(match{"event": "revoked", "session_id": sessionID(t, aliceToken)})
	raw := e.auditRaw()
	lines := strings.Split(strings.TrimRight(raw, "\n"), "\n")
	if len(lines) < 8 {
		t.Fatalf("the audit log has only %d lines:\n%s", len(lines), raw)
	}
	for i, line := range lines {
		var obj map[string]any
		if err := json.Unmarshal([]byte(line), &obj); err != nil {
			t.Errorf("audit line %d is not one JSON object: %v: %.300q", i+1, err, line)
			continue
		}
		if obj["event"] == nil {
			t.Errorf("audit line %d has no event: %.300s", i+1, line)
		}
		if strings.HasPrefix(line, `{"level":"info","ts":1700000000`) || obj["session_id"] == forgedSID || obj["user"] == "mallory" {
			t.Errorf("product bug: audit line %d is the forged event: %.300s", i+1, line)
		}
	}
	if strings.Contains(raw, `"user":"mallory"`) {
		t.Errorf("product bug: the forged event's fields appear unescaped in the audit log")
	}
	// The injected text is kept, as a field value.
	ev := e.waitEvent(match{"event": "activation_succeeded", "user": "alice"})
	if ev != nil && ev.str("justification") != strings.TrimSpace(payload) {
		t.Errorf("the justification field is %.200q, want the submitted text exactly", ev.str("justification"))
	}
	if ev := e.waitEvent(match{"event": "activation_failed", "user": "bob", "reason": "ticket_invalid"}); ev != nil && !strings.Contains(ev.str("ticket"), "\n"+fake) {
		t.Errorf("the ticket field is %.200q, want the submitted text", ev.str("ticket"))
	}
}

// rawHTTP writes raw bytes to the site and returns the answer's status (0 if none).
func rawHTTP(t *testing.T, site, raw string) int {
	t.Helper()
	c, err := net.DialTimeout("tcp", strings.TrimPrefix(site, "http://"), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}
