package integration

import (
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pquerna/otp"
	"github.com/pquerna/otp/totp"
	"golang.org/x/net/html"
)

// ---------------------------------------------------------------------------
// TOTP.

// totpUser is an enrolled user, with the last time step the tests used, since the
// server accepts a code only for a step later than the last accepted one.
type totpUser struct {
	name     string
	secret   string
	lastStep int64
}

// enroll enrolls a user through the admin API and returns the secret.
func (e *env) enroll(user string) *totpUser {
	t := e.t
	t.Helper()
	resp, err := http.Post(e.adminURL("/jit/enrollments/"+url.PathEscape(user)), "application/json", nil)
	if err != nil {
		t.Fatalf("enrolling %s: %v", user, err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("enrolling %s: POST /jit/enrollments/%s → %d %s", user, user, resp.StatusCode, body)
	}
	var out struct {
		User       string `json:"user"`
		OTPAuthURI string `json:"otpauth_uri"`
	}
	if err := json.Unmarshal(body, &out); err != nil {
		t.Fatalf("enrolling %s: answer is not JSON: %v: %s", user, err, body)
	}
	u, err := url.Parse(out.OTPAuthURI)
	if err != nil || u.Scheme != "otpauth" || u.Host != "totp" {
		t.Fatalf("enrolling %s: otpauth_uri %q is not an otpauth://totp/ URI (%v)", user, out.OTPAuthURI, err)
	}
	q := u.Query()
	secret := q.Get("secret")
	if secret == "" {
		t.Fatalf("enrolling %s: otpauth_uri %q has no secret", user, out.OTPAuthURI)
	}
	if raw, err := base64Std32(secret); err != nil || len(raw) != 20 {
		t.Errorf("enrolling %s: the secret should be 20 bytes of base32, got %d bytes (%v)", user, len(raw), err)
	}
	for k, want := range map[string]string{"digits": "6", "period": "30", "algorithm": "SHA1"} {
		if v := q.Get(k); v != "" && v != want {
			t.Errorf("enrolling %s: otpauth_uri %s=%s, want %s", user, k, v, want)
		}
	}
	if out.User != user {
		t.Errorf("enrolling %s: answer names user %q", user, out.User)
	}
	return &totpUser{name: user, secret: secret}
}

func codeAt(t *testing.T, secret string, step int64) string {
	t.Helper()
	code, err := totp.GenerateCodeCustom(secret, time.Unix(step*30, 0), totp.ValidateOpts{
		Period: 30, Digits: otp.DigitsSix, Algorithm: otp.AlgorithmSHA1,
	})
	if err != nil {
		t.Fatalf("generating a TOTP code: %v", err)
	}
	return code
}

// waitsForTOTPSteps runs a test that spends most of its time waiting for fresh TOTP
// steps in parallel with the others like it, once the package's other tests are done:
// a user's code is single-use per 30 s step, so a test that needs several codes of one
// user waits up to a minute and more without using the machine. Only such tests are
// marked, never tests that measure latency or load. .ci/run gives the package enough
// -parallel slots for all of them.
func waitsForTOTPSteps(t *testing.T) {
	t.Helper()
	t.Parallel()
}

func currentStep() int64 { return time.Now().Unix() / 30 }

// next returns a code the server accepts now: for the current step, or for a later
// one than any used before (the server accepts up to one step ahead), waiting if
// even that was used.
func (u *totpUser) next(t *testing.T) string {
	t.Helper()
	cur := currentStep()
	step := max(cur, u.lastStep+1)
	if step > cur+1 {
		// Wait until step is at most one step ahead of the clock.
		wait := time.Until(time.Unix((step-1)*30, 0)) + 200*time.Millisecond
		t.Logf("waiting %s for a fresh TOTP step for %s", wait.Round(time.Millisecond), u.name)
		time.Sleep(wait)
	}
	u.lastStep = step
	return codeAt(t, u.secret, step)
}

// wrong returns a six-digit code that is valid for none of the steps near now.
func (u *totpUser) wrong(t *testing.T) string {
	t.Helper()
	cur := currentStep()
	near := map[string]bool{}
	for s := cur - 3; s <= cur+3; s++ {
		near[codeAt(t, u.secret, s)] = true
	}
	for n := 123456; ; n = (n + 111111) % 1000000 {
		c := fmt.Sprintf("%06d", n)
		if !near[c] {
			return c
		}
	}
}

// ---------------------------------------------------------------------------
// The browser-like client.

type browser struct {
	t      *testing.T
	e      *env
	user   string
	pass   string
	jar    *cookiejar.Jar
	client *http.Client
	// accept is the default Accept header.
	accept string
	// headers are sent with every request (before the per-request options).
	headers http.Header
	// host, if set, is the Host header of every request (for sites with a Host).
	host string
}

// browser returns a client that authenticates as user with basic auth (none when user
// is ""), keeps cookies, and does not follow redirects.
func (e *env) browser(user string) *browser {
	jar, _ := cookiejar.New(nil)
	b := &browser{t: e.t, e: e, user: user, pass: password(user), jar: jar, accept: "text/html,application/xhtml+xml;q=0.9,*/*;q=0.8"}
	b.client = &http.Client{
		Jar:     jar,
		Timeout: 15 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
	if slices.ContainsFunc(e.data.Sites, func(s siteSpec) bool { return s.TLS }) {
		// The sites' certificates come from Caddy's internal CA, which no one trusts.
		b.client.Transport = &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}
	}
	if len(e.data.Sites) > 0 {
		b.host = e.data.Sites[0].Host
	}
	e.t.Cleanup(b.client.CloseIdleConnections)
	e.browsers = append(e.browsers, b)
	return b
}

// dropIdleConnections closes the browsers' kept-alive connections to a Caddy that has
// just reloaded or restarted: the old server closes them, and a request sent on one as
// it closes would fail with EOF, which a real browser retries and Go's client need not.
func (e *env) dropIdleConnections() {
	for _, b := range e.browsers {
		b.client.CloseIdleConnections()
	}
}

// response is an answer with its body read.
type response struct {
	*http.Response
	Body string
}

func (r *response) String() string {
	body := r.Body
	if len(body) > 600 {
		body = body[:600] + "…"
	}
	return fmt.Sprintf("%s (Location %q, Set-Cookie %q) body: %s", r.Status, r.Header.Get("Location"), r.Header.Values("Set-Cookie"), body)
}

type reqOption func(*http.Request)

func withHeader(k, v string) reqOption { return func(r *http.Request) { r.Header.Set(k, v) } }

// withRawHeader sets a header under a key exactly as given (no canonicalization).
func withRawHeader(k, v string) reqOption { return func(r *http.Request) { r.Header[k] = []string{v} } }

// withCookieHeader sends a Cookie header as given, in addition to the jar's cookies.
func withCookieHeader(v string) reqOption { return func(r *http.Request) { r.Header.Set("Cookie", v) } }

// withBasicAuth authenticates as another user than the browser's.
func withBasicAuth(user string) reqOption {
	return func(r *http.Request) { r.SetBasicAuth(user, password(user)) }
}

// newRequest makes a request as the browser sends it: its host, credentials, Accept
// and headers.
func (b *browser) newRequest(method, rawURL string, body io.Reader) *http.Request {
	b.t.Helper()
	req, err := http.NewRequest(method, rawURL, body)
	if err != nil {
		b.t.Fatalf("making request %s %s: %v", method, rawURL, err)
	}
	if b.host != "" {
		req.Host = b.host
	}
	if b.user != "" {
		req.SetBasicAuth(b.user, b.pass)
	}
	req.Header.Set("Accept", b.accept)
	req.Header.Set("User-Agent", "caddy-jit-integration-test")
	for k, vs := range b.headers {
		req.Header[k] = slices.Clone(vs)
	}
	return req
}

func (b *browser) do(method, rawURL string, body io.Reader, opts ...reqOption) *response {
	b.t.Helper()
	req := b.newRequest(method, rawURL, body)
	for _, o := range opts {
		o(req)
	}
	resp, err := b.client.Do(req)
	if err != nil {
		b.t.Fatalf("%s %s: %v", method, rawURL, err)
	}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		// An upgraded connection (a WebSocket the gate let through): its body would
		// never end, so close it at once; the status is what counts.
		resp.Body.Close()
		return &response{Response: resp}
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		b.t.Fatalf("%s %s: reading the body: %v", method, rawURL, err)
	}
	return &response{Response: resp, Body: string(data)}
}

