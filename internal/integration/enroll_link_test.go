package integration

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"image/png"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/html"
)

// enrollLinkAnswer is the admin API's answer to POST /jit/enrollments/{user}?link=1.
type enrollLinkAnswer struct {
	User     string `json:"user"`
	LinkPath string `json:"link_path"`
	Expires  string `json:"expires"`
}

// enrollLink asks the admin API for an enrollment link (query: e.g. "&ttl=2s").
func (e *env) enrollLink(user, query string) enrollLinkAnswer {
	e.t.Helper()
	var link enrollLinkAnswer
	e.adminOK(http.MethodPost, "/jit/enrollments/"+url.PathEscape(user)+"?link=1&by=integration"+query, &link)
	if link.User != user || !strings.HasPrefix(link.LinkPath, "/.jit/enroll?token=") {
		e.t.Fatalf("enrollment link for %s: answer %+v", user, link)
	}
	return link
}

// enrollPage is what the enrollment page shows: the QR code image and the secret.
type enrollPage struct {
	imgSrc string
	secret string
	form   url.Values
}

// parseEnrollPage finds the <img> and the secret of an enrollment page.
func parseEnrollPage(t *testing.T, body string) enrollPage {
	t.Helper()
	doc, err := html.Parse(strings.NewReader(body))
	if err != nil {
		t.Fatalf("parsing the enrollment page: %v", err)
	}
	var p enrollPage
	var walk func(n *html.Node)
	walk = func(n *html.Node) {
		if n.Type == html.ElementNode {
			switch {
			case n.Data == "img":
				p.imgSrc = attr(n, "src")
			case n.Data == "code" && attr(n, "id") == "secret":
				p.secret = strings.ReplaceAll(textOf(n), " ", "")
			}
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c)
		}
	}
	walk(doc)
	p.form = formFields(t, body, "/.jit/enroll")
	if p.imgSrc == "" || p.secret == "" || p.form.Get("token") == "" || p.form.Get("csrf") == "" {
		t.Fatalf("the enrollment page lacks the image, the secret, the token or the csrf field: %+v\n%s", p, body)
	}
	return p
}

// checkQRImage decodes the page's inline QR code: a PNG in a data: URL, which zbarimg
// (when installed) reads as the otpauth URI of secret.
func checkQRImage(t *testing.T, src, user, secret string) {
	t.Helper()
	b64, ok := strings.CutPrefix(src, "data:image/png;base64,")
	if !ok {
		t.Fatalf("<img src> is %.60q…, want data:image/png;base64,…", src)
	}
	raw, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		t.Fatalf("the inline image is not base64: %v", err)
	}
	img, err := png.Decode(bytes.NewReader(raw))
	if err != nil || img.Bounds().Dx() < 256 || img.Bounds().Dx() != img.Bounds().Dy() {
		t.Fatalf("the inline image is not a square PNG of at least 256 pixels: %v", err)
	}
	zbarimg, err := exec.LookPath("zbarimg")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("zbarimg not installed: .ci/run installs zbar-tools")
		}
		t.Log("zbarimg not installed: the QR code is not decoded")
		return
	}
	path := filepath.Join(t.TempDir(), "qr.png")
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(zbarimg, "-q", "--raw", path).Output()
	if err != nil {
		t.Fatalf("zbarimg: %v", err)
	}
	u, err := url.Parse(strings.TrimSpace(string(out)))
	if err != nil || u.Scheme != "otpauth" || u.Host != "totp" || u.Query().Get("secret") != secret || !strings.HasSuffix(u.Path, ":"+user) {
		t.Errorf("the QR code reads %q (%v), want the otpauth URI of %s's secret %s", out, err, user, secret)
	}
}

func wantBodySays(t *testing.T, r *response, what string, says ...string) {
	t.Helper()
	for _, s := range says {
		if !strings.Contains(r.Body, s) {
			t.Errorf("%s: the page does not say %q: %s", what, s, r)
		}
	}
}

// clockRE matches a time as the pages write it.
var clockRE = regexp.MustCompile(`\d{4}-\d\d-\d\d \d\d:\d\d UTC`)

