package testkit_test

import (
	"context"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/caddy-jit/caddy-jit/audit"
	"github.com/caddy-jit/caddy-jit/internal/testkit"
	"github.com/caddy-jit/caddy-jit/stepup"
)

// The software authenticator passes the real library's ceremonies: it registers, its
// assertions are accepted one after another, and Synced sets the flag that makes a
// passkey a synced one.
func TestSoftKeyRegistersAndSignsIn(t *testing.T) {
	const origin = "https://console.example.com"
	site := stepup.Site{Origin: origin}
	for _, tt := range []struct {
		name       string
		synced     bool
		wantMethod string
	}{
		{"bound to its device", false, stepup.MethodHWK},
		{"synced", true, stepup.MethodSWK},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			clock := testkit.NewClock(testkit.Epoch)
			a := stepup.New(testkit.Storage(t), audit.NewWriter(zap.NewNop(), nil, clock.Now),
				stepup.Config{Issuer: "testkit", MaxFailures: 5, LockoutDuration: time.Minute, Now: clock.Now})
			p, err := stepup.NewPasskeys(a, stepup.PasskeyConfig{RPDisplayName: "testkit"})
			if err != nil {
				t.Fatal(err)
			}
			k := testkit.NewSoftKey(t, origin)
			k.Synced = tt.synced

			options, ceremony, err := p.BeginRegistration(ctx, "alice", site)
			if err != nil {
				t.Fatal(err)
			}
			pk, err := p.FinishRegistration(ctx, "alice", site, ceremony, "laptop", k.Create(options))
			if err != nil {
				t.Fatalf("FinishRegistration = %v, want the soft key registered", err)
			}
			if pk.ID != k.ID() || pk.AAGUID != testkit.SoftKeyAAGUID || pk.RPID != "console.example.com" || pk.Method() != tt.wantMethod {
				t.Errorf("registered %+v (method %s); want id %s, aaguid %s, rp_id console.example.com, method %s",
					pk, pk.Method(), k.ID(), testkit.SoftKeyAAGUID, tt.wantMethod)
			}
			for i := range 2 {
				clock.Add(time.Second)
				options, ceremony, err := p.BeginLogin(ctx, "alice", site)
				if err != nil {
					t.Fatal(err)
				}
				used, err := p.FinishLogin(ctx, "alice", site, ceremony, k.Get(options))
				if err != nil || used.ID != k.ID() {
					t.Fatalf("assertion %d: FinishLogin = %+v, %v; want the soft key accepted", i+1, used, err)
				}
			}
		})
	}
}