func (b *browser) get(rawURL string, opts ...reqOption) *response {
	b.t.Helper()
	return b.do(http.MethodGet, rawURL, nil, opts...)
}

// raw sends a request without the jar's cookies: only what opts add.
func (b *browser) raw(method, rawURL string, opts ...reqOption) *response {
	b.t.Helper()
	saved := b.client.Jar
	b.client.Jar = nil
	defer func() { b.client.Jar = saved }()
	return b.do(method, rawURL, nil, opts...)
}

func (b *browser) postForm(rawURL string, form url.Values, opts ...reqOption) *response {
	b.t.Helper()
	opts = append([]reqOption{withHeader("Content-Type", "application/x-www-form-urlencoded")}, opts...)
	return b.do(http.MethodPost, rawURL, strings.NewReader(form.Encode()), opts...)
}

// cookie returns our session cookie from the jar for site, or "".
func (b *browser) cookie(site string) string {
	u, _ := url.Parse(site)
	for _, c := range b.jar.Cookies(u) {
		if c.Name == cookieName {
			return c.Value
		}
	}
	return ""
}

// setCookie puts another cookie into the jar for site.
func (b *browser) setCookie(site, name, value string) {
	u, _ := url.Parse(site)
	b.jar.SetCookies(u, []*http.Cookie{{Name: name, Value: value, Path: "/"}})
}

