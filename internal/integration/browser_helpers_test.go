package integration

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
)

// Helpers of the real-browser tests (browser_test.go): a headless Chromium driven with
// chromedp, one browser process per test and one browser context (own cookies, own
// basic-auth user) per person in it. On failure every tab's screenshot and HTML are
// saved (see chromeArtifactsDir).

// chromeStepTimeout bounds one step (a navigation, a click and the page it loads, a
// query); the whole test is bounded by newChrome's timeout.
const chromeStepTimeout = 15 * time.Second

// chromeBinary returns the Chromium to drive: $JIT_CHROMIUM, else /usr/bin/chromium,
// else the first of the usual names on $PATH. The test is skipped only when there is none.
func chromeBinary(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("JIT_CHROMIUM"); p != "" {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("JIT_CHROMIUM=%s: %v", p, err)
		}
		return p
	}
	if _, err := os.Stat("/usr/bin/chromium"); err == nil {
		return "/usr/bin/chromium"
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "headless_shell"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Skip("no Chromium: /usr/bin/chromium is missing and none of chromium, chromium-browser, google-chrome, headless_shell is on $PATH " +
		"(apt-get install chromium, or set JIT_CHROMIUM); .ci/run installs it")
	return ""
}

// chrome is one headless Chromium process of a test.
type chrome struct {
	t      *testing.T
	root   context.Context // the browser's first context; tabs are made from it
	tabs   []*chromeTab
	output *syncBuffer // Chromium's stdout and stderr
	// closers end the tabs, then the browser, in this order, after the artifacts.
	closers []func()
}

// chromeTab is one tab in a browser context of its own: its own cookies, and basic auth
// as its user on every request it makes.
type chromeTab struct {
	t    *testing.T
	ctx  context.Context
	name string // for messages and artifact files, e.g. "alice"
	user string
	site string // base URL, e.g. http://localhost:PORT
}

// newChrome starts a headless Chromium for the test, stopped when the test ends or
// after timeout, whichever comes first. On failure, the cleanup saves each tab's
// screenshot and HTML and logs where.
func newChrome(t *testing.T, timeout time.Duration) *chrome {
	t.Helper()
	bin := chromeBinary(t)
	c := &chrome{t: t, output: &syncBuffer{}}
	deadline, cancelDeadline := context.WithTimeout(context.Background(), timeout)
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(bin),
		chromedp.NoSandbox, // CI runs as root, where Chromium's sandbox refuses to start
		chromedp.WindowSize(1200, 800),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("lang", "en-US"),
		chromedp.Flag("accept-lang", "en-US"),
		chromedp.CombinedOutput(c.output),
		chromedp.Env("TZ=UTC"),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(deadline, opts...)
	root, cancelRoot := chromedp.NewContext(allocCtx)
	c.closers = append(c.closers, func() { _ = chromedp.Cancel(root); cancelRoot() }, cancelAlloc, cancelDeadline)
	// The artifacts are saved while every tab and the browser still live.
	t.Cleanup(func() {
		if t.Failed() {
			c.saveArtifacts()
		}
		for _, end := range c.closers {
			end()
		}
	})
	start := time.Now()
	if err := chromedp.Do(root); err != nil { // starts the browser, with no step timeout (it would stop it)
		t.Fatalf("starting %s: %v\nChromium's output:\n%s", bin, err, c.output.String())
	}
	c.root = root
	t.Logf("started %s in %s", bin, time.Since(start).Round(time.Millisecond))
	return c
}

// tab opens a tab in a new browser context that authenticates to the site as user
// with basic auth (the Authorization header on every request of the tab).
func (c *chrome) tab(name, user, site string) *chromeTab {
	t := c.t
	t.Helper()
	ctx, cancel := chromedp.NewContext(c.root, chromedp.WithNewBrowserContext())
	c.closers = append([]func(){cancel}, c.closers...)
	tb := &chromeTab{t: t, ctx: ctx, name: name, user: user, site: site}
	if err := chromedp.Do(ctx); err != nil { // opens the tab, with no step timeout
		t.Fatalf("opening %s's tab: %v", name, err)
	}
	c.tabs = append(c.tabs, tb)
	auth := "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+password(user)))
	sctx, scancel := tb.step()
	defer scancel()
	if _, err := chromedp.Call(sctx, network.SetExtraHTTPHeaders, network.SetExtraHTTPHeadersParams{
		Headers: network.Headers{"Authorization": auth},
	}); err != nil {
		t.Fatalf("%s's tab: setting the Authorization header: %v", name, err)
	}
	return tb
}