// An operator makes a link; only its user can open it; it shows the QR code and the
// secret; a wrong code changes nothing; the right one enrolls, can never activate,
// and spends the link; until then the old authenticator keeps working.
func TestEnrollLinkSelfService(t *testing.T) {
	waitsForTOTPSteps(t)
	e := newEnv(t, envOptions{JitOptions: "\t\tenroll_link_ttl 2h"})
	site := e.site(0)
	alice := e.enroll("alice") // her current authenticator
	ab, bb := e.browser("alice"), e.browser("bob")

	link := e.enrollLink("alice", "")
	token := strings.TrimPrefix(link.LinkPath, "/.jit/enroll?token=")
	if exp, err := time.Parse(time.RFC3339, link.Expires); err != nil || time.Until(exp) < 2*time.Hour-time.Minute || time.Until(exp) > 2*time.Hour {
		t.Errorf("expires %q (%v): want in 2h, the enroll_link_ttl", link.Expires, err)
	}
	e.waitEvent(match{"event": "enroll_link_created", "user": "alice", "expires": link.Expires})

	// Someone else's link: 403, and nothing of it shown.
	r := bb.get(site + link.LinkPath)
	wantStatus(t, r, http.StatusForbidden, "bob opening alice's link")
	wantBodySays(t, r, "bob opening alice's link", "another user")
	if strings.Contains(r.Body, "<img") || strings.Contains(r.Body, "secret") {
		t.Errorf("bob's page shows something of the link: %s", r)
	}
	e.waitEvent(match{"event": "enroll_link_failed", "user": "bob", "reason": "enroll_link_not_yours"})

	// Alice: the QR code inline, the secret in text, a form.
	r = ab.get(site + link.LinkPath)
	if !wantStatus(t, r, http.StatusOK, "alice opening her link") {
		t.FailNow()
	}
	if csp := r.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "img-src 'self' data:") || strings.Contains(csp, "unsafe-inline") {
		t.Errorf("CSP %q", csp)
	}
	if cc := r.Header.Get("Cache-Control"); cc != "no-store" {
		t.Errorf("Cache-Control %q, want no-store", cc)
	}
	page := parseEnrollPage(t, r.Body)
	if page.secret == alice.secret {
		t.Fatal("the link shows the current secret, not a new one")
	}
	if raw, err := base64Std32(page.secret); err != nil || len(raw) != 20 {
		t.Errorf("the secret %q is not 160 bits of base32 (%v)", page.secret, err)
	}
	if page.form.Get("token") != token {
		t.Errorf("the form's token %q is not the link's", page.form.Get("token"))
	}
	if page.form.Get("opening") == "" || !page.form.Has("current_code") {
		t.Errorf("the form lacks the opening or the current code, which alice (enrolled) needs: %v", page.form)
	}
	binding := ""
	if c := setCookie(r, "jit_enroll"); c == nil || !c.HttpOnly || c.SameSite != http.SameSiteLaxMode || c.Path != "/.jit/enroll" || len(c.Value) != 43 {
		t.Errorf("the page binds its key to this browser with no HttpOnly, SameSite=Lax cookie of 43 characters for /.jit/enroll: %+v", c)
	} else {
		binding = c.Value
	}
	checkQRImage(t, page.imgSrc, "alice", page.secret)
	pending := &totpUser{name: "alice", secret: page.secret}

	// Before confirmation the current authenticator works, the new one does not.
	ab.mustActivate(site, roleAdmin, adminURI, alice, nil)
	r = e.browser("alice").activate(site, roleAdmin, adminURI, codeAt(t, pending.secret, currentStep()), nil)
	wantStatus(t, r, http.StatusBadRequest, "activating with the pending secret's code")
	e.waitEvent(match{"event": "activation_failed", "user": "alice", "reason": "totp_invalid"})

	// A wrong code: 400, nothing enrolled; the page asks again without showing the key.
	f := page.form
	f.Set("code", pending.wrong(t))
	f.Set("current_code", alice.next(t))
	r = ab.postForm(site+"/.jit/enroll", f)
	wantStatus(t, r, http.StatusBadRequest, "a wrong confirmation code")
	wantBodySays(t, r, "a wrong confirmation code", "The code is wrong", `id="error-summary"`, "Open the link again", `name="current_code"`)
	if strings.Contains(r.Body, "<img") || strings.Contains(r.Body, page.secret) {
		t.Errorf("the page after a wrong code shows the key again: %s", r)
	}
	e.waitEvent(match{"event": "enroll_link_failed", "user": "alice", "reason": "totp_invalid"})
	if evs := e.events(match{"event": "enrolled", "user": "alice", "via": "link"}); len(evs) != 0 {
		t.Fatalf("a wrong code enrolled alice: %v", evs)
	}
	r = e.browser("alice").activate(site, roleAdmin, adminURI, alice.next(t), nil)
	wantStatus(t, r, http.StatusSeeOther, "the current authenticator after a wrong confirmation")

	// The right codes: set up.
	code := pending.next(t)
	f.Set("code", code)
	f.Set("current_code", alice.next(t))
	r = ab.postForm(site+"/.jit/enroll", f)
	wantStatus(t, r, http.StatusOK, "the right confirmation code")
	wantBodySays(t, r, "the confirmation", "Your authenticator is set up", `href="/.jit/"`)
	e.waitEvent(match{"event": "enrolled", "user": "alice", "by": "enrollment link", "replaced": "true", "via": "link", "authorized_by": "current_code"})

	// That code never activates; the next one does; the old secret is gone.
	r = e.browser("alice").activate(site, roleAdmin, adminURI, code, nil)
	wantStatus(t, r, http.StatusBadRequest, "activating with the confirming code")
	e.waitEvent(match{"event": "activation_failed", "user": "alice", "reason": "totp_replayed"})
	e.browser("alice").mustActivate(site, roleAdmin, adminURI, pending, nil)
	r = e.browser("alice").activate(site, roleAdmin, adminURI, codeAt(t, alice.secret, currentStep()), nil)
	wantStatus(t, r, http.StatusBadRequest, "activating with the replaced secret")

	// The link is spent: 410 saying so and when, for GET and POST.
	r = ab.get(site + link.LinkPath)
	wantStatus(t, r, http.StatusGone, "the link once used")
	wantBodySays(t, r, "the link once used", "already used")
	if !clockRE.MatchString(r.Body) {
		t.Errorf("the used link's page does not say when: %s", r)
	}
	f.Set("code", codeAt(t, pending.secret, currentStep()))
	r = ab.postForm(site+"/.jit/enroll", f)
	wantStatus(t, r, http.StatusGone, "confirming a used link")
	e.waitEvent(match{"event": "enroll_link_failed", "user": "alice", "reason": "enroll_link_used"})

	// An unknown link: 404.
	forged := strings.Repeat("A", 43)
	r = ab.get(site + "/.jit/enroll?token=" + forged)
	wantStatus(t, r, http.StatusNotFound, "an unknown link")

	// Neither the token nor a secret nor the browser's binding reaches a log.
	for name, text := range map[string]string{"the audit log": e.auditRaw(), "Caddy's log": e.logs.String()} {
		for what, s := range map[string]string{"the token": token, "the new secret": page.secret, "the old secret": alice.secret, "the binding": binding} {
			if s == "" {
				continue
			}
			if strings.Contains(text, s) {
				t.Errorf("%s holds %s", name, what)
			}
		}
	}
}

