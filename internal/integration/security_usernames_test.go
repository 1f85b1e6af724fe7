package integration

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"slices"
	"testing"
)

// ---------------------------------------------------------------------------
// Class 11 (user names): one person, one name. Behind an identity source that logs
// users in case-insensitively, "ALICE" is alice: she must not approve her own request
// as ALICE, bob and Bob are one approver, a lockout of Carol locks carol, alice's
// eligibility covers Alice, and her token works whichever way she typed her name.
// Names are also compared in Unicode NFC whatever the option: "zoë" typed as one code
// point or as "e" and a combining diaeresis is one person.
//
// The identity is the test-only header of Classes 8 and 10 (X-Test-User), the groups
// a second one (X-Test-Groups), so that a test can send any spelling a real identity
// provider may pass along.

// userNamesOption declares the identity source case-insensitive. The run against the
// code before the fix, which knows no such option, removes this one line.
const userNamesOption = "user_names case_insensitive"

// userNamesRoles: deploy needs one approver from group ops, release two; ops-notes
// needs none (its form gives any member of ops a CSRF token, and its sessions are
// the ones the site admits); audit is for group auditors.
const userNamesRoles = `
		groups {http.request.header.X-Test-Groups}
		lockout {
			max_failures 3
			duration 10m
		}
		role deploy {
			max_duration 1h
			justification optional
			eligible alice zoe` + "\u0308" + ` dave
			approval {
				approvers group:ops
			}
		}
		role release {
			max_duration 1h
			justification optional
			eligible dave
			approval {
				approvers group:ops
				count 2
			}
		}
		role ops-notes {
			max_duration 1h
			justification optional
			eligible group:ops
		}
		role audit {
			max_duration 1h
			justification optional
			eligible group:auditors
		}`

func newUserNamesEnv(t *testing.T, option string) *env {
	t.Helper()
	return newEnv(t, envOptions{
		JitOptions: headerIdentityOptions + "\n\t\t" + option + userNamesRoles,
		Sites:      []siteSpec{{Auth: false, Jit: "\tjit ops-notes deploy"}},
	})
}

// nameUser is a browser whose identity arrives spelled exactly as user, with groups
// (comma-separated) when not empty.
func (e *env) nameUser(user, groups string) *browser {
	b := e.headerUser(user)
	if groups != "" {
		b.headers["X-Test-Groups"] = []string{groups}
	}
	return b
}