// step is a context for one step of the tab, bounded by chromeStepTimeout.
func (b *chromeTab) step() (context.Context, context.CancelFunc) {
	return context.WithTimeout(b.ctx, chromeStepTimeout)
}

// open navigates to the site's path and waits until the page has loaded; it returns the
// HTTP status of the document it ended on (after redirects).
func (b *chromeTab) open(path string) int64 {
	b.t.Helper()
	ctx, cancel := b.step()
	defer cancel()
	resp, err := chromedp.Run(ctx, chromedp.NavigateResponse(b.site+path))
	if err != nil {
		b.t.Fatalf("%s opening %s: %v", b.name, path, err)
	}
	if resp == nil {
		return 0
	}
	return resp.Status
}

// reload reloads the page, as the browser's reload button does.
func (b *chromeTab) reload() {
	b.t.Helper()
	ctx, cancel := b.step()
	defer cancel()
	if err := chromedp.Do(ctx, chromedp.Reload()); err != nil {
		b.t.Fatalf("%s reloading the page: %v", b.name, err)
	}
}

// chromeEval evaluates a JavaScript expression in the tab's page and decodes its JSON value into T.
func chromeEval[T any](b *chromeTab, what, expr string) T {
	b.t.Helper()
	ctx, cancel := b.step()
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		b.t.Fatalf("%s: %s: %v", b.name, what, err)
	}
	return v
}

// pageState is what the test reads of the page the tab shows.
type pageState struct {
	URL   string `json:"url"`
	Ready string `json:"ready"`
	Title string `json:"title"`
	// Text is the page's text as a reader sees it (innerText), white space collapsed.
	Text string `json:"text"`
	// Pre is the text of the first <pre>: how Chromium shows a JSON answer.
	Pre string `json:"pre"`
}

const pageStateJS = `(() => ({
	url: location.href,
	ready: document.readyState,
	title: document.title,
	text: (document.body ? document.body.innerText : '').replace(/\s+/g, ' ').trim(),
	pre: (document.querySelector('pre') || {textContent: ''}).textContent,
}))()`

func (b *chromeTab) state() pageState {
	b.t.Helper()
	return chromeEval[pageState](b, "reading the page", pageStateJS)
}

// tryState reads the page without failing the test: the page may be between two
// documents (a meta refresh under way).
func (b *chromeTab) tryState() (pageState, error) {
	ctx, cancel := b.step()
	defer cancel()
	return chromedp.Run(ctx, chromedp.Evaluate[pageState](pageStateJS))
}

