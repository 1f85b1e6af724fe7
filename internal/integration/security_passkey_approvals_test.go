package integration

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/caddy-jit/caddy-jit/internal/testkit"
)

// Security class 11 for passkeys, the approvals: see security_passkey_test.go.

// Approvers prove presence with their own passkey, and each decision's ceremony is
// bound to its request: bob cannot approve with a code, with alice's assertion or
// her passkey, with an assertion made for another request or for an activation, and
// his spent ceremony is no good for another request. Then he approves both requests,
// each with its own ceremony, and only alice's asking browser gets her session.
func TestSecurityClass11PasskeyApprovals(t *testing.T) {
	s := newPasskeyScene(t)
	e, site, bob := s.e, s.site, s.bobs
	erin, eb, erinKey := e.enroll("erin"), e.browser("erin"), testkit.NewSoftKey(t, site)
	eb.registerSoftKey(site, erin, erinKey, "erin's key")

	ask := func(b *browser, key *testkit.SoftKey) string {
		a := b.beginActivation(site, "deploy", adminURI)
		return wfRequestID(t, b.postForm(site+"/.jit/activate", a.answered(key.Get(a.Ceremony.Options))), b.user+"'s request")
	}
	x, y := ask(s.first, s.aliceKey), ask(eb, erinKey)
	approvalFailed := func(by, id, reason string) match {
		return match{"event": "approval_failed", "by": by, "request_id": id, "reason": reason}
	}
	// decision is bob's approval form of request id, without a proof.
	decision := func(id string) url.Values {
		f := bob.approvalForm(site, id)
		if f == nil {
			t.Fatalf("bob's approvals page does not list request %s", id)
		}
		f.Set("decision", "approve")
		f.Del("code")
		return f
	}
	var spent url.Values // bob's approval of x, as he sent it
	bobCode := s.bob.next(t)

	tests := []struct {
		name    string
		attempt func(t *testing.T) (b *browser, path string, form url.Values)
		want    refusal
	}{
		{
			name: "bob approves with a code",
			attempt: func(t *testing.T) (*browser, string, url.Values) {
				f := decision(x)
				f.Set("code", bobCode)
				return bob, "/.jit/approvals", f
			},
			want: refusal{status: http.StatusBadRequest, says: saysNeedsPasskey, failed: approvalFailed("bob", x, "passkey_required")},
		},
		{
			name: "bob sends alice's assertion, made in her ceremony for deciding her own request",
			attempt: func(t *testing.T) (*browser, string, url.Values) {
				c := s.first.mustBeginLogin(site, s.first.csrfOf(site), "decide:"+x)
				return bob, "/.jit/approvals", withPasskey(decision(x), c.Ceremony, s.aliceKey.Get(c.Options))
			},
			want: refusal{status: http.StatusBadRequest, says: saysExpiredOrUsed, failed: approvalFailed("bob", x, "passkey_ceremony_unknown"),
				passkey: "passkey_ceremony_unknown"},
		},
		{
			name: "alice approves her own request with her passkey",
			attempt: func(t *testing.T) (*browser, string, url.Values) {
				c := s.first.mustBeginLogin(site, s.first.csrfOf(site), "decide:"+x)
				f := url.Values{"request": {x}, "decision": {"approve"}, "csrf": {s.first.csrfOf(site)}}
				return s.first, "/.jit/approvals", withPasskey(f, c.Ceremony, s.aliceKey.Get(c.Options))
			},
			want: refusal{status: http.StatusForbidden, says: "No one can approve their own request", failed: approvalFailed("alice", x, "self_approval")},
		},
		{
			name: "bob's ceremony, answered by alice's passkey",
			attempt: func(t *testing.T) (*browser, string, url.Values) {
				f, c := bob.beginDecision(site, x, "approve")
				return bob, "/.jit/approvals", withPasskey(f, c.Ceremony, s.aliceKey.Get(c.Options))
			},
			want: refusal{status: http.StatusBadRequest, says: saysNotYours, failed: approvalFailed("bob", x, "passkey_unknown_credential"),
				passkey: "passkey_unknown_credential"},
		},
		{
			name: "bob's assertion for request X, spent on request Y",
			attempt: func(t *testing.T) (*browser, string, url.Values) {
				_, c := bob.beginDecision(site, x, "approve")
				return bob, "/.jit/approvals", withPasskey(decision(y), c.Ceremony, s.bobKey.Get(c.Options))
			},
			want: refusal{status: http.StatusBadRequest, says: saysPressAgain, failed: approvalFailed("bob", y, "passkey_wrong_form"),
				passkey: "passkey_wrong_form"},
		},
		{
			name: "bob's assertion for activating ops, spent on approving X",
			attempt: func(t *testing.T) (*browser, string, url.Values) {
				a := bob.beginActivation(site, "ops", adminURI)
				return bob, "/.jit/approvals", withPasskey(decision(x), a.Ceremony.Ceremony, s.bobKey.Get(a.Ceremony.Options))
			},
			want: refusal{status: http.StatusBadRequest, says: saysPressAgain, failed: approvalFailed("bob", x, "passkey_wrong_form"),
				passkey: "passkey_wrong_form"},
		},
		{
			name: "bob's assertion for approving X, spent on activating ops",
			attempt: func(t *testing.T) (*browser, string, url.Values) {
				_, c := bob.beginDecision(site, x, "approve")
				return bob, "/.jit/activate", withPasskey(proofless(bob, site, "ops"), c.Ceremony, s.bobKey.Get(c.Options))
			},
			want: refusal{status: http.StatusBadRequest, says: saysPressAgain, failed: activationFailed("bob", "ops", "passkey_wrong_form"),
				passkey: "passkey_wrong_form"},
		},
		{
			name: "bob's spent decide:X ceremony, reused for request Y",
			attempt: func(t *testing.T) (*browser, string, url.Values) {
				f, c := bob.beginDecision(site, x, "approve")
				spent = withPasskey(f, c.Ceremony, s.bobKey.Get(c.Options))
				r := bob.postForm(site+"/.jit/approvals", spent)
				if !wantStatus(t, r, http.StatusOK, "bob approving X") || !strings.Contains(pageText(t, r.Body), "You approved alice's request for deploy (1 of 1).") {
					t.Fatalf("bob's approval of X was not recorded: %s", r)
				}
				f = withPasskey(decision(y), spent.Get("passkey_ceremony"), []byte(spent.Get("passkey_response")))
				return bob, "/.jit/approvals", f
			},
			want: refusal{status: http.StatusBadRequest, says: saysExpiredOrUsed, failed: approvalFailed("bob", y, "passkey_ceremony_unknown"),
				passkey: "passkey_ceremony_unknown"},
		},
		{
			name: "bob's spent approval of X, replayed on X",
			attempt: func(t *testing.T) (*browser, string, url.Values) {
				return bob, "/.jit/approvals", spent
			},
			want: refusal{status: http.StatusConflict, says: "This request is no longer pending", failed: approvalFailed("bob", x, "already_decided")},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, path, form := tt.attempt(t)
			s.wantRefused(t, b, site, path, form, tt.want)
		})
	}
	// The code the approval refused was not spent: it activates a role that takes codes.
	if r := bob.activate(site, "legacy", adminURI, bobCode, nil); wantStatus(t, r, http.StatusSeeOther, "bob's refused code, on legacy") {
		wfSessionCookie(t, r, "bob's refused code, on legacy")
	}
	if ev := e.waitEvent(match{"event": "request_approved", "request_id": x, "by": "bob"}); ev != nil && ev.str("amr") != `["hwk"]` {
		t.Errorf("request_approved of X has amr %s, want [\"hwk\"]: %v", ev.str("amr"), ev)
	}
	if n := e.countEvents(match{"event": "request_approved"}); n != 1 {
		t.Errorf("%d request_approved events, want only bob's approval of X", n)
	}

	// Y waited through all of it; bob approves it with a ceremony of its own.
	f, c := bob.beginDecision(site, y, "approve")
	if r := bob.postForm(site+"/.jit/approvals", withPasskey(f, c.Ceremony, s.bobKey.Get(c.Options))); !wantStatus(t, r, http.StatusOK, "bob approving Y") {
		t.FailNow()
	}
	e.waitEvent(match{"event": "request_approved", "request_id": y, "by": "bob"})

	// Only the browser that asked gets alice's session.
	wantNothingHandedOver(t, e, e.browser("alice"), x, "approved, before the pickup", true)
	before := e.up.count()
	if r := s.first.get(site + adminURI); !wantStatus(t, r, http.StatusOK, "alice's asking browser on the console") || e.up.count() != before+1 {
		t.Errorf("alice's asking browser was not admitted once: %s", r)
	}
}
