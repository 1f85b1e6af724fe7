package integration

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddy-jit/caddy-jit/internal/testkit"
)

// Security class 11 for passkeys, their registration and the ceremonies' cost: see
// security_passkey_test.go.

// A passkey is registered only with a current code: a second browser that knows the
// password can begin no registration, and none begun elsewhere can be finished by it
// or by another user; nor by an authenticator that answers for another origin or RP
// ID, or does not verify its user.
func TestSecurityClass11PasskeyRegistration(t *testing.T) {
	waitsForTOTPSteps(t)
	e := newEnv(t, envOptions{JitOptions: passkeySecurityRoles, Sites: []siteSpec{{Auth: true, Jit: "\tjit ops"}}})
	site := e.site(0)
	alice := e.enroll("alice")
	first, second, bb := e.browser("alice"), e.browser("alice"), e.browser("bob")
	key := testkit.NewSoftKey(t, site)

	csrf := first.csrfOf(site)
	code := alice.next(t)
	r, c := first.beginCeremony(site, csrf, "register", "register", code)
	if !wantStatus(t, r, http.StatusOK, "alice beginning a registration") {
		t.FailNow()
	}
	wantOptionTimeout(t, c.Options, 2*time.Minute)
	registration := key.Create(c.Options)
	if r := first.finishRegistration(site, csrf, "work laptop", c.Ceremony, registration); !wantStatus(t, r, http.StatusOK, "alice registering") {
		t.FailNow()
	}
	e.waitEvent(match{"event": "passkey_registered", "user": "alice", "credential_id": key.ID(), "rp_id": passkeyRPID})

	t.Run("beginning without a valid current code", func(t *testing.T) {
		for _, tt := range []struct {
			name             string
			b                *browser
			kind, form, code string
			status           int
			says             string
			// audited is the reason of the passkey_failed a refused code writes.
			audited string
		}{
			{"no code, from a second browser", second, "register", "register", "", http.StatusBadRequest, "the code is wrong: enter the current code from your authenticator app", "totp_invalid"},
			{"a wrong code, from a second browser", second, "register", "register", alice.wrong(t), http.StatusBadRequest, "the code is wrong", "totp_invalid"},
			{"the code the first browser used", second, "register", "register", code, http.StatusBadRequest, "this code was already used: wait for the next one", "totp_replayed"},
			{"a registration for another form", second, "register", "activate:ops", alice.wrong(t), http.StatusBadRequest, "a registration is for the form register", ""},
			{"a login ceremony for the registration form", second, "login", "register", "", http.StatusOK, "", ""},
			{"a user without an authenticator app", e.browser("erin"), "register", "register", "123456", http.StatusConflict, "ask an operator for an enrollment link", "totp_not_enrolled"},
		} {
			t.Run(tt.name, func(t *testing.T) {
				stored, ceremonies := e.storedPasskeys(tt.b.user), e.ceremonies()
				r, c := tt.b.beginCeremony(site, tt.b.csrfOf(site), tt.kind, tt.form, tt.code)
				if tt.status == http.StatusOK {
					// A step-up ceremony named after the registration form is begun, but
					// it cannot register anything.
					if !wantStatus(t, r, http.StatusOK, "a login ceremony for the form register") {
						return
					}
					r = tt.b.finishRegistration(site, tt.b.csrfOf(site), "sneaked in", c.Ceremony, testkit.NewSoftKey(t, site).Create(c.Options))
					wantStatus(t, r, http.StatusBadRequest, "finishing a registration with a login ceremony")
					e.waitEvent(match{"event": "passkey_failed", "user": tt.b.user, "ceremony": "registration", "reason": "passkey_ceremony_unknown"})
				} else {
					wantStatus(t, r, tt.status, tt.name)
					if c.Ceremony != "" || len(c.Options) != 0 || !strings.Contains(c.Error, tt.says) {
						t.Errorf("%s: want no ceremony and an error that says %q, got %s", tt.name, tt.says, r)
					}
					if n := e.ceremonies(); n != ceremonies {
						t.Errorf("%s: %d ceremonies stored, want %d as before", tt.name, n, ceremonies)
					}
					if tt.audited != "" {
						e.waitEvent(match{"event": "passkey_failed", "user": tt.b.user, "ceremony": "registration", "reason": tt.audited})
					}
				}
				if !bytes.Equal(e.storedPasskeys(tt.b.user), stored) {
					t.Errorf("%s: the stored passkeys of %s changed", tt.name, tt.b.user)
				}
			})
		}
	})

	// finishing is one POST /.jit/enroll that must be refused, saying says, with
	// passkey_failed for the registration of user, and change no one's passkeys.
	finishing := func(t *testing.T, b *browser, ceremony string, answer []byte, says, reason string) {
		t.Helper()
		stored := map[string][]byte{"alice": e.storedPasskeys("alice"), "bob": e.storedPasskeys("bob"), b.user: e.storedPasskeys(b.user)}
		failed := match{"event": "passkey_failed", "user": b.user, "ceremony": "registration", "reason": reason}
		before, registered := e.countEvents(failed), e.countEvents(match{"event": "passkey_registered"})
		r := b.finishRegistration(site, b.csrfOf(site), "not mine", ceremony, answer)
		wantStatus(t, r, http.StatusBadRequest, b.user+" finishing a registration")
		if text := pageText(t, r.Body); !strings.Contains(text, says) || strings.Contains(text, "“not mine” is registered") {
			t.Errorf("%s finishing a registration: the page does not say %q: %s", b.user, says, text)
		}
		wfNoSessionCookie(t, r, b.user+" finishing a registration")
		for u, raw := range stored {
			if !bytes.Equal(e.storedPasskeys(u), raw) {
				t.Errorf("the stored passkeys of %s changed", u)
			}
		}
		e.waitMoreEvents(failed, before)
		if n := e.countEvents(match{"event": "passkey_registered"}); n != registered {
			t.Errorf("%d passkey_registered events written, want none", n-registered)
		}
	}
	const saysAgain = "The registration expired or was already used. Enter a new code and press the button again."

	t.Run("the first browser's finished registration, replayed by a second browser", func(t *testing.T) {
		finishing(t, second, c.Ceremony, registration, saysAgain, "passkey_ceremony_unknown")
	})
	t.Run("a made-up ceremony, from a second browser", func(t *testing.T) {
		made := make([]byte, 32)
		rand.Read(made)
		finishing(t, second, base64.RawURLEncoding.EncodeToString(made), testkit.NewSoftKey(t, site).Create(c.Options), saysAgain, "passkey_ceremony_unknown")
	})
	t.Run("a second browser of alice's finishes her pending registration with its own key", func(t *testing.T) {
		// The ceremony id and options leaked (a shared screen, a proxy log); the
		// ceremony is bound to the first browser's passkey cookie, so it stays hers.
		r, pending := first.beginCeremony(site, csrf, "register", "register", alice.next(t))
		if !wantStatus(t, r, http.StatusOK, "alice beginning a registration") {
			t.FailNow()
		}
		finishing(t, second, pending.Ceremony, testkit.NewSoftKey(t, site).Create(pending.Options),
			"The registration was begun in another browser. Register the passkey again, in this one.", "passkey_other_browser")
	})
	t.Run("bob finishes a registration begun by alice, with his own key", func(t *testing.T) {
		r, pending := first.beginCeremony(site, csrf, "register", "register", alice.next(t))
		if !wantStatus(t, r, http.StatusOK, "alice beginning a second registration") {
			t.FailNow()
		}
		finishing(t, bb, pending.Ceremony, testkit.NewSoftKey(t, site).Create(pending.Options), saysAgain, "passkey_ceremony_unknown")
		// Not bob's, so not spent by him: alice finishes it.
		spare := testkit.NewSoftKey(t, site)
		if r := first.finishRegistration(site, csrf, "spare key", pending.Ceremony, spare.Create(pending.Options)); !wantStatus(t, r, http.StatusOK, "alice finishing her registration") {
			t.FailNow()
		}
		e.waitEvent(match{"event": "passkey_registered", "user": "alice", "credential_id": spare.ID()})
	})

	// Authenticators that answer wrongly, each for a user of its own (a registration
	// spends a current code).
	for i, tt := range []struct {
		name, says, reason string
		answer             func(k *testkit.SoftKey, options []byte) []byte
	}{
		{"without user verification", "Your authenticator did not verify you (PIN or biometric). Register again, and unlock it when asked.", "passkey_user_not_verified",
			func(k *testkit.SoftKey, o []byte) []byte { return k.CreateWithoutUV(o) }},
		{"at a look-alike origin", "The browser's answer was refused. Enter a new code and register again, on this page.", "passkey_wrong_origin",
			func(k *testkit.SoftKey, o []byte) []byte { return k.CreateAt(o, lookAlikeOrigin) }},
		{"for another RP ID", "The browser's answer was refused. Enter a new code and register again, on this page.", "passkey_wrong_rp_id",
			func(k *testkit.SoftKey, o []byte) []byte { return k.CreateForRPID(o, "example.com") }},
	} {
		t.Run("an authenticator answering "+tt.name, func(t *testing.T) {
			user := "r" + strconv.Itoa(i+1)
			u, b := e.enroll(user), e.browser(user)
			csrf := b.csrfOf(site)
			r, c := b.beginCeremony(site, csrf, "register", "register", u.next(t))
			if !wantStatus(t, r, http.StatusOK, user+" beginning a registration") {
				t.FailNow()
			}
			finishing(t, b, c.Ceremony, tt.answer(testkit.NewSoftKey(t, site), c.Options), tt.says, tt.reason)
		})
	}
	wantNoUpstream(t, e.up, 0, "the registrations")
}