// waitFor polls the page until ok says yes or within is over; it returns the last
// state read and whether ok said yes.
func (b *chromeTab) waitFor(within time.Duration, ok func(pageState) bool) (pageState, bool) {
	b.t.Helper()
	deadline := time.Now().Add(within)
	var last pageState
	for {
		if s, err := b.tryState(); err == nil {
			last = s
			if s.Ready == "complete" && ok(s) {
				return s, true
			}
		}
		if time.Now().After(deadline) {
			return last, false
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// jsString is s as a JavaScript string literal.
func jsString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// fieldByLabel finds the form control that the page's <label> starting with label
// names through its for attribute: the way a screen reader or a click on the label
// reaches it. The test fails unless exactly one label matches and names a control.
func (b *chromeTab) fieldByLabel(label string) chromedp.JSPath {
	b.t.Helper()
	type found struct {
		ID    string `json:"id"`
		Error string `json:"error"`
	}
	r := chromeEval[found](b, "finding the field labelled "+label, `(() => {
	const want = `+jsString(label)+`;
	const norm = s => s.replace(/\s+/g, ' ').trim();
	const hits = [...document.querySelectorAll('label')].filter(l => norm(l.textContent).startsWith(want));
	if (hits.length !== 1) return {error: hits.length + ' labels start with "' + want + '"; the labels are: ' +
		[...document.querySelectorAll('label')].map(l => JSON.stringify(norm(l.textContent))).join(', ')};
	const id = hits[0].getAttribute('for');
	if (!id) return {error: 'the label "' + want + '" has no for attribute'};
	const el = document.getElementById(id);
	if (!el) return {error: 'the label "' + want + '" is for "' + id + '", which no element has as id'};
	if (!['INPUT', 'SELECT', 'TEXTAREA'].includes(el.tagName)) return {error: 'the label "' + want + '" names a ' + el.tagName};
	return {id: id};
})()`)
	if r.Error != "" || r.ID == "" {
		b.t.Fatalf("%s on %s: %s", b.name, b.state().URL, r.Error)
	}
	return chromedp.JSPath("document.getElementById(" + jsString(r.ID) + ")")
}

// typeInto types text into the field labelled label, key by key, and checks that the
// field then holds it (after what it held before).
func (b *chromeTab) typeInto(label, text string) {
	b.t.Helper()
	sel := b.fieldByLabel(label)
	ctx, cancel := b.step()
	defer cancel()
	before, err := chromedp.Run(ctx, chromedp.Value(sel))
	if err != nil {
		b.t.Fatalf("%s reading the field %q: %v", b.name, label, err)
	}
	if err := chromedp.Do(ctx, chromedp.SendKeys(sel, text)); err != nil {
		b.t.Fatalf("%s typing into the field %q: %v", b.name, label, err)
	}
	after, err := chromedp.Run(ctx, chromedp.Value(sel))
	if err != nil {
		b.t.Fatalf("%s reading the field %q: %v", b.name, label, err)
	}
	if after != before+text {
		b.t.Fatalf("%s typed %q into the field %q, which held %q: it now holds %q", b.name, text, label, before, after)
	}
}

// value is what the field labelled label holds.
func (b *chromeTab) value(label string) string {
	b.t.Helper()
	sel := b.fieldByLabel(label)
	ctx, cancel := b.step()
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Value(sel))
	if err != nil {
		b.t.Fatalf("%s reading the field %q: %v", b.name, label, err)
	}
	return v
}

// buttonJS selects the buttons whose text is exactly text (white space collapsed).
func buttonJS(text string) string {
	return `[...document.querySelectorAll('button')].filter(b => b.textContent.replace(/\s+/g, ' ').trim() === ` + jsString(text) + `)`
}

// click clicks the only button reading text, as a mouse does, and waits for the page
// it loads; it returns the HTTP status of the document it ended on (after redirects).
func (b *chromeTab) click(text string) int64 {
	b.t.Helper()
	if n := chromeEval[int](b, "counting buttons", buttonJS(text)+`.length`); n != 1 {
		buttons := chromeEval[[]string](b, "listing buttons", `[...document.querySelectorAll('button')].map(b => b.textContent.replace(/\s+/g, ' ').trim())`)
		b.t.Fatalf("%s on %s: %d buttons read %q, want 1; the buttons are %q", b.name, b.state().URL, n, text, buttons)
	}
	// A form the browser refuses to send (a required field left empty, a pattern not
	// matched) would never navigate: say which fields it finds invalid, at once.
	invalid := chromeEval[[]string](b, "checking the form", `(() => {
	const f = `+buttonJS(text)+`[0].form;
	return f ? [...f.elements].filter(e => !e.validity.valid).map(e => (e.id || e.name) + ': ' + e.validationMessage) : [];
})()`)
	if len(invalid) > 0 {
		b.t.Fatalf("%s clicking %q: the browser will not send the form, it finds fields invalid: %q", b.name, text, invalid)
	}
	ctx, cancel := b.step()
	defer cancel()
	resp, err := chromedp.RunResponse(ctx, chromedp.Click(chromedp.JSPath(buttonJS(text)+`[0]`)))
	if err != nil {
		b.t.Fatalf("%s clicking %q: %v", b.name, text, err)
	}
	if resp == nil {
		return 0
	}
	return resp.Status
}

// clickLink clicks the link whose href attribute is href (within the element sel, a
// CSS selector) without waiting for a page: for in-page links.
func (b *chromeTab) clickLink(sel, href string) {
	b.t.Helper()
	ctx, cancel := b.step()
	defer cancel()
	js := `document.querySelector(` + jsString(sel+` a[href="`+href+`"]`) + `)`
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.JSPath(js))); err != nil {
		b.t.Fatalf("%s clicking the link to %s in %s: %v", b.name, href, sel, err)
	}
}

