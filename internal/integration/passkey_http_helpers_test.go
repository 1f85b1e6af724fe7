package integration

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/caddy-jit/caddy-jit/internal/testkit"
)

// Passkeys over plain HTTP, as the pages' script (assets/passkey.js) drives them: ask
// POST /.jit/passkey for a ceremony, have an authenticator (testkit.SoftKey) answer its
// options, and send the form with the answer in passkey_ceremony and
// passkey_response. Because the pieces are separate, a test can hand them to another
// browser, another user or another form, which is what the security suite's passkey
// class does (security_passkey_test.go).

// passkeyCeremony is the answer of POST /.jit/passkey: a ceremony and the options for
// navigator.credentials, or why not.
type passkeyCeremony struct {
	Ceremony string          `json:"ceremony"`
	Options  json.RawMessage `json:"options"`
	Error    string          `json:"error"`
}

// passkeyFormRE finds the forms a page's passkey blocks are for.
var passkeyFormRE = regexp.MustCompile(`data-passkey-form="([^"]*)"`)

// passkeyFormsOf are the data-passkey-form values of a page, in order.
func passkeyFormsOf(page string) []string {
	var out []string
	for _, m := range passkeyFormRE.FindAllStringSubmatch(page, -1) {
		out = append(out, m[1])
	}
	return out
}

// csrfOf returns a CSRF token of the browser's user for the site, from the passkeys
// page, which every signed-in user may open.
func (b *browser) csrfOf(site string) string {
	b.t.Helper()
	r := b.get(site + "/.jit/enroll")
	if r.StatusCode != http.StatusOK {
		b.t.Fatalf("GET /.jit/enroll as %s: want 200, got %s", b.user, r)
	}
	csrf := formFields(b.t, r.Body, "/.jit/enroll").Get("csrf")
	if csrf == "" {
		b.t.Fatalf("the passkeys page has no csrf value: %s", r)
	}
	return csrf
}

// beginCeremony posts to /.jit/passkey what the script posts: kind login or register,
// the form the proof is for and, for a registration, the code. The Accept header is a
// fetch's default.
func (b *browser) beginCeremony(site, csrf, kind, form, code string) (*response, passkeyCeremony) {
	b.t.Helper()
	f := url.Values{"csrf": {csrf}, "kind": {kind}, "form": {form}}
	if code != "" {
		f.Set("code", code)
	}
	r := b.postForm(site+"/.jit/passkey", f, withHeader("Accept", "*/*"))
	var c passkeyCeremony
	if strings.HasPrefix(r.Header.Get("Content-Type"), "application/json") {
		if err := json.Unmarshal([]byte(r.Body), &c); err != nil {
			b.t.Errorf("POST /.jit/passkey as %s answered JSON that does not decode: %v: %s", b.user, err, r)
		}
	}
	return r, c
}

// mustBeginLogin begins a step-up ceremony for form and fails the test unless it did.
func (b *browser) mustBeginLogin(site, csrf, form string) passkeyCeremony {
	b.t.Helper()
	r, c := b.beginCeremony(site, csrf, "login", form, "")
	if r.StatusCode != http.StatusOK || c.Ceremony == "" || len(c.Options) == 0 {
		b.t.Fatalf("%s beginning a passkey ceremony for %s: want 200 with a ceremony and options, got %s", b.user, form, r)
	}
	return c
}

// registerSoftKey registers key as the browser's user does on the passkeys page: the
// current code of u begins the ceremony, the key answers it, and the page then says
// the passkey is registered.
func (b *browser) registerSoftKey(site string, u *totpUser, key *testkit.SoftKey, name string) {
	b.t.Helper()
	csrf := b.csrfOf(site)
	r, c := b.beginCeremony(site, csrf, "register", "register", u.next(b.t))
	if r.StatusCode != http.StatusOK || c.Ceremony == "" {
		b.t.Fatalf("%s beginning a passkey registration: want 200 with a ceremony, got %s", b.user, r)
	}
	r = b.finishRegistration(site, csrf, name, c.Ceremony, key.Create(c.Options))
	if r.StatusCode != http.StatusOK || !strings.Contains(pageText(b.t, r.Body), "“"+name+"” is registered") {
		b.t.Fatalf("%s registering the passkey %q: want 200 saying it is registered, got %s", b.user, name, r)
	}
}

