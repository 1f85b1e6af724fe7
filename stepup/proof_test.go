package stepup

import (
	"context"
	"errors"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/caddy-jit/caddy-jit/internal/testkit"
	"github.com/caddy-jit/caddy-jit/policy"
)

func TestProveNamesTheMethodAndKeepsToTheRolesStepUp(t *testing.T) {
	ctx := context.Background()
	f := newPasskeyFixture(t)
	key := testkit.NewSoftKey(t, adminOrigin)
	f.register(t, "alice", key)
	synced := testkit.NewSoftKey(t, adminOrigin)
	synced.Synced = true
	f.register(t, "alice", synced)
	var proofWith func(*testkit.SoftKey, string) Proof
	passkeyProof := func(form string) Proof {
		return proofWith(key, form)
	}
	proofWith = func(key *testkit.SoftKey, form string) Proof {
		site := Site{Origin: adminOrigin, Form: form}
		options, id, err := f.p.BeginLogin(ctx, "alice", site)
		if err != nil {
			t.Fatal(err)
		}
		return Proof{Passkey: &PasskeyProof{Site: site, Ceremony: id, Response: key.Get(options)}}
	}

	proved, err := f.a.Prove(ctx, "alice", passkeyProof("activate:db"), policy.StepUpWebAuthn)
	if err != nil || !slices.Equal(proved.Methods, []string{MethodHWK}) || proved.Passkey == nil {
		t.Fatalf("a device-bound passkey: Prove = %+v, %v; want amr [hwk]", proved, err)
	}
	if proved, err = f.a.Prove(ctx, "alice", proofWith(synced, "activate:db"), policy.StepUpAny); err != nil || !slices.Equal(proved.Methods, []string{MethodSWK}) {
		t.Fatalf("a synced passkey: Prove = %+v, %v; want amr [swk]", proved, err)
	}
	if proved, err = f.a.Prove(ctx, "alice", Proof{Code: f.activation(t)}, policy.StepUpAny); err != nil || !slices.Equal(proved.Methods, []string{MethodOTP}) {
		t.Fatalf("a code: Prove = %+v, %v; want amr [otp]", proved, err)
	}

	// A method the role does not accept is refused before it is checked: the code
	// stays unspent, the ceremony open.
	f.clock.Add(30 * time.Second)
	code := f.activation(t)
	var refused *StepUpRefused
	if _, err := f.a.Prove(ctx, "alice", Proof{Code: code}, policy.StepUpWebAuthn); !errors.As(err, &refused) || refused.Decision.Reason != policy.ReasonPasskeyRequired {
		t.Fatalf("a code for a webauthn role: %v, want passkey_required", err)
	}
	unspent := passkeyProof("activate:db")
	if _, err := f.a.Prove(ctx, "alice", unspent, policy.StepUpTOTP); !errors.As(err, &refused) || refused.Decision.Reason != policy.ReasonCodeRequired {
		t.Fatalf("a passkey for a totp role: %v, want totp_required", err)
	}
	if _, err := f.a.Prove(ctx, "alice", Proof{Code: code}, policy.StepUpTOTP); err != nil {
		t.Errorf("the code refused for the wrong method was spent: %v", err)
	}
	if _, err := f.a.Prove(ctx, "alice", unspent, policy.StepUpAny); err != nil {
		t.Errorf("the ceremony refused for the wrong method was spent: %v", err)
	}
}

func TestPasskeyMadeForOneFormIsRefusedOnAnother(t *testing.T) {
	ctx := context.Background()
	f := newPasskeyFixture(t)
	key := testkit.NewSoftKey(t, adminOrigin)
	f.register(t, "alice", key)
	approve := Site{Origin: adminOrigin, Form: "decide:R1"}
	options, id, err := f.p.BeginLogin(ctx, "alice", approve)
	if err != nil {
		t.Fatal(err)
	}
	before := passkeySnapshot(t, f.st)
	_, err = f.p.FinishLogin(ctx, "alice", Site{Origin: adminOrigin, Form: "activate:db"}, id, key.Get(options))
	if !errors.Is(err, ErrPasskeyWrongForm) {
		t.Fatalf("an assertion for the approval spent on an activation: %v, want %v", err, ErrPasskeyWrongForm)
	}
	if after := passkeySnapshot(t, f.st); !maps.Equal(before, after) {
		t.Error("the refusal changed the stored passkeys")
	}
	if _, err := f.p.FinishLogin(ctx, "alice", approve, id, key.Get(options)); !errors.Is(err, ErrPasskeyCeremonyUnknown) {
		t.Errorf("the ceremony was not spent by the refused attempt: %v", err)
	}
}

func TestPasskeysWithoutOriginsFollowTheSite(t *testing.T) {
	ctx := context.Background()
	f := newAuthorityFixture(t)
	p, err := NewPasskeys(f.a, PasskeyConfig{RPDisplayName: "caddy-jit test"})
	if err != nil {
		t.Fatal(err)
	}
	if f.a.Passkeys() != p {
		t.Fatal("the authenticator does not know its passkeys")
	}
	local := Site{Origin: "http://localhost:8443"}
	if !p.Usable(local) {
		t.Fatal("a site at localhost cannot use passkeys without a configured RP ID")
	}
	key := testkit.NewSoftKey(t, local.Origin)
	options, id, err := p.BeginRegistration(ctx, "alice", local)
	if err != nil {
		t.Fatal(err)
	}
	pk, err := p.FinishRegistration(ctx, "alice", local, id, "key", key.Create(options))
	if err != nil || pk.RPID != "localhost" {
		t.Fatalf("registration at localhost: %+v, %v; want RP ID localhost", pk, err)
	}
	for site, want := range map[Site]bool{local: true, {Origin: "http://127.0.0.1:8443"}: false} {
		if got, err := p.Registered(ctx, "alice", site); got != want || err != nil {
			t.Errorf("Registered at %s = %v, %v; want %v", site.Origin, got, err, want)
		}
	}
	if p.Usable(Site{Origin: "http://localhost:8443", RPID: "example.com"}) {
		t.Error("an RP ID that does not cover the origin is usable")
	}
}

func TestPasskeyBegunInOneBrowserIsRefusedInAnother(t *testing.T) {
	ctx := context.Background()
	f := newPasskeyFixture(t)
	key := testkit.NewSoftKey(t, adminOrigin)
	f.register(t, "alice", key)
	mine := Site{Origin: adminOrigin, Form: "activate:db", Browser: "binding-of-the-first-browser"}
	for _, other := range []string{"binding-of-another-browser", ""} {
		options, id, err := f.p.BeginLogin(ctx, "alice", mine)
		if err != nil {
			t.Fatal(err)
		}
		elsewhere := mine
		elsewhere.Browser = other
		if _, err := f.p.FinishLogin(ctx, "alice", elsewhere, id, key.Get(options)); !errors.Is(err, ErrPasskeyOtherBrowser) {
			t.Errorf("finished with the binding %q: %v, want %v", other, err, ErrPasskeyOtherBrowser)
		}
	}
	options, id, err := f.p.BeginLogin(ctx, "alice", mine)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.p.FinishLogin(ctx, "alice", mine, id, key.Get(options)); err != nil {
		t.Errorf("finished in the browser that began it: %v", err)
	}
}
