package integration

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// Class 10, refusals: a refusal is cheap, but each one writes an audit event. What a
// client sends must not make that event large, and a client whose requests keep
// being refused must be slowed down, not allowed to write the audit log as fast as
// it can send forms (issue 12, finding 4).

// maxAuditField is the most characters an audit field keeps (audit.MaxFieldRunes).
const maxAuditField = 1024

// The default refusal limit: a burst of refusalBurst, then one every refusalRefill.
const (
	refusalBurst  = 50
	refusalRefill = 6 * time.Second
)

// wantCutField checks that an event carries field cut from whole: a prefix of at most
// maxAuditField characters, plus field_len (bytes) and field_sha256 of the whole.
func wantCutField(t *testing.T, ev event, field, whole string) {
	t.Helper()
	kept := ev.str(field)
	if n := utf8.RuneCountInString(kept); n == 0 || n > maxAuditField || !strings.HasPrefix(whole, kept) {
		t.Errorf("%s %q: %s keeps %d characters, want a prefix of the %d sent, at most %d", ev.str("event"), ev.str("reason"), field, n, len(whole), maxAuditField)
	}
	if got := ev.str(field + "_len"); got != strconv.Itoa(len(whole)) {
		t.Errorf("%s: %s_len %q, want %d", ev.str("event"), field, got, len(whole))
	}
	sum := sha256.Sum256([]byte(whole))
	if got := ev.str(field + "_sha256"); got != hex.EncodeToString(sum[:]) {
		t.Errorf("%s: %s_sha256 %q, want the SHA-256 of the value sent", ev.str("event"), field, got)
	}
}

