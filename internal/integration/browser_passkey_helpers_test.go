package integration

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/cdproto/fetch"
	"github.com/chromedp/cdproto/webauthn"
	"github.com/chromedp/chromedp"
)

// Helpers of the real-browser passkey tests (browser_passkey_test.go): a virtual
// authenticator in a tab through the DevTools WebAuthn domain, and the pages' passkey
// buttons pressed as a person does. The sites are http://localhost:PORT, so the RP ID
// is "localhost", which Chromium counts as a secure context.

// passkeyRPID is the RP ID of the test sites' passkeys: their host, no rp_id configured.
const passkeyRPID = "localhost"

// virtualAuthenticator is a tab's own authenticator: a platform authenticator (CTAP2,
// internal transport) with resident keys and user verification, which finds its user
// present and verified at once, since nobody is there to touch it. Its passkeys are
// not backup-eligible, so a session they start has amr ["hwk"].
type virtualAuthenticator struct {
	tab *chromeTab
	id  webauthn.AuthenticatorID
}

// addVirtualAuthenticator enables the WebAuthn domain in the tab's target and gives
// the tab an authenticator; navigator.credentials in the tab then talks to it, and to
// nothing else. Every tab (browser context) needs its own.
func (b *chromeTab) addVirtualAuthenticator() *virtualAuthenticator {
	b.t.Helper()
	ctx, cancel := b.step()
	defer cancel()
	if _, err := chromedp.Call(ctx, webauthn.Enable, webauthn.EnableParams{}); err != nil {
		b.t.Fatalf("%s's tab: enabling the WebAuthn domain: %v", b.name, err)
	}
	res, err := chromedp.Call(ctx, webauthn.AddVirtualAuthenticator, webauthn.AddVirtualAuthenticatorParams{
		Options: &webauthn.VirtualAuthenticatorOptions{
			Protocol:                    webauthn.AuthenticatorProtocolCtap2,
			Ctap2version:                webauthn.Ctap2versionCtap21,
			Transport:                   webauthn.AuthenticatorTransportInternal,
			HasResidentKey:              true,
			HasUserVerification:         true,
			IsUserVerified:              true,
			AutomaticPresenceSimulation: true,
		},
	})
	if err != nil {
		b.t.Fatalf("%s's tab: adding a virtual authenticator: %v", b.name, err)
	}
	return &virtualAuthenticator{tab: b, id: res.AuthenticatorID}
}

// credentials are the credentials the authenticator holds, for any site.
func (va *virtualAuthenticator) credentials() []*webauthn.Credential {
	b := va.tab
	b.t.Helper()
	ctx, cancel := b.step()
	defer cancel()
	res, err := chromedp.Call(ctx, webauthn.GetCredentials, webauthn.GetCredentialsParams{AuthenticatorID: va.id})
	if err != nil {
		b.t.Fatalf("%s's authenticator: listing its credentials: %v", b.name, err)
	}
	return res.Credentials
}

// signCount is the signature counter of the authenticator's credential id: it grows
// with every assertion the credential makes.
func (va *virtualAuthenticator) signCount(id []byte) float64 {
	b := va.tab
	b.t.Helper()
	ctx, cancel := b.step()
	defer cancel()
	res, err := chromedp.Call(ctx, webauthn.GetCredential, webauthn.GetCredentialParams{AuthenticatorID: va.id, CredentialID: id})
	if err != nil || res.Credential == nil {
		b.t.Fatalf("%s's authenticator: reading the credential %s: %v", b.name, credentialIDText(id), err)
	}
	return res.Credential.SignCount
}

// credential is the authenticator's credential id, with its private key.
func (va *virtualAuthenticator) credential(id []byte) *webauthn.Credential {
	b := va.tab
	b.t.Helper()
	ctx, cancel := b.step()
	defer cancel()
	res, err := chromedp.Call(ctx, webauthn.GetCredential, webauthn.GetCredentialParams{AuthenticatorID: va.id, CredentialID: id})
	if err != nil || res.Credential == nil {
		b.t.Fatalf("%s's authenticator: reading the credential %s: %v", b.name, credentialIDText(id), err)
	}
	return res.Credential
}