// finishRegistration posts the passkeys page's form with a registration's answer.
func (b *browser) finishRegistration(site, csrf, name, ceremony string, answer []byte) *response {
	b.t.Helper()
	return b.postForm(site+"/.jit/enroll", url.Values{"csrf": {csrf}, "name": {name},
		"passkey_ceremony": {ceremony}, "passkey_response": {string(answer)}})
}

// passkeyActivation is an activation form filled in as the script leaves it before
// sending it: the page's fields, a justification, no code, and the ceremony the page
// asked for (its form, e.g. activate:ops) with its options, still unanswered.
type passkeyActivation struct {
	Form     url.Values
	Ceremony passkeyCeremony
}

// beginActivation opens the activation page of role as b and begins the ceremony the
// page's passkey block names.
func (b *browser) beginActivation(site, role, ret string) passkeyActivation {
	b.t.Helper()
	r := b.get(site + activationPath(role, ret))
	if r.StatusCode != http.StatusOK {
		b.t.Fatalf("GET the activation page of %s as %s: %s", role, b.user, r)
	}
	form := "activate:" + role
	if got := passkeyFormsOf(r.Body); !slices.Equal(got, []string{form}) {
		b.t.Fatalf("the activation page of %s offers %s passkey ceremonies for %q, want one for %q", role, b.user, got, form)
	}
	f := formFields(b.t, r.Body, "/.jit/activate")
	f.Set("justification", "integration test: checking the console")
	f.Del("code")
	return passkeyActivation{Form: f, Ceremony: b.mustBeginLogin(site, f.Get("csrf"), form)}
}

// answered is the activation form with the ceremony and answer filled in.
func (a passkeyActivation) answered(answer []byte) url.Values {
	return withPasskey(a.Form, a.Ceremony.Ceremony, answer)
}

// withPasskey is a copy of form carrying the ceremony and its answer.
func withPasskey(form url.Values, ceremony string, answer []byte) url.Values {
	f := url.Values{}
	for k, vs := range form {
		f[k] = slices.Clone(vs)
	}
	f.Set("passkey_ceremony", ceremony)
	f.Set("passkey_response", string(answer))
	return f
}

// mustActivateWithPasskey activates role with key and fails the test unless the
// browser is sent to ret with a session cookie.
func (b *browser) mustActivateWithPasskey(site, role, ret string, key *testkit.SoftKey) string {
	b.t.Helper()
	a := b.beginActivation(site, role, ret)
	r := b.postForm(site+"/.jit/activate", a.answered(key.Get(a.Ceremony.Options)))
	if r.StatusCode != http.StatusSeeOther || r.Header.Get("Location") != ret {
		b.t.Fatalf("%s activating %s with a passkey: want 303 to %s, got %s", b.user, role, ret, r)
	}
	return wfSessionCookie(b.t, r, b.user+" activating "+role+" with a passkey")
}

// beginDecision opens the approvals page of request id as b and begins the ceremony
// of its decision form (decide:ID); the form carries decision.
func (b *browser) beginDecision(site, id, decision string) (url.Values, passkeyCeremony) {
	b.t.Helper()
	f := b.approvalForm(site, id)
	if f == nil {
		b.t.Fatalf("%s's approvals page does not list request %s", b.user, id)
	}
	f.Set("decision", decision)
	f.Del("code")
	return f, b.mustBeginLogin(site, f.Get("csrf"), "decide:"+id)
}

// ---------------------------------------------------------------------------
// The security suite's passkey class: its Caddy, and what a refused attempt must
// leave as it was.

