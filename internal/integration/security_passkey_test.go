package integration

import (
	"net/http"
	"net/url"
	"strconv"
	"testing"
	"time"

	"github.com/caddy-jit/caddy-jit/internal/testkit"
)

// Security classes 11 (step-up binding) and 12 (phishing) for passkeys (issue 14):
// each refusal of stepup's passkey tests, tried against a real Caddy over HTTP from a
// second browser that knows only alice's password, from a second user and from a
// look-alike page, with a software authenticator (testkit.SoftKey) that can be
// cloned, used without its PIN or asked by another origin. Every attempt must be
// refused with a status and words that say what to do, set no session cookie, reach
// no upstream, leave every stored passkey (and its signature counter) as it was, and
// be audited with its reason. The approvals are in security_passkey_approvals_test.go,
// the registrations and what ceremonies cost in security_passkey_registration_test.go,
// the helpers in passkey_http_helpers_test.go.
//
// The Caddy under test runs on the real clock: the 2-minute lapse of a ceremony is
// shown by moving its stored expiry back (env.ageCeremony), after checking that it
// was set 2 minutes ahead; stepup's TestPasskeyLoginRefusals ("expired challenge")
// and TestPasskeyRegistrationRefusals ("expired") move the clock itself.

// lookAlikeOrigin is a phishing page's: a name that starts like the real site's.
const lookAlikeOrigin = "http://localhost.login-check.example"

// What the activation and approval pages say about a refused proof.
const (
	saysPressAgain    = "press the passkey button again"
	saysExpiredOrUsed = "The passkey prompt expired or was already used: press the passkey button again."
	saysNotYours      = "That passkey is not registered for you on this site: register one on /.jit/enroll, or use another."
	saysNotVerified   = "Your authenticator did not verify you (PIN or biometric): try again and unlock it when asked."
	saysCounter       = "signature counter went backwards, which a cloned key does"
	saysNeedsPasskey  = "needs a passkey or security key, not an authenticator code: register one on /.jit/enroll"
	saysCodeOnly      = "This role accepts only a code from your authenticator app, not a passkey."
)