// A link expires: 410 saying when. The CLI prints a link that works.
func TestEnrollLinkExpiresAndCLI(t *testing.T) {
	e := newEnv(t, envOptions{})
	site := e.site(0)
	cb := e.browser("carol")

	short := e.enrollLink("carol", "&ttl=2s")
	wantStatus(t, cb.get(site+short.LinkPath), http.StatusOK, "a fresh link")
	sleepUntil(t, time.Now().Add(3*time.Second), "letting a 2s link expire")
	r := cb.get(site + short.LinkPath)
	wantStatus(t, r, http.StatusGone, "an expired link")
	wantBodySays(t, r, "an expired link", "expired at")
	if !clockRE.MatchString(r.Body) {
		t.Errorf("the expired link's page does not say when: %s", r)
	}
	e.waitEvent(match{"event": "enroll_link_failed", "user": "carol", "reason": "enroll_link_expired"})

	// The admin API refuses what makes no link.
	for _, q := range []string{"?link=1&ttl=soon", "?link=1&ttl=-1h", "?link=1&ttl=31d", "?link=maybe", "?ttl=2h"} {
		if status, body := e.admin(http.MethodPost, "/jit/enrollments/carol"+q); status != http.StatusBadRequest {
			t.Errorf("POST /jit/enrollments/carol%s: %d %s, want 400", q, status, body)
		}
	}

	// caddy jit enroll --link --site prints the full URL; carol enrolls with it.
	code, out := jitCLI(t, "enroll", "carol", "--link", "--site", site, "--address", fmt.Sprintf("localhost:%d", e.data.AdminPort))
	if code != 0 {
		t.Fatalf("caddy jit enroll --link: exit %d\n%s", code, out)
	}
	m := regexp.MustCompile(regexp.QuoteMeta(site) + `/\.jit/enroll\?token=[A-Za-z0-9_-]{43}`).FindString(out)
	if m == "" {
		t.Fatalf("caddy jit enroll --link printed no link to %s:\n%s", site, out)
	}
	if !strings.Contains(out, "valid until") {
		t.Errorf("the CLI does not say until when:\n%s", out)
	}
	r = cb.get(m)
	if !wantStatus(t, r, http.StatusOK, "the CLI's link") {
		t.FailNow()
	}
	page := parseEnrollPage(t, r.Body)
	carol := &totpUser{name: "carol", secret: page.secret}
	page.form.Set("code", carol.next(t))
	r = cb.postForm(site+"/.jit/enroll", page.form)
	wantStatus(t, r, http.StatusOK, "confirming the CLI's link")
	e.waitEvent(match{"event": "enrolled", "user": "carol", "via": "link", "replaced": "false"})
	// Her new authenticator activates the role she is eligible for.
	r = cb.activate(site, roleViewer, "/", carol.next(t), nil)
	wantStatus(t, r, http.StatusSeeOther, "carol activating viewer with her new authenticator")
}