// The roles of the passkey class: ops and db take only a passkey (so that an
// assertion made for one can be tried on the other), legacy only a code, mixed either,
// and deploy's requests are approved by bob with his own passkey. The lockout and the
// refusal allowance are raised so that one test's many refusals do not lock alice
// out halfway; TestSecurityClass11PasskeyCeremonyFlood keeps the defaults.
const passkeySecurityRoles = `
		lockout {
			max_failures 100
		}
		refusals {
			burst 500
		}
		role ops {
			max_duration 1h
			justification required 10
			eligible alice bob frank
			step_up webauthn
		}
		role db {
			max_duration 1h
			justification required 10
			eligible alice bob
			step_up webauthn
		}
		role legacy {
			max_duration 1h
			justification required 10
			eligible alice bob
			step_up totp
		}
		role mixed {
			max_duration 1h
			justification required 10
			eligible alice bob
			step_up any
		}
		role deploy {
			max_duration 1h
			justification required 10
			eligible alice erin
			step_up webauthn
			approval {
				approvers bob
				count 1
			}
		}`

// passkeyScene is a Caddy with two sites on localhost, on two ports under one RP ID
// (the first gated by ops or deploy, the other by ops), where alice and bob have each
// registered a passkey in a browser of their own.
type passkeyScene struct {
	e               *env
	site, otherSite string
	alice, bob      *totpUser
	aliceKey        *testkit.SoftKey
	bobKey          *testkit.SoftKey
	// first is alice's browser, which registered her passkey; bobs is bob's.
	first, bobs *browser
}

func newPasskeyScene(t *testing.T) *passkeyScene {
	t.Helper()
	e := newEnv(t, envOptions{
		JitOptions: passkeySecurityRoles,
		Sites:      []siteSpec{{Auth: true, Jit: "\tjit ops deploy"}, {Auth: true, Jit: "\tjit ops"}},
		Stopped:    true,
	})
	e.startAfterFirstPrune()
	s := &passkeyScene{e: e, site: e.site(0), otherSite: e.site(1)}
	s.alice, s.bob = e.enroll("alice"), e.enroll("bob")
	s.first, s.bobs = e.browser("alice"), e.browser("bob")
	s.aliceKey, s.bobKey = testkit.NewSoftKey(t, s.site), testkit.NewSoftKey(t, s.site)
	s.first.registerSoftKey(s.site, s.alice, s.aliceKey, "work laptop")
	s.bobs.registerSoftKey(s.site, s.bob, s.bobKey, "bob's key")
	return s
}

// refusal is what an attempt must end in.
type refusal struct {
	status int
	// says is what the page tells the user to do.
	says string
	// failed matches the event of the form's handler (activation_failed,
	// approval_failed) with its reason.
	failed match
	// passkey is the reason of the passkey_failed event of the ceremony the attempt
	// spent; "" when it spent none, and then no passkey_failed may be written.
	passkey string
}