// enrollSpelled enrolls a name through the admin API as an operator would type it
// and returns its secret, carrying on from the steps of same (the account the name
// may be another spelling of), and the user the answer names.
func (e *env) enrollSpelled(name string, same *totpUser) (*totpUser, string) {
	t := e.t
	t.Helper()
	resp, err := http.Post(e.adminURL("/jit/enrollments/"+url.PathEscape(name)), "application/json", nil)
	if err != nil {
		t.Fatalf("enrolling %+q: %v", name, err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var out struct {
		User       string `json:"user"`
		OTPAuthURI string `json:"otpauth_uri"`
	}
	if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &out) != nil {
		t.Fatalf("enrolling %+q: POST /jit/enrollments → %d %s", name, resp.StatusCode, body)
	}
	u, err := url.Parse(out.OTPAuthURI)
	if err != nil || u.Query().Get("secret") == "" {
		t.Fatalf("enrolling %+q: no secret in %q", name, out.OTPAuthURI)
	}
	tu := &totpUser{name: name, secret: u.Query().Get("secret")}
	if same != nil {
		// A code is accepted once per account: the next one comes after same's.
		tu.lastStep = same.lastStep
	}
	return tu, out.User
}

func TestSecurityClass11UserNameFormsCaseInsensitive(t *testing.T) {
	e := newUserNamesEnv(t, userNamesOption)
	site := e.site(0)

	// 1. alice's eligibility covers Alice; group auditors covers a member sent as
	// AUDITORS.
	wantActivationRedirect(t, e.nameUser("Alice", "").get(site+adminURI), "deploy", adminURI)
	wantStatus(t, e.nameUser("Alice", "").get(site+activationPath("deploy", "/")), http.StatusOK, "Alice opening deploy's activation page")
	wantStatus(t, e.nameUser("erin", "AUDITORS").get(site+activationPath("audit", "/")), http.StatusOK, "erin of group AUDITORS opening audit's activation page")

	// 2. "ALICE" approving alice's own request is self-approval.
	alice := e.enroll("alice")
	id := wfRequestID(t, e.nameUser("alice", "ops").activate(site, "deploy", "/", alice.next(t), nil), "alice's request for deploy")
	aliceUpper, enrolled := e.enrollSpelled("ALICE", alice)
	if enrolled != "alice" {
		t.Errorf("POST /jit/enrollments/ALICE enrolled %q, want alice (one person, one name)", enrolled)
	}
	upper := e.nameUser("ALICE", "ops")
	r := upper.decide(site, url.Values{"request": {id}, "csrf": {upper.csrfFor(site, "ops-notes")}}, "approve", "", aliceUpper.next(t))
	wantStatus(t, r, http.StatusForbidden, "ALICE approving alice's request")
	e.waitEvent(match{"event": "approval_failed", "request_id": id, "by": "alice", "reason": "self_approval"})
	if evs := e.events(match{"event": "request_approved", "request_id": id}); len(evs) != 0 {
		t.Errorf("ALICE's approval of alice's own request was recorded: %v", evs)
	}

	// 3. bob, then Bob: one approver, so a request that needs two still waits.
	dave := e.enroll("dave")
	id2 := wfRequestID(t, e.nameUser("dave", "").activate(site, "release", "/", dave.next(t), nil), "dave's request for release")
	bob := e.enroll("bob")
	lower := e.nameUser("bob", "ops")
	form := lower.approvalForm(site, id2)
	if form == nil {
		t.Fatalf("bob's /.jit/approvals does not list dave's request %s", id2)
	}
	wantStatus(t, lower.decide(site, form, "approve", "", bob.next(t)), http.StatusOK, "bob approving dave's request")
	bobUpper, _ := e.enrollSpelled("Bob", bob)
	capital := e.nameUser("Bob", "ops")
	r = capital.decide(site, url.Values{"request": {id2}, "csrf": {capital.csrfFor(site, "ops-notes")}}, "approve", "", bobUpper.next(t))
	wantStatus(t, r, http.StatusConflict, "Bob approving dave's request after bob")
	e.waitEvent(match{"event": "approval_failed", "request_id": id2, "by": "bob", "reason": "already_decided"})
	if evs := e.events(match{"event": "request_approved", "request_id": id2}); len(evs) != 1 {
		t.Errorf("bob and Bob made %d approvals of dave's request, want 1: %v", len(evs), evs)
	}

	// 4. Wrong codes typed as Carol lock carol.
	carol := e.enroll("carol")
	for i := range 3 {
		r := e.nameUser("Carol", "ops").activate(site, "ops-notes", "/", carol.wrong(t), nil)
		if r.StatusCode == http.StatusSeeOther {
			t.Fatalf("wrong code %d as Carol was accepted: %s", i+1, r)
		}
	}
	r = e.nameUser("carol", "ops").activate(site, "ops-notes", "/", carol.next(t), nil)
	wantStatus(t, r, http.StatusTooManyRequests, "carol's right code after three wrong ones as Carol")
	e.waitEvent(match{"event": "activation_failed", "user": "carol", "reason": "locked_out"})
	// The operator clears the lockout in any spelling.
	var unlocked map[string]string
	e.adminOK(http.MethodPost, "/jit/lockouts/CAROL/clear", &unlocked)
	if unlocked["user"] != "carol" {
		t.Errorf("POST /jit/lockouts/CAROL/clear answered %v, want user carol", unlocked)
	}
	wantStatus(t, e.nameUser("carol", "ops").activate(site, "ops-notes", "/", carol.next(t), nil), http.StatusSeeOther, "carol after the lockout of CAROL was cleared")

	// 5. frank's token works for FRANK (the token's subject is the canonical name), and
	// the upstream is told frank.
	frank := e.enroll("frank")
	token := e.nameUser("frank", "ops").mustActivate(site, "ops-notes", adminURI, frank, nil)
	shouting := e.nameUser("FRANK", "ops")
	shouting.setCookie(site, cookieName, token)
	before := e.up.count()
	if r := shouting.get(site + adminURI); wantStatus(t, r, http.StatusOK, "FRANK with frank's session") && e.up.count() > before {
		if got := e.up.last(t).Header.Values("X-Jit-User"); !slices.Equal(got, []string{"frank"}) {
			t.Errorf("the upstream was told X-Jit-User %q, want [frank]", got)
		}
	}
	if s := e.sessions("?user=FRANK"); len(s) != 1 || s[0].User != "frank" {
		t.Errorf("GET /jit/sessions?user=FRANK listed %+v, want frank's one session", s)
	}
}

// NFC applies whatever user_names says: the Caddyfile names zoë in NFD (e, combining
// diaeresis), the identity source may send either form.
func TestSecurityClass11UserNameFormsUnicodeNormalisation(t *testing.T) {
	const nfd, nfc = "zoe\u0308", "zo\u00eb"
	e := newUserNamesEnv(t, "")
	site := e.site(0)

	// The Caddyfile's NFD name covers the NFC identity.
	wantStatus(t, e.nameUser(nfc, "").get(site+activationPath("deploy", "/")), http.StatusOK, "zoë (NFC) opening deploy's activation page")

	decomposed, _ := e.enrollSpelled(nfd, nil)
	id := wfRequestID(t, e.nameUser(nfd, "ops").activate(site, "deploy", "/", decomposed.next(t), nil), "zoë's request (NFD) for deploy")
	composed, enrolled := e.enrollSpelled(nfc, decomposed)
	if enrolled != nfc {
		t.Errorf("POST /jit/enrollments/%+q enrolled %+q, want the NFC form", nfc, enrolled)
	}
	b := e.nameUser(nfc, "ops")
	r := b.decide(site, url.Values{"request": {id}, "csrf": {b.csrfFor(site, "ops-notes")}}, "approve", "", composed.next(t))
	wantStatus(t, r, http.StatusForbidden, "zoë (NFC) approving zoë's (NFD) request")
	e.waitEvent(match{"event": "approval_failed", "request_id": id, "by": nfc, "reason": "self_approval"})
	if evs := e.events(match{"event": "request_approved", "request_id": id}); len(evs) != 0 {
		t.Errorf("zoë's approval of her own request was recorded: %v", evs)
	}

	// The default is case-sensitive: Alice is not alice, ZOË not zoë.
	for _, other := range []string{"Alice", "ZO\u00cb"} {
		r := e.nameUser(other, "").get(site + activationPath("deploy", "/"))
		wantStatus(t, r, http.StatusForbidden, other+" opening deploy's activation page under case_sensitive names")
	}
}
