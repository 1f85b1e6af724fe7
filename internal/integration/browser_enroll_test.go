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
// activate with the next code.
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
	secret := strings.ReplaceAll(chromeEval[string](a, "the key on the page", `document.getElementById('secret').textContent`), " ", "")
	if len(secret) != 32 {
		t.Fatalf("the key on the page is %q, want 32 base32 characters", secret)
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