// Every way a passkey activation can be refused, tried by someone who should not get
// the session: a second browser with alice's password (and at times her stolen or
// cloned key), bob, and alice herself too late. Afterwards her own browser and key
// still work, and the stored counter is the one her key last reported.
func TestSecurityClass11PasskeyActivationRefusals(t *testing.T) {
	s := newPasskeyScene(t)
	e, site := s.e, s.site
	clone := s.aliceKey.Clone() // copied before alice's first use: it lags behind from then on
	s.first.mustActivateWithPasskey(site, "ops", adminURI, s.aliceKey)
	if got := e.signCount("alice", s.aliceKey.ID()); got != s.aliceKey.Count() || got == 0 {
		t.Fatalf("after alice's activation the stored counter is %d, want %d, what her key reported", got, s.aliceKey.Count())
	}
	second := func() *browser { return e.browser("alice") } // alice's password, nothing else
	// pending and pendingAnswer carry a ceremony from a case's attempt to its then.
	var (
		pending       passkeyActivation
		pendingAnswer []byte
	)

	tests := []struct {
		name string
		// attempt arranges the attack and says who posts which activation form of role.
		attempt func(t *testing.T) (b *browser, role string, form url.Values)
		status  int
		says    string
		// reason is activation_failed's; passkey passkey_failed's ("" when none).
		reason, passkey string
		// then, if set, checks what the refusal left usable.
		then func(t *testing.T)
	}{
		{
			name: "replayed: the first browser's spent ceremony and answer, from a second browser",
			attempt: func(t *testing.T) (*browser, string, url.Values) {
				a := s.first.beginActivation(site, "ops", adminURI)
				answer := s.aliceKey.Get(a.Ceremony.Options)
				if r := s.first.postForm(site+"/.jit/activate", a.answered(answer)); !wantStatus(t, r, http.StatusSeeOther, "alice's own activation") {
					t.FailNow()
				}
				b := second()
				return b, "ops", withPasskey(proofless(b, site, "ops"), a.Ceremony.Ceremony, answer)
			},
			status: http.StatusBadRequest, says: saysExpiredOrUsed,
			reason: "passkey_ceremony_unknown", passkey: "passkey_ceremony_unknown",
		},
		{
			name: "replayed: an answer of alice's key, on a ceremony the second browser began",
			attempt: func(t *testing.T) (*browser, string, url.Values) {
				a := s.first.beginActivation(site, "ops", adminURI)
				answer := s.aliceKey.Get(a.Ceremony.Options) // never sent by alice
				b := second()
				return b, "ops", b.beginActivation(site, "ops", adminURI).answered(answer)
			},
			status: http.StatusBadRequest, says: saysPressAgain,
			reason: "passkey_challenge_mismatch", passkey: "passkey_challenge_mismatch",
		},
		{
			name: "forged: the second browser's own ceremony, signed by another key under alice's credential id",
			attempt: func(t *testing.T) (*browser, string, url.Values) {
				b := second()
				a := b.beginActivation(site, "ops", adminURI)
				wantLoginOptions(t, a.Ceremony.Options, s.aliceKey.ID())
				return b, "ops", a.answered(s.aliceKey.Impostor().Get(a.Ceremony.Options))
			},
			status: http.StatusBadRequest, says: saysPressAgain,
			reason: "passkey_invalid", passkey: "passkey_invalid",
		},
		{
			name: "forged: the first browser's pending ceremony, with a forged answer from a second browser",
			attempt: func(t *testing.T) (*browser, string, url.Values) {
				a := s.first.beginActivation(site, "ops", adminURI)
				pending = a
				b := second()
				return b, "ops", withPasskey(proofless(b, site, "ops"), a.Ceremony.Ceremony, s.aliceKey.Impostor().Get(a.Ceremony.Options))
			},
			// The ceremony is bound to the first browser's passkey cookie: refused
			// before its answer is looked at.
			status: http.StatusBadRequest, says: saysPressAgain,
			reason: "passkey_other_browser", passkey: "passkey_other_browser",
			then: func(t *testing.T) {
				// The forgery spent the ceremony, as any attempt does: alice's own answer
				// to it is refused too, and she presses the button again.
				s.wantRefused(t, s.first, site, "/.jit/activate", pending.answered(s.aliceKey.Get(pending.Ceremony.Options)), refusal{
					status: http.StatusBadRequest, says: saysExpiredOrUsed,
					failed: activationFailed("alice", "ops", "passkey_ceremony_unknown"), passkey: "passkey_ceremony_unknown",
				})
				s.first.mustActivateWithPasskey(site, "ops", adminURI, s.aliceKey)
			},
		},
		{
			name: "another user's credential: bob's passkey answers alice's ceremony",
			attempt: func(t *testing.T) (*browser, string, url.Values) {
				b := second()
				a := b.beginActivation(site, "ops", adminURI)
				return b, "ops", a.answered(s.bobKey.Get(a.Ceremony.Options))
			},
			status: http.StatusBadRequest, says: saysNotYours,
			reason: "passkey_unknown_credential", passkey: "passkey_unknown_credential",
		},
		{
			name: "another user's ceremony: bob sends a ceremony begun for alice, with her answer",
			attempt: func(t *testing.T) (*browser, string, url.Values) {
				pending = s.first.beginActivation(site, "ops", adminURI)
				pendingAnswer = s.aliceKey.Get(pending.Ceremony.Options)
				return s.bobs, "ops", withPasskey(proofless(s.bobs, site, "ops"), pending.Ceremony.Ceremony, pendingAnswer)
			},
			status: http.StatusBadRequest, says: saysExpiredOrUsed,
			reason: "passkey_ceremony_unknown", passkey: "passkey_ceremony_unknown",
			then: func(t *testing.T) {
				// Not bob's, so not spent by him: alice finishes it.
				r := s.first.postForm(site+"/.jit/activate", pending.answered(pendingAnswer))
				if wantStatus(t, r, http.StatusSeeOther, "alice finishing the ceremony bob tried") {
					wfSessionCookie(t, r, "alice finishing the ceremony bob tried")
				}
			},
		},
		{
			name: "another user's credential: bob's own ceremony, answered by alice's passkey",
			attempt: func(t *testing.T) (*browser, string, url.Values) {
				a := s.bobs.beginActivation(site, "ops", adminURI)
				return s.bobs, "ops", a.answered(s.aliceKey.Get(a.Ceremony.Options))
			},
			status: http.StatusBadRequest, says: saysNotYours,
			reason: "passkey_unknown_credential", passkey: "passkey_unknown_credential",
		},
		{
			name: "wrong RP ID: alice's stolen key signs for another relying party",
			attempt: func(t *testing.T) (*browser, string, url.Values) {
				b := second()
				a := b.beginActivation(site, "ops", adminURI)
				return b, "ops", a.answered(s.aliceKey.GetForRPID(a.Ceremony.Options, "example.com"))
			},
			status: http.StatusBadRequest, says: saysPressAgain,
			reason: "passkey_wrong_rp_id", passkey: "passkey_wrong_rp_id",
		},
		{
			name: "wrong origin: a ceremony run at the other site of the same host, finished here",
			attempt: func(t *testing.T) (*browser, string, url.Values) {
				b := second()
				there := b.beginActivation(s.otherSite, "ops", adminURI)
				return b, "ops", withPasskey(proofless(b, site, "ops"), there.Ceremony.Ceremony, s.aliceKey.GetAt(there.Ceremony.Options, s.otherSite))
			},
			status: http.StatusBadRequest, says: saysPressAgain,
			reason: "passkey_wrong_origin", passkey: "passkey_wrong_origin",
		},
		{
			name: "missing UV: alice's stolen key, without its PIN",
			attempt: func(t *testing.T) (*browser, string, url.Values) {
				b := second()
				a := b.beginActivation(site, "ops", adminURI)
				return b, "ops", a.answered(s.aliceKey.GetWithoutUV(a.Ceremony.Options))
			},
			status: http.StatusBadRequest, says: saysNotVerified,
			reason: "passkey_user_not_verified", passkey: "passkey_user_not_verified",
		},
		{
			name: "counter going backwards: a clone of alice's key",
			attempt: func(t *testing.T) (*browser, string, url.Values) {
				b := second()
				a := b.beginActivation(site, "ops", adminURI)
				return b, "ops", a.answered(clone.Get(a.Ceremony.Options))
			},
			status: http.StatusBadRequest, says: saysCounter,
			reason: "passkey_counter_regressed", passkey: "passkey_counter_regressed",
			then: func(t *testing.T) {
				e.waitEvent(match{"event": "passkey_counter_regressed", "user": "alice", "credential_id": s.aliceKey.ID(),
					"received_count": "1", "stored_count": strconv.FormatUint(uint64(e.signCount("alice", s.aliceKey.ID())), 10)})
			},
		},
		{
			name: "counter going backwards: a copy of alice's key reset to zero",
			attempt: func(t *testing.T) (*browser, string, url.Values) {
				reset := s.aliceKey.Clone()
				reset.NextCount(0)
				b := second()
				a := b.beginActivation(site, "ops", adminURI)
				return b, "ops", a.answered(reset.Get(a.Ceremony.Options))
			},
			status: http.StatusBadRequest, says: saysCounter,
			reason: "passkey_counter_regressed", passkey: "passkey_counter_regressed",
		},
		{
			name: "removed credential: frank's key, removed by an operator while his ceremony ran",
			attempt: func(t *testing.T) (*browser, string, url.Values) {
				frank, fb, key := e.enroll("frank"), e.browser("frank"), testkit.NewSoftKey(t, site)
				fb.registerSoftKey(site, frank, key, "lost phone")
				a := fb.beginActivation(site, "ops", adminURI)
				answer := key.Get(a.Ceremony.Options)
				e.removePasskey("frank", key.ID(), "integration-op", "lost")
				e.waitEvent(match{"event": "passkey_removed", "user": "frank", "credential_id": key.ID()})
				return fb, "ops", a.answered(answer)
			},
			status: http.StatusBadRequest, says: saysNotYours,
			reason: "passkey_unknown_credential", passkey: "passkey_unknown_credential",
			then: func(t *testing.T) {
				// Nor can a new ceremony begin: frank has no passkey left.
				fb := e.browser("frank")
				r, c := fb.beginCeremony(site, fb.csrfOf(site), "login", "activate:ops", "")
				if r.StatusCode != http.StatusConflict || c.Ceremony != "" || c.Error != "you have no passkey for this site: register one on /.jit/enroll" {
					t.Errorf("frank beginning a ceremony after the removal: want 409 saying to register a passkey, got %s", r)
				}
			},
		},
		{
			name: "expired challenge: alice's answer, 2 minutes after her ceremony began",
			attempt: func(t *testing.T) (*browser, string, url.Values) {
				b := e.browser("alice")
				a := b.beginActivation(site, "ops", adminURI)
				if left := time.Until(e.ceremonyExpiry(a.Ceremony.Ceremony)); left < 110*time.Second || left > 2*time.Minute {
					t.Errorf("a new ceremony lapses in %s, want 2 minutes", left)
				}
				wantOptionTimeout(t, a.Ceremony.Options, 2*time.Minute)
				answer := s.aliceKey.Get(a.Ceremony.Options)
				e.ageCeremony(a.Ceremony.Ceremony, 2*time.Minute)
				return b, "ops", a.answered(answer)
			},
			status: http.StatusBadRequest, says: saysExpiredOrUsed,
			reason: "passkey_challenge_expired", passkey: "passkey_challenge_expired",
		},
		{
			name: "wrong form: an assertion made to activate db, spent on ops by a second browser",
			attempt: func(t *testing.T) (*browser, string, url.Values) {
				a := s.first.beginActivation(site, "db", adminURI)
				b := second()
				return b, "ops", withPasskey(proofless(b, site, "ops"), a.Ceremony.Ceremony, s.aliceKey.Get(a.Ceremony.Options))
			},
			status: http.StatusBadRequest, says: saysPressAgain,
			reason: "passkey_wrong_form", passkey: "passkey_wrong_form",
		},
		{
			name: "no proof: the second browser sends the form without a passkey or a code",
			attempt: func(t *testing.T) (*browser, string, url.Values) {
				b := second()
				return b, "ops", proofless(b, site, "ops")
			},
			status: http.StatusBadRequest, says: saysNeedsPasskey,
			reason: "passkey_required",
		},
		{
			name: "a passkey for a step_up totp role",
			attempt: func(t *testing.T) (*browser, string, url.Values) {
				b := e.browser("alice")
				c := b.mustBeginLogin(site, b.csrfOf(site), "activate:legacy")
				return b, "legacy", withPasskey(proofless(b, site, "legacy"), c.Ceremony, s.aliceKey.Get(c.Options))
			},
			status: http.StatusBadRequest, says: saysCodeOnly,
			reason: "totp_required",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, role, form := tt.attempt(t)
			s.wantRefused(t, b, site, "/.jit/activate", form, refusal{
				status: tt.status, says: tt.says, failed: activationFailed(b.user, role, tt.reason), passkey: tt.passkey,
			})
			if tt.then != nil {
				tt.then(t)
			}
		})
	}

	s.first.mustActivateWithPasskey(site, "ops", adminURI, s.aliceKey)
	if got := e.signCount("alice", s.aliceKey.ID()); got != s.aliceKey.Count() {
		t.Errorf("after all of it, the stored counter of alice's key is %d, want %d, what her key last reported", got, s.aliceKey.Count())
	}
	if got := e.signCount("bob", s.bobKey.ID()); got != 0 {
		t.Errorf("the stored counter of bob's key is %d, want 0: none of its answers was accepted", got)
	}
}