// addedCredential is the credential of WebAuthn.addCredential without the CMTG
// fields, which cdproto's Credential always sends (generateCmtgKeyOnNextOperation has
// no omitempty) and Chromium refuses for an authenticator without CMTG.
type addedCredential struct {
	CredentialID         []byte  `json:"credentialId"`
	IsResidentCredential bool    `json:"isResidentCredential"`
	RpID                 string  `json:"rpId"`
	PrivateKey           []byte  `json:"privateKey"`
	UserHandle           []byte  `json:"userHandle,omitempty"`
	SignCount            float64 `json:"signCount"`
	BackupEligibility    bool    `json:"backupEligibility"`
	BackupState          bool    `json:"backupState"`
}

// addCredentialParams are WebAuthn.addCredential's parameters with an addedCredential.
type addCredentialParams struct {
	AuthenticatorID webauthn.AuthenticatorID `json:"authenticatorId"`
	Credential      addedCredential          `json:"credential"`
}

// addCredential is WebAuthn.addCredential with addCredentialParams.
var addCredential = cdp.Command[addCredentialParams, cdp.Empty]{Method: webauthn.CommandAddCredential}

// add puts a copy of a credential (its private key, user handle and counter) into
// the authenticator.
func (va *virtualAuthenticator) add(c *webauthn.Credential) {
	b := va.tab
	b.t.Helper()
	ctx, cancel := b.step()
	defer cancel()
	if _, err := chromedp.Call(ctx, addCredential, addCredentialParams{AuthenticatorID: va.id, Credential: addedCredential{
		CredentialID: c.CredentialID, IsResidentCredential: c.IsResidentCredential, RpID: c.RpID, PrivateKey: c.PrivateKey,
		UserHandle: c.UserHandle, SignCount: c.SignCount, BackupEligibility: c.BackupEligibility, BackupState: c.BackupState,
	}}); err != nil {
		b.t.Fatalf("%s's authenticator: adding the credential %s: %v", b.name, credentialIDText(c.CredentialID), err)
	}
}

// credentialIDText is a raw credential id as the audit log and the server name it.
func credentialIDText(id []byte) string { return base64.RawURLEncoding.EncodeToString(id) }

// passkeyHolder is a person of a browser test who proves presence with a passkey: a
// tab of their own, its authenticator, their TOTP key (a registration asks for a
// current code) and, once registered, the passkey's credential id.
type passkeyHolder struct {
	e    *env
	tab  *chromeTab
	auth *virtualAuthenticator
	totp *totpUser
	// credential is the raw id of the passkey registered with registerPasskey.
	credential []byte
}

// newPasskeyHolder enrolls user's TOTP key and opens their tab, with an authenticator
// that holds nothing yet.
func newPasskeyHolder(e *env, c *chrome, user string) *passkeyHolder {
	e.t.Helper()
	p := &passkeyHolder{e: e, totp: e.enroll(user)}
	p.tab = c.tab(user, user, e.site(0))
	p.auth = p.tab.addVirtualAuthenticator()
	return p
}

// secondWindow opens another tab of the holder's (a browser context of its own, so
// without the holder's session cookie) whose authenticator holds a copy of the
// holder's registered passkey: the same key in a second window.
func (p *passkeyHolder) secondWindow(c *chrome, name string) *passkeyHolder {
	p.tab.t.Helper()
	if p.credential == nil {
		p.tab.t.Fatalf("test bug: %s has registered no passkey to copy", p.tab.name)
	}
	w := &passkeyHolder{e: p.e, totp: p.totp, credential: p.credential}
	w.tab = c.tab(name, p.tab.user, p.tab.site)
	w.auth = w.tab.addVirtualAuthenticator()
	w.auth.add(p.auth.credential(p.credential))
	return w
}

