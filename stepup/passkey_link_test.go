package stepup

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/caddy-jit/caddy-jit/audit"
	"github.com/caddy-jit/caddy-jit/internal/testkit"
)

// bob has nothing enrolled; his link lets the browser that opened it register his
// first passkey, once.
func TestPasskeyByEnrollmentLink(t *testing.T) {
	ctx := context.Background()
	f := newPasskeyFixture(t)
	token, _ := f.createLink(t, "bob", time.Hour)
	opened := f.pending(t, token, "bob")
	lr := LinkRegistration{Token: token, User: "bob", Browser: opened.Browser, Site: adminSite, ClientIP: "192.0.2.7"}
	key := testkit.NewSoftKey(t, adminOrigin)

	// Refused before any ceremony: another browser, another user, a user with an
	// authenticator already (alice).
	other := f.pending(t, token, "bob") // the link opened again elsewhere: the first browser's binding is gone
	if _, _, err := f.p.BeginLinkRegistration(ctx, lr); !errors.Is(err, ErrEnrollLinkOtherBrowser) {
		t.Fatalf("the browser of an earlier opening: %v, want %v", err, ErrEnrollLinkOtherBrowser)
	}
	lr.Browser = other.Browser
	if _, _, err := f.p.BeginLinkRegistration(ctx, LinkRegistration{Token: token, User: "alice", Browser: other.Browser, Site: adminSite}); !errors.Is(err, ErrEnrollLinkNotYours) {
		t.Fatalf("alice with bob's link: %v, want %v", err, ErrEnrollLinkNotYours)
	}
	aliceToken, _ := f.createLink(t, "alice", time.Hour)
	aliceOpened := f.pending(t, aliceToken, "alice")
	if _, _, err := f.p.BeginLinkRegistration(ctx, LinkRegistration{Token: aliceToken, User: "alice", Browser: aliceOpened.Browser, Site: adminSite}); !errors.Is(err, ErrEnrollLinkHasEnrollment) {
		t.Fatalf("alice, enrolled for TOTP: %v, want %v", err, ErrEnrollLinkHasEnrollment)
	}

	// A ceremony of the link cannot be finished as a code-proven registration (another
	// form), nor with another link's binding.
	options, id, err := f.p.BeginLinkRegistration(ctx, lr)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.p.FinishRegistration(ctx, "bob", adminSite, id, "key", key.Create(options)); !errors.Is(err, ErrPasskeyWrongForm) {
		t.Fatalf("the link's ceremony finished as a plain registration: %v, want %v", err, ErrPasskeyWrongForm)
	}
	if got := passkeySnapshot(t, f.st); len(got) != 1 { // bob's handle only
		t.Fatalf("a refused registration stored %d records", len(got))
	}

	options, id, err = f.p.BeginLinkRegistration(ctx, lr)
	if err != nil {
		t.Fatal(err)
	}
	pk, err := f.p.FinishLinkRegistration(ctx, lr, id, "yubikey", key.Create(options))
	if err != nil || pk.Name != "yubikey" {
		t.Fatalf("FinishLinkRegistration = %+v, %v", pk, err)
	}
	if ok, _ := f.p.Registered(ctx, "bob", adminSite); !ok {
		t.Fatal("bob has no passkey after the link")
	}
	evs := events(f.logs, audit.EventEnrolled)
	if got := ownFields(evs[len(evs)-1]); got["user"] != "bob" || got["method"] != "passkey" || got["via"] != "link" || got["credential_id"] != pk.ID {
		t.Errorf("enrolled = %v", got)
	}
	// The link is used up: neither a passkey nor a TOTP confirmation can follow.
	if _, _, err := f.p.BeginLinkRegistration(ctx, lr); !errors.Is(err, ErrEnrollLinkUsed) {
		t.Errorf("the used link again: %v, want %v", err, ErrEnrollLinkUsed)
	}
	if _, err := f.a.OpenEnrollmentLink(ctx, token, "bob", ""); !errors.Is(err, ErrEnrollLinkUsed) {
		t.Errorf("opening the used link: %v, want %v", err, ErrEnrollLinkUsed)
	}
	failed := events(f.logs, audit.EventEnrollLinkFailed)
	reasons := map[any]bool{}
	for _, e := range failed {
		reasons[ownFields(e)["reason"]] = true
	}
	for _, want := range []string{"enroll_link_other_browser", "enroll_link_not_yours", "enroll_link_not_first", "enroll_link_used"} {
		if !reasons[want] {
			t.Errorf("no enroll_link_failed with reason %s among %v", want, reasons)
		}
	}
}
