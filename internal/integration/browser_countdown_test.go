package integration

import (
	"regexp"
	"testing"
	"time"
)

// The time left on a session counts down in the browser (the page script), and the
// page says the same without the script.
func TestBrowserCountdown(t *testing.T) {
	e := newEnv(t, envOptions{})
	site := e.site(0)
	alice := e.enroll("alice")
	c := newChrome(t, 60*time.Second)
	a := c.tab("alice", "alice", site)

	a.open(browserURI)
	a.typeInto("Justification", browserJustification)
	a.typeInto("Authenticator code", alice.next(t))
	a.click("Activate " + roleAdmin)
	a.open("/.jit/")

	left := regexp.MustCompile(`\((\d+m \d\ds left)\)`)
	first := left.FindStringSubmatch(a.state().Text)
	if first == nil {
		t.Fatalf("the status page shows no countdown such as (14m 59s left): %s", a.state().Text)
	}
	s, ok := a.waitFor(5*time.Second, func(s pageState) bool {
		m := left.FindStringSubmatch(s.Text)
		return m != nil && m[1] != first[1]
	})
	if !ok {
		t.Fatalf("the countdown stayed at %q for 5 s: %s", first[1], s.Text)
	}

	// Without JavaScript the page still says how long is left, in minutes.
	r := e.browser("alice").get(site + "/.jit/")
	if !regexp.MustCompile(`\(\d+m left\)|\(less than a minute left\)`).MatchString(pageText(t, r.Body)) {
		t.Errorf("the page as served (no script run) does not say the time left: %s", pageText(t, r.Body))
	}
}
