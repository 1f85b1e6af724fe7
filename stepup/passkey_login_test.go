package stepup

import (
	"context"
	"errors"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/caddy-jit/caddy-jit/audit"
	"github.com/caddy-jit/caddy-jit/internal/testkit"
	"github.com/caddy-jit/caddy-jit/state"
)

// TestPasskeyLoginRefusals: each refused assertion gives its stable reason, is audited
// as passkey_failed, and changes nothing under jit/passkeys/.
func TestPasskeyLoginRefusals(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name string
		// arrange registers what it needs and returns the ceremony and response to finish.
		arrange func(t *testing.T, f *passkeyFixture, k *testkit.SoftKey) (ceremony string, response []byte)
		site    Site
		want    error
		// wantDetail is part of the error's text, when it matters.
		wantDetail string
	}{
		{name: "replayed challenge", want: ErrPasskeyCeremonyUnknown,
			arrange: func(t *testing.T, f *passkeyFixture, k *testkit.SoftKey) (string, []byte) {
				id, resp := f.beginLogin(t, "alice", k)
				if _, err := f.p.FinishLogin(ctx, "alice", adminSite, id, resp); err != nil {
					t.Fatal(err)
				}
				return id, resp
			}},
		{name: "another user's passkey", want: ErrPasskeyUnknownCredential,
			arrange: func(t *testing.T, f *passkeyFixture, k *testkit.SoftKey) (string, []byte) {
				bobs := testkit.NewSoftKey(t, adminOrigin)
				f.register(t, "bob", bobs)
				options, id, err := f.p.BeginLogin(ctx, "alice", adminSite)
				if err != nil {
					t.Fatal(err)
				}
				return id, bobs.Get(options)
			}},
		{name: "another user's ceremony", want: ErrPasskeyCeremonyUnknown,
			arrange: func(t *testing.T, f *passkeyFixture, k *testkit.SoftKey) (string, []byte) {
				f.register(t, "bob", testkit.NewSoftKey(t, adminOrigin))
				options, id, err := f.p.BeginLogin(ctx, "bob", adminSite)
				if err != nil {
					t.Fatal(err)
				}
				return id, k.Get(options)
			}},
		{name: "wrong origin", want: ErrPasskeyWrongOrigin,
			arrange: func(t *testing.T, f *passkeyFixture, k *testkit.SoftKey) (string, []byte) {
				k.Origin = "https://admin.example.com.phish.test"
				return f.beginLogin(t, "alice", k)
			}},
		{name: "finished at another site", want: ErrPasskeyWrongOrigin, site: Site{Origin: otherOrigin},
			arrange: func(t *testing.T, f *passkeyFixture, k *testkit.SoftKey) (string, []byte) {
				return f.beginLogin(t, "alice", k)
			}},
		{name: "wrong RP ID", want: ErrPasskeyWrongRPID,
			arrange: func(t *testing.T, f *passkeyFixture, k *testkit.SoftKey) (string, []byte) {
				k.RPID = "phish.test"
				return f.beginLogin(t, "alice", k)
			}},
		{name: "user not verified", want: ErrPasskeyUserNotVerified,
			arrange: func(t *testing.T, f *passkeyFixture, k *testkit.SoftKey) (string, []byte) {
				k.Flags = testkit.FlagUP
				return f.beginLogin(t, "alice", k)
			}},
		{name: "counter went backwards", want: ErrPasskeyCounterRegressed,
			arrange: func(t *testing.T, f *passkeyFixture, k *testkit.SoftKey) (string, []byte) {
				k.NextCount(10)
				f.login(t, "alice", k) // stored: 10
				k.NextCount(7)         // a clone that counted less
				return f.beginLogin(t, "alice", k)
			}},
		{name: "counter repeated", want: ErrPasskeyCounterRegressed,
			arrange: func(t *testing.T, f *passkeyFixture, k *testkit.SoftKey) (string, []byte) {
				f.login(t, "alice", k) // stored: 1
				k.FreezeCount(1)
				return f.beginLogin(t, "alice", k)
			}},
		{name: "counter back to zero", want: ErrPasskeyCounterRegressed,
			arrange: func(t *testing.T, f *passkeyFixture, k *testkit.SoftKey) (string, []byte) {
				f.login(t, "alice", k) // stored: 1
				k.FreezeCount(0)
				return f.beginLogin(t, "alice", k)
			}},
		{name: "removed passkey", want: ErrPasskeyUnknownCredential,
			arrange: func(t *testing.T, f *passkeyFixture, k *testkit.SoftKey) (string, []byte) {
				id, resp := f.beginLogin(t, "alice", k)
				if err := f.p.Remove(ctx, "alice", k.ID(), "operator", "lost"); err != nil {
					t.Fatal(err)
				}
				return id, resp
			}},
		{name: "expired challenge", want: ErrPasskeyChallengeExpired,
			arrange: func(t *testing.T, f *passkeyFixture, k *testkit.SoftKey) (string, []byte) {
				id, resp := f.beginLogin(t, "alice", k)
				f.clock.Add(2*time.Minute + time.Second)
				return id, resp
			}},
		{name: "answer to another ceremony", want: ErrPasskeyChallengeMismatch,
			arrange: func(t *testing.T, f *passkeyFixture, k *testkit.SoftKey) (string, []byte) {
				id, _ := f.beginLogin(t, "alice", k)
				_, resp := f.beginLogin(t, "alice", k)
				return id, resp
			}},
		{name: "bad signature", want: ErrPasskeyInvalid,
			arrange: func(t *testing.T, f *passkeyFixture, k *testkit.SoftKey) (string, []byte) {
				other := k.Impostor() // same credential id, another key
				options, id, err := f.p.BeginLogin(ctx, "alice", adminSite)
				if err != nil {
					t.Fatal(err)
				}
				return id, other.Get(options)
			}},
		{name: "a registration's answer", want: ErrPasskeyMalformed,
			arrange: func(t *testing.T, f *passkeyFixture, k *testkit.SoftKey) (string, []byte) {
				options, id, err := f.p.BeginLogin(ctx, "alice", adminSite)
				if err != nil {
					t.Fatal(err)
				}
				return id, k.Create([]byte(strings.Replace(string(options), `"rpId"`, `"rp":{"id":"example.com"},"x"`, 1)))
			}},
		{name: "client data of a registration", want: ErrPasskeyInvalid, wantDetail: "webauthn.create",
			arrange: func(t *testing.T, f *passkeyFixture, k *testkit.SoftKey) (string, []byte) {
				k.GetType = "webauthn.create"
				return f.beginLogin(t, "alice", k)
			}},
		{name: "malformed JSON", want: ErrPasskeyMalformed, wantDetail: "not a WebAuthn assertion",
			arrange: func(t *testing.T, f *passkeyFixture, k *testkit.SoftKey) (string, []byte) {
				id, _ := f.beginLogin(t, "alice", k)
				return id, []byte(`{"id": "abc", "type": `)
			}},
		{name: "ceremony id of the wrong shape", want: ErrPasskeyCeremonyUnknown,
			arrange: func(t *testing.T, f *passkeyFixture, k *testkit.SoftKey) (string, []byte) {
				_, resp := f.beginLogin(t, "alice", k)
				return "../passkeys/x", resp
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newPasskeyFixture(t)
			k := testkit.NewSoftKey(t, adminOrigin)
			f.register(t, "alice", k)
			ceremony, resp := tt.arrange(t, f, k)
			site := adminSite
			if tt.site.Origin != "" {
				site = tt.site
			}
			before := passkeySnapshot(t, f.st)
			failedBefore := len(events(f.logs, audit.EventPasskeyFailed))

			_, err := f.p.FinishLogin(ctx, "alice", site, ceremony, resp)

			var refusal *PasskeyError
			if !errors.As(err, &refusal) || !errors.Is(err, tt.want) {
				t.Fatalf("FinishLogin = %v, want a refusal for %v", err, tt.want)
			}
			if !strings.Contains(err.Error(), tt.wantDetail) {
				t.Fatalf("FinishLogin = %v, want it to say %q", err, tt.wantDetail)
			}
			if after := passkeySnapshot(t, f.st); !maps.Equal(before, after) {
				t.Fatalf("jit/passkeys/ changed:\nbefore %v\nafter  %v", before, after)
			}
			failed := events(f.logs, audit.EventPasskeyFailed)
			if len(failed) != failedBefore+1 {
				t.Fatalf("%d passkey_failed events, want one more than %d", len(failed), failedBefore)
			}
			if got := fieldsOf(failed[len(failed)-1]); got["reason"] != tt.want.Error() || got["user"] != "alice" || got["ceremony"] != CeremonyLogin {
				t.Fatalf("passkey_failed fields = %v", got)
			}
			if l, found := storedLockout(t, f.st, "alice"); !found || l.Failures != 1 {
				t.Fatalf("lockout = %+v (found %v), want the refusal counted once", l, found)
			}
			f.assertNoSecretsLogged(t)
		})
	}
}