// sessionCookie returns the browser's session cookie for the site, or nil.
func (b *chromeTab) sessionCookie() *network.Cookie {
	b.t.Helper()
	return b.cookieNamed(cookieName)
}

// cookieNamed returns one of the browser's cookies for the site, or nil.
func (b *chromeTab) cookieNamed(name string) *network.Cookie {
	b.t.Helper()
	ctx, cancel := b.step()
	defer cancel()
	res, err := chromedp.Call(ctx, network.GetCookies, network.GetCookiesParams{URLs: []string{b.site + "/"}})
	if err != nil {
		b.t.Fatalf("%s reading the browser's cookies: %v", b.name, err)
	}
	for _, c := range res.Cookies {
		if c.Name == name {
			return c
		}
	}
	return nil
}

// putSessionCookie puts a session cookie with value into the browser, with no expiry:
// to show that the server, not the browser's cookie jar, refuses a token.
func (b *chromeTab) putSessionCookie(value string) {
	b.t.Helper()
	ctx, cancel := b.step()
	defer cancel()
	yes := true
	if _, err := chromedp.Call(ctx, network.SetCookie, network.SetCookieParams{
		Name: cookieName, Value: value, URL: b.site + "/", Path: "/", HTTPOnly: &yes, SameSite: network.CookieSameSiteLax,
	}); err != nil {
		b.t.Fatalf("%s putting a %s cookie into the browser: %v", b.name, cookieName, err)
	}
}

// viewport sets the tab's viewport: a desktop window, or a phone (mobile: the page's
// meta viewport applies, touch, device pixel ratio scale).
func (b *chromeTab) viewport(width, height int64, mobile bool, scale float64) {
	b.t.Helper()
	ctx, cancel := b.step()
	defer cancel()
	opts := []chromedp.EmulateViewportOption{chromedp.EmulateScale(scale)}
	if mobile {
		opts = append(opts, chromedp.EmulateMobile, chromedp.EmulateTouch, chromedp.EmulatePortrait)
	}
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(width, height, opts...)); err != nil {
		b.t.Fatalf("%s setting the viewport to %dx%d: %v", b.name, width, height, err)
	}
}

// screenshot is a PNG of the whole page, beyond the viewport.
func (b *chromeTab) screenshot() ([]byte, error) {
	ctx, cancel := b.step()
	defer cancel()
	return chromedp.Run(ctx, chromedp.FullScreenshot(100))
}

// wantActivationPage checks that the tab shows the activation page of role, returning
// to ret, at the URL the gate redirects to.
func (b *chromeTab) wantActivationPage(role, ret, what string) {
	b.t.Helper()
	s := b.state()
	rel, ok := strings.CutPrefix(s.URL, b.site)
	if !ok {
		b.t.Fatalf("%s: the browser is on %s, want a page of %s", what, s.URL, b.site)
	}
	wantActivateURL(b.t, rel, role, ret)
	if want := "Activate " + role; !strings.HasPrefix(s.Title, want) {
		b.t.Errorf("%s: the page's title is %q, want it to start with %q (page text: %s)", what, s.Title, want, s.Text)
	}
	if got := b.hiddenValue("return"); got != ret {
		b.t.Errorf("%s: the form's return field is %q, want %q", what, got, ret)
	}
}

// hiddenValue is the value of the activation form's hidden input name.
func (b *chromeTab) hiddenValue(name string) string {
	b.t.Helper()
	return chromeEval[string](b, "reading the hidden field "+name,
		`(document.querySelector('form input[type=hidden][name=`+jsString(name)+`]') || {value: ''}).value`)
}

// upstreamEcho decodes the upstream's JSON echo that the tab shows, failing the test
// if the page is something else.
func (b *chromeTab) upstreamEcho(s pageState, what string) upstreamRequest {
	b.t.Helper()
	var got upstreamRequest
	raw := s.Pre
	if raw == "" {
		raw = s.Text
	}
	if err := json.Unmarshal([]byte(raw), &got); err != nil {
		b.t.Fatalf("%s: the browser (on %s) does not show the upstream's JSON answer: %v; the page says: %s", what, s.URL, err, s.Text)
	}
	return got
}