// Beginning ceremonies spends the user's refusal allowance: a client that floods
// POST /.jit/passkey gets 429 after the burst (50 by default), stores no more
// ceremonies from then on, and is audited once; another user is not held up, and
// cross-site posts store nothing.
func TestSecurityClass11PasskeyCeremonyFlood(t *testing.T) {
	const burst = refusalBurst
	e := newEnv(t, envOptions{
		JitOptions: `
		role ops {
			max_duration 1h
			justification required 10
			eligible alice bob
			step_up webauthn
		}`,
		Sites: []siteSpec{{Auth: true, Jit: "\tjit ops"}},
	})
	site := e.site(0)
	alice := e.enroll("alice")
	b, key := e.browser("alice"), testkit.NewSoftKey(t, site)
	b.registerSoftKey(site, alice, key, "work laptop") // its ceremony spent one place
	csrf := b.csrfOf(site)
	form := url.Values{"csrf": {csrf}, "kind": {"login"}, "form": {"activate:ops"}}

	for range 3 {
		r := b.postForm(site+"/.jit/passkey", form, withHeader("Sec-Fetch-Site", "cross-site"), withHeader("Accept", "*/*"))
		wantStatus(t, r, http.StatusForbidden, "a cross-site POST /.jit/passkey")
	}
	if n := e.ceremonies(); n != 0 {
		t.Fatalf("%d ceremonies stored after cross-site posts, want none", n)
	}

	begun, limitedAt := 0, -1
	for i := 0; i < 2*burst && (limitedAt < 0 || i < limitedAt+5); i++ {
		r, c := b.beginCeremony(site, csrf, "login", "activate:ops", "")
		switch {
		case r.StatusCode == http.StatusOK && limitedAt < 0 && c.Ceremony != "":
			begun++
		case r.StatusCode == http.StatusTooManyRequests:
			if limitedAt < 0 {
				limitedAt = i
				if r.Header.Get("Retry-After") == "" || !strings.Contains(pageText(t, r.Body), "Try again at") {
					t.Errorf("the first limited answer has no Retry-After or does not say when to try again: %s", r)
				}
				t.Logf("the limited answer to the script (Accept */*) is %s", r.Header.Get("Content-Type"))
			}
		default:
			t.Fatalf("ceremony %d: want 200 until the limit, then 429; got %s", i+1, r)
		}
	}
	t.Logf("%d ceremonies begun before the limit", begun)
	if limitedAt < 0 || begun < burst-2 || begun > burst {
		t.Errorf("%d ceremonies begun before the first 429 (at request %d), want the burst of %d less the registration's", begun, limitedAt+1, burst)
	}
	if n := e.ceremonies(); n != begun {
		t.Errorf("%d ceremonies stored, want the %d begun", n, begun)
	}
	e.waitEvent(match{"event": "refusals_limited", "user": "alice", "uri": "/.jit/passkey"})
	if n := e.countEvents(match{"event": "refusals_limited"}); n != 1 {
		t.Errorf("%d refusals_limited events, want 1 for the run", n)
	}
	// The whole of alice's /.jit/ POSTs wait, an activation too.
	if r := b.postForm(site+"/.jit/activate", proofless(b, site, "ops")); r.StatusCode != http.StatusTooManyRequests {
		t.Errorf("alice's activation while limited: want 429, got %s", r)
	}
	// bob's allowance is his own: he is told to register a passkey, not to wait.
	bob := e.browser("bob")
	if r, c := bob.beginCeremony(site, bob.csrfOf(site), "login", "activate:ops", ""); r.StatusCode != http.StatusConflict || !strings.Contains(c.Error, "register one on /.jit/enroll") {
		t.Errorf("bob during alice's flood: want 409 saying to register a passkey, got %s", r)
	}
	wantNoUpstream(t, e.up, 0, "the flood")
}