func auditLogSize(t *testing.T, e *env) int64 {
	t.Helper()
	fi, err := os.Stat(e.data.AuditLog)
	if os.IsNotExist(err) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

func TestSecurityClass10BoundedRefusalsCutWhatClientsSend(t *testing.T) {
	e := newEnv(t, envOptions{})
	site := e.site(0)

	t.Run("a 15,000-character justification", func(t *testing.T) {
		just := strings.Repeat("J", 15000)
		r := e.browser("alice").activate(site, roleAdmin, "/", "000000", url.Values{"justification": {just}})
		wantStatus(t, r, http.StatusBadRequest, "an activation with a 15,000-character justification")
		ev := e.waitEvent(match{"event": "activation_failed", "user": "alice", "reason": "justification_too_long"})
		wantCutField(t, ev, "justification", just)
		if line := len(ev.String()); line > 4<<10 {
			t.Errorf("the activation_failed event is %d bytes long", line)
		}
	})

	t.Run("an extension of a 15,000-character session id", func(t *testing.T) {
		b := e.browser("bob")
		sid := strings.Repeat("S", 15000)
		r := b.postForm(site+"/.jit/extend", url.Values{
			"session": {sid}, "duration": {"30m"}, "justification": {"integration test: longer migration"},
			"code": {"000000"}, "csrf": {b.activationForm(site, roleAdmin, "/").Get("csrf")},
		})
		if r.StatusCode < 400 || r.StatusCode >= 500 {
			t.Errorf("an extension of a session that does not exist: want a 4xx, got %s", r)
		}
		ev := e.waitEvent(match{"event": "extension_failed", "user": "bob"})
		wantCutField(t, ev, "session_id", sid)
	})

	// The cut events still chain: the log verifies.
	if code, out := jitCLI(t, "audit", "verify", e.data.AuditLog); code != 0 {
		t.Fatalf("caddy jit audit verify: exit %d\n%s", code, out)
	}
}

func TestSecurityClass10BoundedRefusalsFloodIsLimited(t *testing.T) {
	e := newEnv(t, envOptions{})
	site := e.site(0)
	alice := e.enroll("alice")
	b := e.browser("alice")
	form := b.activationForm(site, roleAdmin, adminURI)
	form.Set("justification", strings.Repeat("J", 15000))
	form.Set("code", "000000")
	before := auditLogSize(t, e)

	refused, limited := 0, 0
	var lastLimited *response
	// send posts a bad activation and counts the answer.
	send := func(what string) *response {
		t.Helper()
		r := b.postForm(site+"/.jit/activate", form)
		switch r.StatusCode {
		case http.StatusBadRequest:
			refused++
		case http.StatusTooManyRequests:
			limited++
			lastLimited = r
		default:
			t.Fatalf("%s: want 400 or 429, got %s", what, r)
		}
		return r
	}
	const flood = 200
	start := time.Now()
	firstLimited := -1
	for i := range flood {
		if send("a bad activation of the flood").StatusCode == http.StatusTooManyRequests && firstLimited < 0 {
			firstLimited = i
		}
	}
	took := time.Since(start)
	t.Logf("%d bad activations in %s: %d refused, %d answered 429 (the first at #%d)", flood, took.Round(time.Millisecond), refused, limited, firstLimited)
	// A burst of refusals, then one every refill.
	if firstLimited < 0 || firstLimited > refusalBurst {
		t.Fatalf("the first 429 came at request #%d of %d, want it right after a burst of %d", firstLimited, flood, refusalBurst)
	}
	if most := refusalBurst + int(took/refusalRefill) + 1; refused > most {
		t.Errorf("%d of %d bad activations were handled in %s, want at most %d", refused, flood, took.Round(time.Millisecond), most)
	}

	// The limit holds across a reload, and stops even a genuine activation.
	for range 3 {
		if send("a bad activation before the reload").StatusCode == http.StatusTooManyRequests {
			break
		}
	}
	e.reload()
	code := alice.next(t)
	good := b.activationForm(site, roleAdmin, adminURI)
	good.Set("justification", "integration test: checking the console")
	good.Set("code", code)
	r := b.postForm(site+"/.jit/activate", good)
	wantStatus(t, r, http.StatusTooManyRequests, "a genuine activation while limited, after a reload")
	if ss := e.sessions("?user=alice"); len(ss) != 0 {
		t.Fatalf("a limited activation started a session: %+v", ss)
	}

	retry, err := strconv.Atoi(lastLimited.Header.Get("Retry-After"))
	if err != nil || retry < 1 || retry > int(refusalRefill/time.Second) {
		t.Errorf("429 with Retry-After %q, want 1 to %s", lastLimited.Header.Get("Retry-After"), refusalRefill)
	}
	if !strings.Contains(lastLimited.Body, "Try again at") {
		t.Errorf("the 429 page does not say when to try again: %s", lastLimited)
	}
	api := b.postForm(site+"/.jit/activate", form, withHeader("Accept", "application/json"))
	var answer struct {
		Error      string `json:"error"`
		RetryAfter int    `json:"retry_after"`
		RetryAt    string `json:"retry_at"`
	}
	if api.StatusCode == http.StatusBadRequest {
		refused++ // a refill came due
	} else if api.StatusCode != http.StatusTooManyRequests || json.Unmarshal([]byte(api.Body), &answer) != nil ||
		answer.Error != "too_many_refusals" || answer.RetryAfter < 1 || answer.RetryAt == "" {
		t.Errorf("an API client while limited: want 429 with JSON saying when to retry, got %s", api)
	}

	// One audit event for the whole run, and none for the limited requests.
	runs := e.events(match{"event": "refusals_limited", "user": "alice"})
	if len(runs) != 1 {
		t.Errorf("%d refusals_limited events for one flood, want exactly 1", len(runs))
	} else if n, _ := strconv.Atoi(runs[0].str("count")); n < refusalBurst || runs[0].str("until") == "" {
		t.Errorf("refusals_limited event: %s; want the count of refusals (≥ %d) and until", runs[0], refusalBurst)
	}
	if n := len(e.events(match{"event": "activation_failed", "user": "alice"})); n != refused {
		t.Errorf("%d activation_failed events for %d refusals handled: the limited requests did work", n, refused)
	}
	// Each refusal handled writes one event of bounded size; the limited ones none.
	if grew, most := auditLogSize(t, e)-before, int64(refused+1)*(2<<10); grew > most {
		t.Errorf("the audit log grew by %d bytes for %d bad activations (%d handled), want at most %d", grew, flood, refused, most)
	}
	if got, ok := metricValue(t, e.metrics(), "caddy_jit_refusals_limited_total"); !ok || got < float64(limited) {
		t.Errorf("caddy_jit_refusals_limited_total = %v (present %v), want ≥ %d", got, ok, limited)
	}

	// The limit is alice's alone.
	if r := e.browser("bob").activate(site, roleAdmin, "/", "000000", nil); r.StatusCode == http.StatusTooManyRequests {
		t.Errorf("bob was limited by alice's refusals: %s", r)
	}

	// Once the wait is over, the genuine activation works.
	r = b.postForm(site+"/.jit/activate", good)
	if r.StatusCode == http.StatusTooManyRequests {
		wait, _ := strconv.Atoi(r.Header.Get("Retry-After"))
		time.Sleep(time.Duration(wait)*time.Second + 200*time.Millisecond)
		r = b.postForm(site+"/.jit/activate", good)
	}
	wantStatus(t, r, http.StatusSeeOther, "the genuine activation after Retry-After")
	if len(e.events(match{"event": "refusals_limited", "user": "alice"})) != 1 {
		t.Error("the reload or the wait wrote another refusals_limited event")
	}
}

// A page elsewhere cannot spend a user's allowance: browsers send basic_auth
// credentials along with a cross-site form post, which checkPost refuses without it
// counting. Deactivating, which only lowers privilege, is never limited.
func TestSecurityClass10CrossSitePostsDoNotSpendTheAllowance(t *testing.T) {
	e := newEnv(t, envOptions{JitOptions: "\t\trefusals {\n\t\t\tburst 3\n\t\t\trefill 1h\n\t\t}"})
	site := e.site(0)
	alice := e.enroll("alice")
	b := e.browser("alice")
	form := b.activationForm(site, roleAdmin, adminURI)
	form.Set("justification", "a form sent from a page elsewhere")
	for i := range 10 {
		r := b.postForm(site+"/.jit/activate", form, withHeader("Sec-Fetch-Site", "cross-site"), withHeader("Origin", "https://elsewhere.example"))
		if r.StatusCode != http.StatusForbidden {
			t.Fatalf("cross-site post %d: want 403, got %s", i+1, r)
		}
	}
	token := b.mustActivate(site, roleAdmin, adminURI, alice, nil)

	// Spend the allowance with same-site refusals: deactivation still works.
	bad := b.activationForm(site, roleAdmin, adminURI)
	bad.Set("justification", "x")
	for range 4 {
		b.postForm(site+"/.jit/activate", bad)
	}
	if r := b.postForm(site+"/.jit/activate", bad); r.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("after the burst: want 429, got %s", r)
	}
	deactivate := forms(t, b.get(site+"/.jit/").Body, "/.jit/deactivate")
	if len(deactivate) != 1 || deactivate[0].Get("session") != sessionID(t, token) {
		t.Fatalf("the status page offers %d deactivate forms, want 1 for the session", len(deactivate))
	}
	if r := b.postForm(site+"/.jit/deactivate", deactivate[0]); !wantStatus(t, r, http.StatusSeeOther, "deactivating while limited") {
		t.FailNow()
	}
	e.waitEvent(match{"event": "deactivated", "session_id": sessionID(t, token)})
}
