package integration

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Enrollment by link, in a browser: the user opens the link signed in as themselves,
// sees the QR code, confirms with a code from the key on the page, and can then
// activate with the next code. Opening the link again shows a new key, and only the
// latest one confirms.
func TestBrowserEnrollmentByLink(t *testing.T) {
	e := newEnv(t, envOptions{})
	site := e.site(0)
	link := e.enrollLink("alice", "")
	c := newChrome(t, 60*time.Second)
	a := c.tab("alice", "alice", site)

	a.open(link.LinkPath)
	s := a.state()
	if !strings.Contains(s.Text, "Set up your authenticator") {
		t.Fatalf("the enrollment link shows: %s", s.Text)
	}
	// The QR code is an image the browser decoded (not a broken one).
	if w := chromeEval[int](a, "the QR code's natural width", `document.querySelector('img').naturalWidth`); w < 100 {
		t.Fatalf("the QR code image has a natural width of %d px: not rendered", w)
	}
	if dir := os.Getenv("JIT_SCREENSHOTS"); dir != "" {
		png, err := a.screenshot()
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "enroll.png"), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	first := strings.ReplaceAll(chromeEval[string](a, "the key on the page", `document.getElementById('secret').textContent`), " ", "")
	// The page's key is bound to this browser by an HttpOnly cookie, out of reach of
	// the page's scripts.
	if js := chromeEval[string](a, "the page's cookies", `document.cookie`); strings.Contains(js, "jit_enroll") {
		t.Errorf("the binding cookie is readable by scripts: %q", js)
	}
	a.open(link.LinkPath)
	secret := strings.ReplaceAll(chromeEval[string](a, "the key on the page opened again", `document.getElementById('secret').textContent`), " ", "")
	if len(secret) != 32 || secret == first {
		t.Fatalf("the key on the page opened again is %q (the first was %q): want a new one of 32 base32 characters", secret, first)
	}
	alice := &totpUser{name: "alice", secret: secret}
	a.typeInto("Authenticator code", alice.next(t))
	a.click("Confirm")
	if s := a.state(); !strings.Contains(s.Text, "Your authenticator is set up") {
		t.Fatalf("after confirming, the page says: %s", s.Text)
	}

	// The link is spent.
	a.open(link.LinkPath)
	if s := a.state(); !strings.Contains(strings.ToLower(s.Text), "used") {
		t.Errorf("the link opened again says: %s", s.Text)
	}
	// And the new key activates, with the next code.
	a.open(browserURI)
	a.typeInto("Justification", browserJustification)
	a.typeInto("Authenticator code", alice.next(t))
	a.click("Activate " + roleAdmin)
	if s := a.state(); s.URL != site+browserURI {
		t.Fatalf("activating with the enrolled key: the browser is on %s: %s", s.URL, s.Text)
	}
}
