package stepup

import (
	"context"
	"errors"
	"maps"
	"testing"
	"time"

	"github.com/caddy-jit/caddy-jit/audit"
	"github.com/caddy-jit/caddy-jit/internal/testkit"
)

func TestPasskeyRegistrationRefusals(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name    string
		arrange func(t *testing.T, f *passkeyFixture, k *testkit.SoftKey) (ceremony string, response []byte)
		want    error
	}{
		{name: "wrong origin", want: ErrPasskeyWrongOrigin,
			arrange: func(t *testing.T, f *passkeyFixture, k *testkit.SoftKey) (string, []byte) {
				options, id := beginRegistration(t, f)
				k.Origin = "https://phish.test"
				return id, k.Create(options)
			}},
		{name: "wrong RP ID", want: ErrPasskeyWrongRPID,
			arrange: func(t *testing.T, f *passkeyFixture, k *testkit.SoftKey) (string, []byte) {
				options, id := beginRegistration(t, f)
				k.RPID = "phish.test"
				return id, k.Create(options)
			}},
		{name: "user not verified", want: ErrPasskeyUserNotVerified,
			arrange: func(t *testing.T, f *passkeyFixture, k *testkit.SoftKey) (string, []byte) {
				options, id := beginRegistration(t, f)
				k.Flags = testkit.FlagUP
				return id, k.Create(options)
			}},
		{name: "replayed", want: ErrPasskeyCeremonyUnknown,
			arrange: func(t *testing.T, f *passkeyFixture, k *testkit.SoftKey) (string, []byte) {
				options, id := beginRegistration(t, f)
				resp := k.Create(options)
				if _, err := f.p.FinishRegistration(ctx, "alice", adminSite, id, "", resp); err != nil {
					t.Fatal(err)
				}
				return id, resp
			}},
		{name: "already registered", want: ErrPasskeyDuplicate,
			arrange: func(t *testing.T, f *passkeyFixture, k *testkit.SoftKey) (string, []byte) {
				f.register(t, "alice", k)
				options, id := beginRegistration(t, f)
				return id, k.Create(options)
			}},
		{name: "expired", want: ErrPasskeyChallengeExpired,
			arrange: func(t *testing.T, f *passkeyFixture, k *testkit.SoftKey) (string, []byte) {
				options, id := beginRegistration(t, f)
				f.clock.Add(2*time.Minute + time.Second)
				return id, k.Create(options)
			}},
		{name: "a login ceremony", want: ErrPasskeyCeremonyUnknown,
			arrange: func(t *testing.T, f *passkeyFixture, k *testkit.SoftKey) (string, []byte) {
				f.register(t, "alice", k)
				options, _ := beginRegistration(t, f)
				id, _ := f.beginLogin(t, "alice", k)
				return id, testkit.NewSoftKey(t, adminOrigin).Create(options)
			}},
		{name: "malformed JSON", want: ErrPasskeyMalformed,
			arrange: func(t *testing.T, f *passkeyFixture, k *testkit.SoftKey) (string, []byte) {
				_, id := beginRegistration(t, f)
				return id, []byte(`[]`)
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newPasskeyFixture(t)
			ceremony, resp := tt.arrange(t, f, testkit.NewSoftKey(t, adminOrigin))
			before := passkeySnapshot(t, f.st)

			_, err := f.p.FinishRegistration(ctx, "alice", adminSite, ceremony, "laptop", resp)

			if !errors.Is(err, tt.want) {
				t.Fatalf("FinishRegistration = %v, want %v", err, tt.want)
			}
			if after := passkeySnapshot(t, f.st); !maps.Equal(before, after) {
				t.Fatalf("jit/passkeys/ changed:\nbefore %v\nafter  %v", before, after)
			}
			failed := events(f.logs, audit.EventPasskeyFailed)
			if len(failed) == 0 || fieldsOf(failed[len(failed)-1])["reason"] != tt.want.Error() {
				t.Fatalf("passkey_failed events = %v, want the reason %v", failed, tt.want)
			}
			if _, found := storedLockout(t, f.st, "alice"); found {
				t.Fatal("a refused registration counted towards the lockout")
			}
		})
	}
}

func beginRegistration(t *testing.T, f *passkeyFixture) ([]byte, string) {
	t.Helper()
	options, id, err := f.p.BeginRegistration(context.Background(), "alice", adminSite)
	if err != nil {
		t.Fatal(err)
	}
	return options, id
}
