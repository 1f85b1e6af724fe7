package stepup

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/caddy-jit/caddy-jit/audit"
	"github.com/caddy-jit/caddy-jit/internal/testkit"
	"github.com/caddy-jit/caddy-jit/state"
)

const (
	adminOrigin = "https://admin.example.com"
	otherOrigin = "https://other.example.com"
)

var adminSite = Site{Origin: adminOrigin}

// passkeyFixture is the step-up of authorityFixture (alice enrolled for TOTP) with
// passkeys for example.com, served at two origins.
type passkeyFixture struct {
	*authorityFixture
	p *Passkeys
}

func newPasskeyFixture(t *testing.T) *passkeyFixture {
	t.Helper()
	f := &passkeyFixture{authorityFixture: newAuthorityFixture(t)}
	var err error
	f.p, err = NewPasskeys(f.a, PasskeyConfig{RPID: "example.com", RPDisplayName: "caddy-jit test", Origins: []string{adminOrigin, otherOrigin}})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// register registers k as a passkey of user, as the browser at k's origin would.
func (f *passkeyFixture) register(t *testing.T, user string, k *testkit.SoftKey) Passkey {
	t.Helper()
	options, id, err := f.p.BeginRegistration(context.Background(), user, adminSite)
	if err != nil {
		t.Fatalf("BeginRegistration(%s) = %v", user, err)
	}
	pk, err := f.p.FinishRegistration(context.Background(), user, adminSite, id, "laptop", k.Create(options))
	if err != nil {
		t.Fatalf("FinishRegistration(%s) = %v", user, err)
	}
	return pk
}

// beginLogin begins a step-up of user at the admin site and returns the ceremony id
// and k's answer to it.
func (f *passkeyFixture) beginLogin(t *testing.T, user string, k *testkit.SoftKey) (string, []byte) {
	t.Helper()
	options, id, err := f.p.BeginLogin(context.Background(), user, adminSite)
	if err != nil {
		t.Fatalf("BeginLogin(%s) = %v", user, err)
	}
	resp := k.Get(options)
	f.used = append(f.used, string(resp), challengeOf(t, options))
	return id, resp
}

func (f *passkeyFixture) login(t *testing.T, user string, k *testkit.SoftKey) {
	t.Helper()
	id, resp := f.beginLogin(t, user, k)
	if _, err := f.p.FinishLogin(context.Background(), user, adminSite, id, resp); err != nil {
		t.Fatalf("FinishLogin(%s) = %v, want the passkey accepted", user, err)
	}
}

func challengeOf(t *testing.T, options []byte) string {
	var o testkit.RequestOptions
	mustUnmarshal(t, options, &o)
	return o.PublicKey.Challenge
}

// passkeySnapshot is every record under jit/passkeys/, key to value.
func passkeySnapshot(t *testing.T, st state.Store) map[string]string {
	t.Helper()
	ctx := context.Background()
	keys, err := state.RecordKeys(ctx, st, passkeyFolder, true, "passkeys")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, k := range keys {
		v, err := st.Load(ctx, k)
		if err != nil {
			t.Fatal(err)
		}
		out[k] = string(v)
	}
	return out
}

func TestPasskeyRegisterThenLogin(t *testing.T) {
	f := newPasskeyFixture(t)
	ctx := context.Background()
	k := testkit.NewSoftKey(t, adminOrigin)
	options, id, err := f.p.BeginRegistration(ctx, "alice", adminSite)
	if err != nil {
		t.Fatal(err)
	}
	var o testkit.CreationOptions
	mustUnmarshal(t, options, &o)
	if o.PublicKey.RP.ID != "example.com" || o.PublicKey.AuthenticatorSelection.UserVerification != "required" || o.PublicKey.Timeout != 120000 {
		t.Fatalf("creation options = %s, want RP example.com, user verification required, a 2-minute timeout", options)
	}
	if strings.Contains(decodedB64(o.PublicKey.User.ID), "alice") {
		t.Fatal("the user handle carries the user name")
	}
	f.used = append(f.used, o.PublicKey.Challenge)
	f.clock.Add(30 * time.Second)
	reg, err := f.p.FinishRegistration(ctx, "alice", adminSite, id, "YubiKey", k.Create(options))
	if err != nil {
		t.Fatalf("FinishRegistration = %v", err)
	}
	if reg.ID != k.ID() || reg.Name != "YubiKey" || reg.AAGUID != "ea9b8d66-4d01-1d21-3ce4-b6b48cb575d4" || reg.RPID != "example.com" || !reg.Created.Equal(f.clock.Now()) {
		t.Fatalf("registered %+v", reg)
	}
	if got := fieldsOf(events(f.logs, audit.EventPasskeyRegistered)[0]); got["user"] != "alice" || got["credential_id"] != reg.ID || got["name"] != "YubiKey" {
		t.Fatalf("passkey_registered fields = %v", got)
	}

	// A second authenticator's options exclude the first.
	options, _, err = f.p.BeginRegistration(ctx, "alice", adminSite)
	if err != nil {
		t.Fatal(err)
	}
	mustUnmarshal(t, options, &o)
	if len(o.PublicKey.ExcludeCredentials) != 1 || o.PublicKey.ExcludeCredentials[0].ID != reg.ID {
		t.Fatalf("excludeCredentials = %+v, want the registered passkey", o.PublicKey.ExcludeCredentials)
	}

	options, id, err = f.p.BeginLogin(ctx, "alice", adminSite)
	if err != nil {
		t.Fatal(err)
	}
	var ro testkit.RequestOptions
	mustUnmarshal(t, options, &ro)
	if ro.PublicKey.RPID != "example.com" || ro.PublicKey.UserVerification != "required" || len(ro.PublicKey.AllowCredentials) != 1 || ro.PublicKey.AllowCredentials[0].ID != reg.ID {
		t.Fatalf("request options = %s, want only alice's passkey, user verification required", options)
	}
	f.used = append(f.used, ro.PublicKey.Challenge)
	f.clock.Add(time.Minute)
	used, err := f.p.FinishLogin(ctx, "alice", adminSite, id, k.Get(options))
	if err != nil {
		t.Fatalf("FinishLogin = %v, want the passkey accepted", err)
	}
	if used.ID != reg.ID || !used.LastUsed.Equal(f.clock.Now()) {
		t.Fatalf("used %+v", used)
	}
	f.login(t, "alice", k) // the counter moved from 1 to 2
	list, err := f.p.List(ctx, "alice")
	if err != nil || len(list) != 1 || list[0].ID != reg.ID || !list[0].LastUsed.Equal(f.clock.Now()) {
		t.Fatalf("List = %+v, %v", list, err)
	}
	if n := len(events(f.logs, audit.EventPasskeyVerified)); n != 2 {
		t.Fatalf("%d passkey_verified events, want 2", n)
	}

	if err := f.p.Remove(ctx, "alice", reg.ID, "alice", ""); err != nil {
		t.Fatal(err)
	}
	if list, _ := f.p.List(ctx, "alice"); len(list) != 0 {
		t.Fatalf("List after Remove = %+v", list)
	}
	if got := fieldsOf(events(f.logs, audit.EventPasskeyRemoved)[0]); got["credential_id"] != reg.ID || got["by"] != "alice" {
		t.Fatalf("passkey_removed fields = %v", got)
	}
	if _, _, err := f.p.BeginLogin(ctx, "alice", adminSite); !errors.Is(err, ErrPasskeyNotRegistered) {
		t.Fatalf("BeginLogin without passkeys = %v, want %v", err, ErrPasskeyNotRegistered)
	}
	f.assertNoSecretsLogged(t)
}

func decodedB64(s string) string {
	raw, _ := b64.DecodeString(s)
	return string(raw)
}

func TestPasskeySiteMustBeAllowed(t *testing.T) {
	f := newPasskeyFixture(t)
	for _, s := range []Site{
		{Origin: "https://phish.test"},
		{Origin: adminOrigin, RPID: "phish.test"},
		{Origin: adminOrigin, RPID: "other.example.com"},
	} {
		if _, _, err := f.p.BeginRegistration(context.Background(), "alice", s); err == nil {
			t.Errorf("BeginRegistration at %+v succeeded", s)
		}
	}
	if _, err := NewPasskeys(f.a, PasskeyConfig{RPID: "example.com", RPDisplayName: "x", Origins: []string{"admin.example.com"}}); err == nil {
		t.Error("NewPasskeys accepted an origin without a scheme")
	}
}

func TestPrunePasskeyCeremonies(t *testing.T) {
	ctx := context.Background()
	f := newPasskeyFixture(t)
	k := testkit.NewSoftKey(t, adminOrigin)
	f.register(t, "alice", k)
	stale, _ := f.beginLogin(t, "alice", k)
	f.clock.Add(90 * time.Second)
	fresh, _ := f.beginLogin(t, "alice", k)
	f.clock.Add(31 * time.Second)
	if err := f.a.Prune(ctx, f.clock.Now(), time.Hour); err != nil {
		t.Fatal(err)
	}
	if f.st.Exists(ctx, ceremonyKey("alice", stale)) || !f.st.Exists(ctx, ceremonyKey("alice", fresh)) {
		t.Fatal("Prune must delete the expired ceremony only")
	}
}
