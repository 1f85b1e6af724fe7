package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"

	"github.com/caddy-jit/caddy-jit/authority"
	"github.com/caddy-jit/caddy-jit/internal/testkit"
	"github.com/caddy-jit/caddy-jit/stepup"
)

// `caddy jit credentials` lists and removes a user's passkeys through the running
// Caddy's admin API: a passkey registered in the storage Caddy shares is listed, its
// removal is audited by the running Caddy with who did it, and it is gone for every
// instance.
func TestCredentialsCLI(t *testing.T) {
	e := newEnv(t, envOptions{})
	admin := fmt.Sprintf("localhost:%d", e.data.AdminPort)
	// jit runs `caddy jit credentials ARGS… --address ADMIN`, the flags before a "--"
	// (after which a credential id may start with '-').
	jit := func(args ...string) string {
		t.Helper()
		args = slices.Clone(args)
		at := slices.Index(args, "--")
		if at < 0 {
			at = len(args)
		}
		args = slices.Insert(args, at, "--address", admin)
		out, err := runCaddy(t, e.dir, append([]string{"jit", "credentials"}, args...)...)
		if err != nil {
			t.Fatalf("caddy jit credentials %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return out
	}
	if out := jit("alice"); out != "No passkeys of \"alice\".\n" {
		t.Fatalf("before any passkey: %q", out)
	}

	// Register as another instance of a cluster would, with the library, on the storage
	// the running Caddy uses: this test is about the commands, not the pages.
	ctx := context.Background()
	other, err := authority.New(ctx, &certmagic.FileStorage{Path: e.data.StorageDir}, authority.Config{
		Issuer: "caddy-jit integration", MaxFailures: 5, LockoutDuration: 15 * time.Minute, Audit: zap.NewNop(), Now: time.Now,
	})
	if err != nil {
		t.Fatal(err)
	}
	passkeys := other.StepUp.Passkeys()
	site := stepup.Site{Origin: e.site(0)}
	key := testkit.NewSoftKey(t, site.Origin)
	options, ceremony, err := passkeys.BeginRegistration(ctx, "alice", site)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := passkeys.FinishRegistration(ctx, "alice", site, ceremony, "work laptop", key.Create(options)); err != nil {
		t.Fatal(err)
	}
	e.enroll("alice")

	table := jit("alice")
	if lines := strings.Split(strings.TrimSpace(table), "\n"); len(lines) != 2 ||
		!strings.HasPrefix(lines[0], "ID ") || !strings.HasPrefix(lines[1], key.ID()+" ") ||
		!strings.Contains(lines[1], " work laptop ") || !strings.Contains(lines[1], " localhost ") || !strings.HasSuffix(lines[1], testkit.SoftKeyAAGUID) {
		t.Errorf("the table should list alice's work laptop %s at localhost:\n%s", key.ID(), table)
	}
	var listed []struct {
		ID, Name string
		RPID     string  `json:"rp_id"`
		LastUsed *string `json:"last_used"`
	}
	if err := json.Unmarshal([]byte(jit("alice", "--json")), &listed); err != nil || len(listed) != 1 ||
		listed[0].ID != key.ID() || listed[0].Name != "work laptop" || listed[0].RPID != "localhost" || listed[0].LastUsed != nil {
		t.Errorf("--json listed %+v (%v), want alice's work laptop, never used", listed, err)
	}

	out := jit("remove", "--by", "integration-op", "--reason", "laptop stolen", "--", "alice", key.ID())
	if want := "Removed the passkey \"work laptop\" of alice (id " + key.ID() + ", rp_id localhost, "; !strings.HasPrefix(out, want) ||
		!strings.Contains(out, "alice has 0 passkeys left.\nalice can register another passkey on /.jit/enroll") {
		t.Errorf("remove printed %q; want it to start %q and point alice to /.jit/enroll", out, want)
	}
	removed := e.waitEvent(match{"event": "passkey_removed", "user": "alice", "credential_id": key.ID(), "rp_id": "localhost", "reason": "laptop stolen"})
	if by := removed.str("by"); !strings.HasPrefix(by, "integration-op via admin API (") {
		t.Errorf("passkey_removed by %q, want integration-op via admin API (address)", by)
	}
	if ok, err := passkeys.Registered(ctx, "alice", site); ok || err != nil {
		t.Errorf("after the removal, the other instance finds a passkey of alice: %v, %v", ok, err)
	}
	if out := jit("alice"); out != "No passkeys of \"alice\".\n" {
		t.Errorf("after the removal: %q", out)
	}

	// Removing it again is refused, saying why, and audits nothing more.
	out, err = runCaddy(t, e.dir, "jit", "credentials", "remove", "--address", admin, "--", "alice", key.ID())
	if err == nil || !strings.Contains(out, "HTTP 404") || !strings.Contains(out, "alice has no passkey with the id") {
		t.Errorf("removing it again: %v\n%s\nwant a failure with the 404 that says alice has no such passkey", err, out)
	}
	if n := len(e.events(match{"event": "passkey_removed"})); n != 1 {
		t.Errorf("%d passkey_removed events, want 1", n)
	}
}