// activationPath is the activation page for a role returning to ret.
func activationPath(role, ret string) string {
	return "/.jit/activate?" + url.Values{"role": {role}, "return": {ret}}.Encode()
}

// activationForm opens the activation page and returns the form's fields as the page
// fills them in (hidden inputs, selected duration, …).
func (b *browser) activationForm(site, role, ret string) url.Values {
	b.t.Helper()
	r := b.get(site + activationPath(role, ret))
	if r.StatusCode != http.StatusOK {
		b.t.Fatalf("GET the activation page for %s as %s: %s", role, b.user, r)
	}
	f := formFields(b.t, r.Body, "/.jit/activate")
	if f.Get("csrf") == "" {
		b.t.Fatalf("the activation page has no csrf value: %s", r)
	}
	return f
}

// activate fills in the activation form: justification, the code, and any overrides
// (a field set to "" in overrides is removed), then posts it.
func (b *browser) activate(site, role, ret, code string, overrides url.Values, opts ...reqOption) *response {
	b.t.Helper()
	f := b.activationForm(site, role, ret)
	f.Set("justification", "integration test: checking the console")
	f.Set("code", code)
	for k, vs := range overrides {
		if len(vs) == 1 && vs[0] == "" {
			f.Del(k)
		} else {
			f[k] = vs
		}
	}
	return b.postForm(site+"/.jit/activate", f, opts...)
}

// mustActivate activates and fails the test unless it worked; it returns the token.
func (b *browser) mustActivate(site, role, ret string, u *totpUser, overrides url.Values) string {
	b.t.Helper()
	r := b.activate(site, role, ret, u.next(b.t), overrides)
	if r.StatusCode != http.StatusSeeOther {
		b.t.Fatalf("activating %s for %s: want 303, got %s", role, b.user, r)
	}
	c := setCookie(r, cookieName)
	if c == nil || c.Value == "" {
		b.t.Fatalf("activating %s for %s: no %s cookie set: %s", role, b.user, cookieName, r)
	}
	return c.Value
}

// setCookie returns the named cookie the response sets, or nil.
func setCookie(r *response, name string) *http.Cookie {
	for _, c := range r.Cookies() {
		if c.Name == name {
			return c
		}
	}
	return nil
}

// formFields returns the input fields of the form whose action is action (all forms
// if action is ""): hidden and text inputs with their values, textareas, and selects
// with their selected option.
func formFields(t *testing.T, page, action string) url.Values {
	t.Helper()
	doc, err := html.Parse(strings.NewReader(page))
	if err != nil {
		t.Fatalf("parsing the page: %v", err)
	}
	out := url.Values{}
	var walk func(n *html.Node, inForm bool)
	walk = func(n *html.Node, inForm bool) {
		if n.Type == html.ElementNode {
			switch n.Data {
			case "form":
				inForm = action == "" || attr(n, "action") == action
			case "input":
				if inForm && attr(n, "name") != "" {
					out.Add(attr(n, "name"), attr(n, "value"))
				}
			case "textarea":
				if inForm && attr(n, "name") != "" {
					out.Add(attr(n, "name"), textOf(n))
				}
			case "select":
				if inForm && attr(n, "name") != "" {
					var selected, first string
					var haveFirst bool
					for c := n.FirstChild; c != nil; c = c.NextSibling {
						if c.Type == html.ElementNode && c.Data == "option" {
							v := attr(c, "value")
							if !haveFirst {
								first, haveFirst = v, true
							}
							if hasAttr(c, "selected") {
								selected = v
							}
						}
					}
					if selected == "" {
						selected = first
					}
					out.Add(attr(n, "name"), selected)
				}
			}
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c, inForm)
		}
	}
	walk(doc, false)
	return out
}

func attr(n *html.Node, name string) string {
	for _, a := range n.Attr {
		if a.Key == name {
			return a.Val
		}
	}
	return ""
}

func hasAttr(n *html.Node, name string) bool {
	for _, a := range n.Attr {
		if a.Key == name {
			return true
		}
	}
	return false
}

func textOf(n *html.Node) string {
	var sb strings.Builder
	for c := n.FirstChild; c != nil; c = c.NextSibling {
		if c.Type == html.TextNode {
			sb.WriteString(c.Data)
		}
	}
	return sb.String()
}