// registerPasskey registers a passkey named name on the passkeys page (/.jit/enroll
// without a link) as a person does: types the name and the current code, presses
// "Register a passkey", and the tab's authenticator makes the credential. It fails the
// test unless the page then says so and lists it, the authenticator holds one more
// credential for the site, and the audit log has passkey_registered for it.
func (p *passkeyHolder) registerPasskey(name string) {
	b, t := p.tab, p.tab.t
	t.Helper()
	before := len(p.auth.credentials())
	p.openPasskeysPage()
	b.typeInto("Name", name)
	b.typeInto("Authenticator code", p.totp.next(t))
	if st := b.pressPasskey(`[data-passkey-form="register"] [data-passkey="register"]`); st != http.StatusOK {
		t.Errorf("%s: the passkeys page after the registration answered %d, want 200", b.name, st)
	}
	s := b.state()
	if want := "Your passkey “" + name + "” is registered."; !strings.Contains(s.Text, want) {
		t.Fatalf("%s: after registering, the page (%s) does not say %q; it says: %s", b.name, s.URL, want, s.Text)
	}
	listed := chromeEval[[]string](b, "listing the registered passkeys",
		`[...document.querySelectorAll('table.passkeys tbody tr')].map(r => [...r.cells].slice(0, 2).map(c => c.textContent.trim()).join(' | '))`)
	if want := name + " | " + passkeyRPID; !slices.Contains(listed, want) {
		t.Errorf("%s: the passkeys page lists %q, want a row %q", b.name, listed, want)
	}

	creds := p.auth.credentials()
	if len(creds) != before+1 {
		t.Fatalf("%s's authenticator holds %d credentials after the registration, want %d", b.name, len(creds), before+1)
	}
	made := creds[len(creds)-1]
	if made.RpID != passkeyRPID {
		t.Errorf("%s's new credential is for the RP ID %q, want %q", b.name, made.RpID, passkeyRPID)
	}
	if made.BackupEligibility {
		t.Errorf("%s's new credential is backup-eligible: the authenticator was made to hold device-bound keys", b.name)
	}
	p.credential = made.CredentialID
	p.e.waitEvent(match{"event": "passkey_registered", "user": p.totp.name, "credential_id": credentialIDText(made.CredentialID),
		"rp_id": passkeyRPID, "name": name})
}

// openPasskeysPage opens the passkeys page and checks that it is one.
func (p *passkeyHolder) openPasskeysPage() {
	b := p.tab
	b.t.Helper()
	if st := b.open("/.jit/enroll"); st != http.StatusOK {
		b.t.Errorf("%s: /.jit/enroll answered %d, want 200", b.name, st)
	}
	if s := b.state(); !strings.HasPrefix(s.Title, "Your passkeys") {
		b.t.Fatalf("%s: /.jit/enroll shows %q (%s), want the passkeys page; it says: %s", b.name, s.Title, s.URL, s.Text)
	}
}

// signCount is the signature counter of the registered passkey in the authenticator.
func (p *passkeyHolder) signCount() float64 {
	p.tab.t.Helper()
	if p.credential == nil {
		p.tab.t.Fatalf("test bug: %s has registered no passkey", p.tab.name)
	}
	return p.auth.signCount(p.credential)
}

// passkeyButtonJS selects the passkey button of the form whose passkey ceremonies are
// for form (e.g. "activate:ops", "decide:ID", "register").
func passkeyButtonJS(form string) string {
	return `[data-passkey-form=` + jsString(form) + `] [data-passkey]`
}

// pressPasskey presses the one button that sel (a CSS selector) finds, once the page's
// script has shown it, and waits for the page its form loads after the authenticator
// answered; it returns that page's HTTP status. When no page loads, the test fails
// with what the script wrote on the button's status line.
func (b *chromeTab) pressPasskey(sel string) int64 {
	b.t.Helper()
	if n := chromeEval[int](b, "counting the buttons "+sel, `document.querySelectorAll(`+jsString(sel)+`).length`); n != 1 {
		b.t.Fatalf("%s on %s: %d elements match %s, want 1 button", b.name, b.state().URL, n, sel)
	}
	ctx, cancel := b.step()
	defer cancel()
	resp, err := chromedp.RunResponse(ctx, chromedp.Click(chromedp.JSPath(`document.querySelector(`+jsString(sel)+`)`)))
	if err != nil {
		status, _ := b.tryPasskeyStatus()
		b.t.Fatalf("%s pressing %s on %s: no page loaded (%v); the passkey status line says %q", b.name, sel, b.state().URL, err, status)
	}
	if resp == nil {
		return 0
	}
	return resp.Status
}