// wantRefused posts form as b to site+path and checks that it is refused as want
// says and that nothing else happened: no session cookie, nothing upstream, no
// passkey verified, the stored passkeys of every user unchanged.
func (s *passkeyScene) wantRefused(t *testing.T, b *browser, site, path string, form url.Values, want refusal) {
	t.Helper()
	e := s.e
	users := []string{"alice", "bob", "erin", "frank"}
	stored := map[string][]byte{}
	for _, u := range users {
		stored[u] = e.storedPasskeys(u)
	}
	up, held := e.up.count(), b.cookie(site)
	verified := e.countEvents(match{"event": "passkey_verified"})
	failed := e.countEvents(want.failed)
	anyPasskeyFailed := e.countEvents(match{"event": "passkey_failed"})
	passkeyFailed := match{"event": "passkey_failed", "user": b.user, "ceremony": "login", "reason": want.passkey}
	passkeyFailedBefore := e.countEvents(passkeyFailed)

	r := b.postForm(site+path, form)

	what := b.user + "'s POST " + path
	wantStatus(t, r, want.status, what)
	if text := pageText(t, r.Body); !strings.Contains(text, want.says) {
		t.Errorf("%s: the page does not say %q: %s", what, want.says, text)
	}
	wfNoSessionCookie(t, r, what)
	if b.cookie(site) != held {
		t.Errorf("%s: the browser's session cookie changed", what)
	}
	if held == "" {
		if c := b.get(site + adminURI); c.StatusCode == http.StatusOK {
			t.Errorf("%s: afterwards the browser reached the console: %s", what, c)
		}
	}
	wantNoUpstream(t, e.up, up, what)
	for _, u := range users {
		if after := e.storedPasskeys(u); !bytes.Equal(after, stored[u]) {
			t.Errorf("%s: the stored passkeys of %s changed:\nbefore %s\nafter  %s", what, u, stored[u], after)
		}
	}
	e.waitMoreEvents(want.failed, failed)
	// The handler's event comes after the passkey's, so both are written by now.
	if want.passkey != "" {
		e.waitMoreEvents(passkeyFailed, passkeyFailedBefore)
	} else if n := e.countEvents(match{"event": "passkey_failed"}); n != anyPasskeyFailed {
		t.Errorf("%s: %d passkey_failed events written, want none: no ceremony was to be spent", what, n-anyPasskeyFailed)
	}
	if n := e.countEvents(match{"event": "passkey_verified"}); n != verified {
		t.Errorf("%s: %d passkey_verified events written, want none", what, n-verified)
	}
}

func activationFailed(user, role, reason string) match {
	return match{"event": "activation_failed", "user": user, "role": role, "reason": reason}
}

// proofless is b's activation form of role as its page fills it, with a
// justification and neither a code nor a passkey.
func proofless(b *browser, site, role string) url.Values {
	b.t.Helper()
	f := b.activationForm(site, role, adminURI)
	f.Set("justification", "integration test: checking the console")
	f.Del("code")
	return f
}

// wantLoginOptions checks what a step-up's options give whoever asks for them: the
// challenge, this site's RP ID, required user verification and the ids of the user's
// passkeys, which let no one sign without the authenticator, and nothing else of the
// user (no user handle, no name).
func wantLoginOptions(t *testing.T, options []byte, credentialIDs ...string) {
	t.Helper()
	var o struct {
		PublicKey map[string]json.RawMessage `json:"publicKey"`
	}
	if err := json.Unmarshal(options, &o); err != nil {
		t.Fatalf("the ceremony's options: %v: %s", err, options)
	}
	var ro testkit.RequestOptions
	_ = json.Unmarshal(options, &ro)
	pk := ro.PublicKey
	var ids []string
	for _, c := range pk.AllowCredentials {
		ids = append(ids, c.ID)
	}
	if challenge, err := base64.RawURLEncoding.DecodeString(pk.Challenge); err != nil || len(challenge) < 16 ||
		pk.RPID != passkeyRPID || pk.UserVerification != "required" || !slices.Equal(ids, credentialIDs) {
		t.Errorf("the options: want a challenge of 16 bytes or more, rpId %s, userVerification required and allowCredentials %q; got %s",
			passkeyRPID, credentialIDs, options)
	}
	for _, k := range []string{"user", "extensions"} {
		if _, ok := o.PublicKey[k]; ok {
			t.Errorf("the options of a step-up carry %q: %s", k, options)
		}
	}
}

// wantOptionTimeout checks the timeout the options give the browser.
func wantOptionTimeout(t *testing.T, options []byte, want time.Duration) {
	t.Helper()
	var o struct {
		PublicKey struct {
			Timeout int64 `json:"timeout"`
		} `json:"publicKey"`
	}
	if err := json.Unmarshal(options, &o); err != nil || time.Duration(o.PublicKey.Timeout)*time.Millisecond != want {
		t.Errorf("the options' timeout is %d ms (%v), want %s", o.PublicKey.Timeout, err, want)
	}
}