func TestPasskeyCounterRegressionAudited(t *testing.T) {
	f := newPasskeyFixture(t)
	k := testkit.NewSoftKey(t, adminOrigin)
	f.register(t, "alice", k)
	k.NextCount(42)
	f.login(t, "alice", k)
	k.NextCount(3)
	id, resp := f.beginLogin(t, "alice", k)
	if _, err := f.p.FinishLogin(context.Background(), "alice", adminSite, id, resp); !errors.Is(err, ErrPasskeyCounterRegressed) {
		t.Fatalf("FinishLogin = %v, want %v", err, ErrPasskeyCounterRegressed)
	}
	got := events(f.logs, audit.EventPasskeyCounterRegressed)
	if len(got) != 1 {
		t.Fatalf("%d passkey_counter_regressed events, want 1", len(got))
	}
	if m := fieldsOf(got[0]); m["user"] != "alice" || m["credential_id"] != k.ID() || m["stored_count"] != uint32(42) || m["received_count"] != uint32(3) {
		t.Fatalf("passkey_counter_regressed fields = %v", m)
	}
}

// TestPasskeyWithoutCounter: an authenticator that never counts (always 0, as synced
// passkeys do) is accepted every time.
func TestPasskeyWithoutCounter(t *testing.T) {
	f := newPasskeyFixture(t)
	k := testkit.NewSoftKey(t, adminOrigin)
	k.FreezeCount(0)
	f.register(t, "alice", k)
	f.login(t, "alice", k)
	f.login(t, "alice", k)
}