// Class 12, phishing: a code typed into a look-alike page can be relayed within its
// 30 s, and a role that takes codes starts a session with it; a step_up webauthn
// role refuses it without spending it. A passkey cannot be relayed: the real site's
// options, answered in alice's browser at the look-alike page, carry its origin.
func TestSecurityClass12PasskeyPhishing(t *testing.T) {
	s := newPasskeyScene(t)
	e, site := s.e, s.site
	attacker := e.browser("alice") // the look-alike page took her password too

	code := s.alice.next(t) // typed into the look-alike page
	f := proofless(attacker, site, "ops")
	f.Set("code", code)
	s.wantRefused(t, attacker, site, "/.jit/activate", f, refusal{status: http.StatusBadRequest, says: saysNeedsPasskey,
		failed: activationFailed("alice", "ops", "passkey_required")})
	// Not spent: the same code starts a session of a role that takes either, which is
	// why roles that matter require a passkey. Its amr says it was a code.
	r := attacker.activate(site, "mixed", adminURI, code, nil)
	if wantStatus(t, r, http.StatusSeeOther, "the relayed code on a step_up any role") {
		if _, claims := tokenParts(t, wfSessionCookie(t, r, "the relayed code")); event(claims).str("amr") != `["otp"]` {
			t.Errorf("the relayed code's session has amr %v, want [\"otp\"]", claims["amr"])
		}
	}

	for _, tt := range []struct {
		name   string
		answer func(options []byte) []byte
		reason string
	}{
		{"at the look-alike origin", func(o []byte) []byte { return s.aliceKey.GetAt(o, lookAlikeOrigin) }, "passkey_wrong_origin"},
		{"at a page on another port of the same host", func(o []byte) []byte { return s.aliceKey.GetAt(o, s.otherSite) }, "passkey_wrong_origin"},
		{"at the same host over https", func(o []byte) []byte { return s.aliceKey.GetAt(o, "https://localhost") }, "passkey_wrong_origin"},
	} {
		t.Run("a passkey relayed "+tt.name, func(t *testing.T) {
			relay := e.browser("alice")
			a := relay.beginActivation(site, "ops", adminURI) // the real site's options, relayed
			s.wantRefused(t, relay, site, "/.jit/activate", a.answered(tt.answer(a.Ceremony.Options)), refusal{
				status: http.StatusBadRequest, says: saysPressAgain, failed: activationFailed("alice", "ops", tt.reason), passkey: tt.reason,
			})
		})
	}
	s.first.mustActivateWithPasskey(site, "ops", adminURI, s.aliceKey)
}