// pressPasskeyForNoPage presses the one button that sel finds, as pressPasskey does,
// for a press that loads no page (the server refuses to begin the ceremony): it
// waits until the button's status line reads want, and fails the test if another
// page loads or the line says something else within the step's time.
func (b *chromeTab) pressPasskeyForNoPage(sel, want string) {
	b.t.Helper()
	if n := chromeEval[int](b, "counting the buttons "+sel, `document.querySelectorAll(`+jsString(sel)+`).length`); n != 1 {
		b.t.Fatalf("%s on %s: %d elements match %s, want 1 button", b.name, b.state().URL, n, sel)
	}
	before := b.state().URL
	// A marker on the window: gone if another document loads.
	chromeEval[bool](b, "marking the page", `(window.__jitSamePage = true)`)
	ctx, cancel := b.step()
	defer cancel()
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.JSPath(`document.querySelector(`+jsString(sel)+`)`))); err != nil {
		b.t.Fatalf("%s pressing %s on %s: %v", b.name, sel, before, err)
	}
	type seen struct {
		Status string `json:"status"`
		Same   bool   `json:"same"`
	}
	js := `({status: [...document.querySelectorAll('.passkey-status')].map(p => p.textContent.trim()).filter(Boolean).join(' / '),
	same: window.__jitSamePage === true})`
	var last seen
	for {
		wctx, wcancel := b.step()
		got, err := chromedp.Run(wctx, chromedp.Evaluate[seen](js))
		wcancel()
		if err == nil {
			last = got
			if !got.Same {
				s, _ := b.tryState()
				b.t.Fatalf("%s pressing %s on %s: another page loaded, %s, want the refusal on the same page; it says: %s", b.name, sel, before, s.URL, s.Text)
			}
			if got.Status == want {
				return
			}
		}
		if ctx.Err() != nil {
			b.t.Fatalf("%s pressed %s on %s: within %s the passkey status line says %q, want %q", b.name, sel, before, chromeStepTimeout, last.Status, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// heldPasskeyAnswer is the server's answer to a passkey button's request for
// ceremony options (POST /.jit/passkey), held in the browser at the response stage:
// the server has begun the ceremony, and the page's script does not have it yet.
type heldPasskeyAnswer struct {
	tab     *chromeTab
	request fetch.RequestID
	// Status and Body are the server's answer.
	Status int64
	Body   string
}

// pressPasskeyHeld presses the one button that sel finds with the tab's requests to
// /.jit/passkey held at the response stage (DevTools' Fetch domain), and returns the
// held answer to the button's request; release lets the page go on.
func (b *chromeTab) pressPasskeyHeld(sel string) *heldPasskeyAnswer {
	b.t.Helper()
	if n := chromeEval[int](b, "counting the buttons "+sel, `document.querySelectorAll(`+jsString(sel)+`).length`); n != 1 {
		b.t.Fatalf("%s on %s: %d elements match %s, want 1 button", b.name, b.state().URL, n, sel)
	}
	ctx, cancel := b.step()
	defer cancel()
	if _, err := chromedp.Call(ctx, fetch.Enable, fetch.EnableParams{Patterns: []*fetch.RequestPattern{
		{URLPattern: "*/.jit/passkey", RequestStage: fetch.RequestStageResponse},
	}}); err != nil {
		b.t.Fatalf("%s's tab: holding the answers of /.jit/passkey: %v", b.name, err)
	}
	ev, err := chromedp.Run(ctx, chromedp.WaitEvent(fetch.RequestPaused, func(ev fetch.EventRequestPaused) bool {
		return strings.HasSuffix(ev.Request.URL, "/.jit/passkey")
	}, chromedp.Click(chromedp.JSPath(`document.querySelector(`+jsString(sel)+`)`))))
	if err != nil {
		status, _ := b.tryPasskeyStatus()
		b.t.Fatalf("%s pressing %s: the page asked for no passkey ceremony (%v); the passkey status line says %q", b.name, sel, err, status)
	}
	h := &heldPasskeyAnswer{tab: b, request: ev.RequestID, Status: ev.ResponseStatusCode}
	body, err := chromedp.Call(ctx, fetch.GetResponseBody, fetch.GetResponseBodyParams{RequestID: ev.RequestID})
	if err != nil {
		b.t.Fatalf("%s's tab: reading the held answer of /.jit/passkey: %v", b.name, err)
	}
	h.Body = string(body.Body) // decoded from base64 by cdproto where the browser sent it so
	return h
}

// allowedCredentials are the credential ids (base64url) the held options offer.
func (h *heldPasskeyAnswer) allowedCredentials() []string {
	h.tab.t.Helper()
	var answer struct {
		Options struct {
			PublicKey struct {
				AllowCredentials []struct {
					ID string `json:"id"`
				} `json:"allowCredentials"`
			} `json:"publicKey"`
		} `json:"options"`
	}
	if err := json.Unmarshal([]byte(h.Body), &answer); err != nil {
		h.tab.t.Fatalf("the answer of /.jit/passkey is not the options' JSON: %v: %s", err, h.Body)
	}
	var ids []string
	for _, c := range answer.Options.PublicKey.AllowCredentials {
		ids = append(ids, c.ID)
	}
	return ids
}

// release hands the held answer to the page, stops holding, and waits for the page
// the form then loads (the script has the authenticator answer and sends the form);
// it returns that page's HTTP status.
func (h *heldPasskeyAnswer) release() int64 {
	b := h.tab
	b.t.Helper()
	ctx, cancel := b.step()
	defer cancel()
	resp, err := chromedp.RunResponse(ctx, chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		_, err := cdp.Call(ctx, t, fetch.ContinueResponse, fetch.ContinueResponseParams{RequestID: h.request})
		return err
	}))
	if _, derr := chromedp.Call(ctx, fetch.Disable, cdp.Empty{}); derr != nil && err == nil {
		b.t.Errorf("%s's tab: no longer holding the answers of /.jit/passkey: %v", b.name, derr)
	}
	if err != nil {
		status, _ := b.tryPasskeyStatus()
		b.t.Fatalf("%s: after the held answer was released, no page loaded (%v); the passkey status line says %q", b.name, err, status)
	}
	if resp == nil {
		return 0
	}
	return resp.Status
}

// tryPasskeyStatus reads the passkey status lines of the page, joined.
func (b *chromeTab) tryPasskeyStatus() (string, error) {
	ctx, cancel := b.step()
	defer cancel()
	return chromedp.Run(ctx, chromedp.Evaluate[string](
		`[...document.querySelectorAll('.passkey-status')].map(p => p.textContent.trim()).filter(Boolean).join(' / ')`))
}

// activateWithPasskey fills the justification of the activation page the tab shows and
// presses "Use a passkey"; it returns the HTTP status of the page it ends on.
func (b *chromeTab) activateWithPasskey(role, justification string) int64 {
	b.t.Helper()
	b.typeInto("Justification", justification)
	return b.pressPasskey(passkeyButtonJS("activate:" + role))
}

// wantNoUpstreamPage is wantNoUpstream for a browser test: Chromium asks for
// /favicon.ico after a page loads, at a time of its choosing, and under a session
// that request reaches the upstream; it is not a page the test opened.
func wantNoUpstreamPage(t *testing.T, u *upstream, before int, what string) {
	t.Helper()
	var got []upstreamRequest
	for _, r := range u.requests()[before:] {
		if r.Path != "/favicon.ico" {
			got = append(got, r)
		}
	}
	if len(got) > 0 {
		t.Errorf("%s: the upstream was reached %d time(s), want never; it got: %+v", what, len(got), got)
	}
}

// listedPasskey is a passkey as the admin API lists it (GET /jit/credentials/{user}).
type listedPasskey struct {
	ID       string     `json:"id"`
	Name     string     `json:"name"`
	RPID     string     `json:"rp_id"`
	LastUsed *time.Time `json:"last_used"`
}

// passkeysOf lists the user's passkeys through the admin API.
func (e *env) passkeysOf(user string) []listedPasskey {
	e.t.Helper()
	var out []listedPasskey
	e.adminOK(http.MethodGet, "/jit/credentials/"+url.PathEscape(user), &out)
	return out
}

// removePasskey removes the user's passkey id through the admin API, as the
// operator by, for reason; it returns how many passkeys the user has left.
func (e *env) removePasskey(user, id, by, reason string) int {
	e.t.Helper()
	var out struct {
		User      string        `json:"user"`
		Removed   listedPasskey `json:"removed"`
		Remaining int           `json:"remaining"`
	}
	e.adminOK(http.MethodDelete, "/jit/credentials/"+url.PathEscape(user)+"/"+url.PathEscape(id)+
		"?by="+url.QueryEscape(by)+"&reason="+url.QueryEscape(reason), &out)
	if out.User != user || out.Removed.ID != id {
		e.t.Errorf("DELETE /jit/credentials/%s/%s answered %+v, want that passkey of %s removed", user, id, out, user)
	}
	return out.Remaining
}

// withoutScripts stops the tab's pages from running scripts, from the next page on:
// what a person with JavaScript off sees.
func (b *chromeTab) withoutScripts() {
	b.t.Helper()
	ctx, cancel := b.step()
	defer cancel()
	if _, err := chromedp.Call(ctx, emulation.SetScriptExecutionDisabled, emulation.SetScriptExecutionDisabledParams{Value: true}); err != nil {
		b.t.Fatalf("%s's tab: disabling scripts: %v", b.name, err)
	}
}

// passkeyButtonVisible reports whether the page shows the passkey button of form, as
// rendered: a hidden attribute that a stylesheet overrides still shows the button.
func (b *chromeTab) passkeyButtonVisible(form string) bool {
	b.t.Helper()
	return chromeEval[bool](b, "looking for the passkey button of "+form, `(() => {
	const el = document.querySelector(`+jsString(passkeyButtonJS(form))+`);
	return !!el && el.getClientRects().length > 0 && getComputedStyle(el).visibility !== 'hidden';
})()`)
}

// docShots renders pages for the documentation as TestBrowserPagesScreenshots does:
// each page checked for its readers at desktop (1200 px) and phone (390 px) width and,
// with JIT_SCREENSHOTS=DIR, saved as DIR/NAME.png and DIR/NAME-phone.png.
type docShots struct {
	t     *testing.T
	dir   string
	saved []string
}

func newDocShots(t *testing.T) *docShots {
	t.Helper()
	d := &docShots{t: t, dir: os.Getenv("JIT_SCREENSHOTS")}
	if d.dir != "" {
		if err := os.MkdirAll(d.dir, 0o755); err != nil {
			t.Fatalf("JIT_SCREENSHOTS=%s: %v", d.dir, err)
		}
	}
	return d
}

// render checks the page the tab shows at both widths and saves it when asked.
func (d *docShots) render(tb *chromeTab, name string) pageFacts {
	d.t.Helper()
	tb.viewport(1200, 800, false, 1)
	f := tb.wantAccessible(name + " page")
	if d.dir != "" {
		d.saved = append(d.saved, saveShot(d.t, tb, filepath.Join(d.dir, name+".png")))
	}
	tb.viewport(390, 844, true, 2)
	tb.wantNoSidewaysScroll(name + " page at 390 px")
	if d.dir != "" {
		d.saved = append(d.saved, saveShot(d.t, tb, filepath.Join(d.dir, name+"-phone.png")))
	}
	tb.viewport(1200, 800, false, 1)
	return f
}

// report logs the screenshots saved.
func (d *docShots) report() {
	if len(d.saved) > 0 {
		d.t.Logf("screenshots: %s", strings.Join(d.saved, ", "))
	}
}