// TestPasskeyFailuresShareTheTOTPLockout: wrong codes and refused passkeys add up to one
// lockout, which then refuses a right passkey before any verification.
func TestPasskeyFailuresShareTheTOTPLockout(t *testing.T) {
	ctx := context.Background()
	f := newPasskeyFixture(t)
	k := testkit.NewSoftKey(t, adminOrigin)
	f.register(t, "alice", k)
	good, goodResp := f.beginLogin(t, "alice", k)
	for range 4 {
		wantActivationReason(t, f.authorityFixture, f.wrongCode(t), ErrCodeInvalid.Error())
	}
	k.Flags = testkit.FlagUP
	id, resp := f.beginLogin(t, "alice", k)
	_, err := f.p.FinishLogin(ctx, "alice", adminSite, id, resp)
	var locked *LockedOutError
	if !errors.As(err, &locked) || !locked.Began {
		t.Fatalf("fifth failure = %v, want the lockout to begin", err)
	}
	if n := len(events(f.logs, audit.EventLockedOut)); n != 1 {
		t.Fatalf("%d locked_out events, want 1", n)
	}

	before := passkeySnapshot(t, f.st)
	if _, err := f.p.FinishLogin(ctx, "alice", adminSite, good, goodResp); !errors.As(err, &locked) || locked.Began {
		t.Fatalf("FinishLogin while locked out = %v, want a *LockedOutError", err)
	}
	if _, _, err := f.p.BeginLogin(ctx, "alice", adminSite); !errors.As(err, &locked) {
		t.Fatalf("BeginLogin while locked out = %v, want a *LockedOutError", err)
	}
	if after := passkeySnapshot(t, f.st); !maps.Equal(before, after) {
		t.Fatal("jit/passkeys/ changed while locked out")
	}
	if found, _ := state.LoadJSON(ctx, f.st, ceremonyKey("alice", good), &passkeyCeremony{}); !found {
		t.Fatal("a locked-out attempt spent the ceremony: it must be refused before anything")
	}

	// After the lockout, a right passkey passes and forgets the failures.
	f.clock.Add(lockoutDuration + time.Second)
	k.Flags = testkit.FlagUP | testkit.FlagUV
	f.login(t, "alice", k)
	if _, found := storedLockout(t, f.st, "alice"); found {
		t.Fatal("the lockout record outlived a passkey step-up")
	}
}
