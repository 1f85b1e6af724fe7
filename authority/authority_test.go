package authority

import (
	"context"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/pquerna/otp"
	"go.uber.org/zap"

	"github.com/caddy-jit/caddy-jit/internal/testkit"
	"github.com/caddy-jit/caddy-jit/policy"
	"github.com/caddy-jit/caddy-jit/session"
	"github.com/caddy-jit/caddy-jit/state"
	"github.com/caddy-jit/caddy-jit/workflow"
)

type notes struct{ events []string }

func (n *notes) Notify(x workflow.Notification) { n.events = append(n.events, x.Event) }

// TestWiring drives one session through the composed authority: enrolled by the
// step-up, activated by the workflow, ended by the sessions (whose end the workflow
// tells the notify targets of), then pruned by every package in one pass.
func TestWiring(t *testing.T) {
	ctx := context.Background()
	st := &certmagic.FileStorage{Path: t.TempDir()}
	clock := testkit.NewClock(testkit.Epoch.Add(10 * time.Second))
	a, err := New(ctx, st, Config{Issuer: "wiring test", MaxFailures: 2, LockoutDuration: time.Minute, Audit: zap.NewNop(), Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	told := &notes{}
	a.Notifier = told

	uri, err := a.StepUp.Enroll(ctx, "alice", "admin")
	if err != nil {
		t.Fatal(err)
	}
	key, err := otp.NewKeyFromURL(uri)
	if err != nil {
		t.Fatal(err)
	}
	role := &policy.Role{Name: "console-admin", MaxDuration: time.Hour, DefaultDuration: 15 * time.Minute,
		Eligibility: []policy.Eligibility{{Subjects: []string{"alice"}}}}
	_, rec, err := a.Activate(ctx, workflow.Activation{Caller: policy.Caller{User: "alice"}, Role: role, Audience: "https://console.example",
		Duration: 15 * time.Minute, Justification: "wiring test", Code: testkit.CodeAt(t, key.Secret(), clock.Now())})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.End(ctx, "alice", rec.ID, session.Deactivated, "alice", "done"); err != nil {
		t.Fatal(err)
	}
	if want := []string{workflow.NotifyActivated, workflow.NotifyDeactivated}; len(told.events) != 2 || told.events[0] != want[0] || told.events[1] != want[1] {
		t.Fatalf("notifications = %q, want %q: the workflow must hear of the end", told.events, want)
	}

	// Two wrong codes lock bob out: a lockout record for the step-up to prune.
	if _, err := a.StepUp.Enroll(ctx, "bob", "admin"); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		_ = a.StepUp.Check(ctx, "bob", "000000")
	}
	lockout := state.Prefix + "lockouts/" + state.Name("bob") + ".json"
	record := state.Prefix + "sessions/" + state.Name("alice") + "/" + rec.ID + ".json"
	for _, key := range []string{lockout, record} {
		if !st.Exists(ctx, key) {
			t.Fatalf("%s is not in storage before pruning", key)
		}
	}
	clock.Set(rec.Expires.Add(2 * time.Hour))
	if err := a.Prune(ctx, clock.Now(), time.Hour); err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{lockout, record} {
		if st.Exists(ctx, key) {
			t.Errorf("%s is still in storage after Prune", key)
		}
	}
}
