package commands

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/pquerna/otp"
	"go.uber.org/zap"

	"github.com/caddy-jit/caddy-jit/audit"
	"github.com/caddy-jit/caddy-jit/internal/adminapi"
	"github.com/caddy-jit/caddy-jit/session"
	"github.com/caddy-jit/caddy-jit/stepup"
)

func TestOfflineCommands(t *testing.T) {
	tests := []struct {
		name  string
		args  func(f *offlineFixture) []string
		check func(t *testing.T, f *offlineFixture, stdout, stderr string)
	}{
		{
			name: "sessions table",
			args: func(*offlineFixture) []string { return []string{"sessions"} },
			check: func(t *testing.T, f *offlineFixture, stdout, stderr string) {
				lines := strings.Split(strings.TrimSpace(stdout), "\n")
				if len(lines) != 4 || !strings.HasPrefix(lines[0], "ID ") {
					t.Fatalf("want a header and three sessions:\n%s", stdout)
				}
				for _, rec := range []*session.Record{f.alice, f.bob1, f.bob2} {
					if !strings.Contains(stdout, rec.ID) || !strings.Contains(stdout, "offline test of "+rec.User) {
						t.Errorf("session %s of %s is not listed:\n%s", rec.ID, rec.User, stdout)
					}
				}
				checkNote(t, f, stderr, "read")
				checkAudit(t, stderr)
			},
		},
		{
			name: "sessions json filtered",
			args: func(*offlineFixture) []string { return []string{"sessions", "--json", "--user", "bob"} },
			check: func(t *testing.T, f *offlineFixture, stdout, stderr string) {
				var list adminapi.SessionList
				if err := json.Unmarshal([]byte(stdout), &list); err != nil {
					t.Fatalf("--json printed no session list: %v\n%s", err, stdout)
				}
				var ids []string
				for _, s := range list.Sessions {
					ids = append(ids, s.ID)
					if s.User != "bob" || s.Role != offlineRole || s.Revoked {
						t.Errorf("listed %+v", s)
					}
				}
				if want := []string{f.bob1.ID, f.bob2.ID}; !slices.Equal(ids, want) {
					t.Errorf("listed %v, want bob's sessions %v, soonest expiry first", ids, want)
				}
				checkNote(t, f, stderr, "read")
			},
		},
		{
			name: "revoke id",
			args: func(f *offlineFixture) []string {
				return []string{"revoke", f.alice.ID, "--reason", "left the incident call"}
			},
			check: func(t *testing.T, f *offlineFixture, stdout, stderr string) {
				if !strings.HasPrefix(stdout, "Revoked session "+f.alice.ID+" of alice (role "+offlineRole) {
					t.Errorf("stdout %q", stdout)
				}
				if got := f.revokedIDs(t); !slices.Equal(got, []string{f.alice.ID}) {
					t.Errorf("a fresh instance refuses %v, want only alice's %s", got, f.alice.ID)
				}
				rec, err := f.freshState(t).Records.Load(context.Background(), "alice", f.alice.ID)
				if err != nil {
					t.Fatal(err)
				}
				if rec.Ended.IsZero() || rec.EndReason != "left the incident call" || !strings.HasPrefix(rec.EndedBy, operatorLogin()+" via caddy jit") {
					t.Errorf("stored record ended %v by %q for %q", rec.Ended, rec.EndedBy, rec.EndReason)
				}
				checkNote(t, f, stderr, "changed")
				checkAudit(t, stderr, map[string]any{"event": "revoked", "session_id": f.alice.ID, "user": "alice", "role": offlineRole, "reason": "left the incident call"})
			},
		},
		{
			name: "revoke user",
			args: func(*offlineFixture) []string {
				return []string{"revoke", "--user", "bob", "--reason", "laptop stolen"}
			},
			check: func(t *testing.T, f *offlineFixture, stdout, stderr string) {
				if n := strings.Count(stdout, "Revoked session "); n != 2 || !strings.Contains(stdout, f.bob1.ID) || !strings.Contains(stdout, f.bob2.ID) {
					t.Errorf("stdout does not name bob's two sessions:\n%s", stdout)
				}
				if got := f.revokedIDs(t); !slices.Equal(got, []string{f.bob1.ID, f.bob2.ID}) {
					t.Errorf("a fresh instance refuses %v, want bob's %s and %s", got, f.bob1.ID, f.bob2.ID)
				}
				checkNote(t, f, stderr, "changed")
				checkAudit(t, stderr,
					map[string]any{"event": "revoked", "session_id": f.bob1.ID, "user": "bob", "reason": "laptop stolen"},
					map[string]any{"event": "revoked", "session_id": f.bob2.ID, "user": "bob", "reason": "laptop stolen"})
			},
		},
		{
			name: "unlock",
			args: func(*offlineFixture) []string { return []string{"unlock", "carol", "--reason", "verified by phone"} },
			check: func(t *testing.T, f *offlineFixture, stdout, stderr string) {
				if stdout != "Unlocked carol: their next correct code is accepted.\n" {
					t.Errorf("stdout %q", stdout)
				}
				if until := f.lockedUntil(t, "carol"); !until.IsZero() {
					t.Errorf("carol is still locked until %v", until)
				}
				if got := f.revokedIDs(t); len(got) != 0 {
					t.Errorf("unlock revoked %v", got)
				}
				checkNote(t, f, stderr, "changed")
				checkAudit(t, stderr, map[string]any{"event": "unlocked", "user": "carol", "reason": "verified by phone"})
			},
		},
		{
			name: "rotate-keys",
			args: func(*offlineFixture) []string { return []string{"rotate-keys"} },
			check: func(t *testing.T, f *offlineFixture, stdout, stderr string) {
				kid, _, _ := strings.Cut(strings.TrimPrefix(stdout, "New signing key: "), "\n")
				keys := f.freshState(t).Keyring.KeyIDs()
				if len(keys) != 2 || keys[1] != kid {
					t.Fatalf("stored keys %v, want the old one and the new %q from:\n%s", keys, kid, stdout)
				}
				if !strings.Contains(stdout, "\nKeys in use, oldest first (the last one signs): "+keys[0]+", "+kid+"\n") {
					t.Errorf("stdout does not list the keys in use %v:\n%s", keys, stdout)
				}
				checkNote(t, f, stderr, "changed")
				checkAudit(t, stderr, map[string]any{"event": "keys_rotated", "kid": kid})
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newOfflineFixture(t)
			stdout, stderr, err := runJitStreams(t, append(tc.args(f), "--config", f.caddyfile)...)
			if err != nil {
				t.Fatalf("%v: %v\nstderr:\n%s", tc.args(f), err, stderr)
			}
			tc.check(t, f, stdout, stderr)
		})
	}
}

func TestOfflineRevokeFailures(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"malformed id", []string{"revoke", "../../keys/signing"}, `the session id has 18 characters`},
		{"id outside base64url", []string{"revoke", "AAAAAAAAAAAAAAAAAAAA/."}, `outside base64url`},
		{"user without sessions", []string{"revoke", "--user", "dave"}, `"dave" has no active session: nothing was revoked`},
		{"bad user name", []string{"unlock", "ops/carol"}, "holds a slash"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newOfflineFixture(t)
			stdout, stderr, err := runJitStreams(t, append(tc.args, "--config", f.caddyfile)...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
			if stdout != "" || strings.Contains(stderr, "changed") {
				t.Errorf("a failed command printed %q, noted %q", stdout, stderr)
			}
			if got := f.revokedIDs(t); len(got) != 0 {
				t.Errorf("a failed command revoked %v", got)
			}
			checkAudit(t, stderr)
		})
	}
}

// An id with no stored session is revoked all the same (a token may carry it), as the
// admin API does.
func TestOfflineRevokeUnrecordedID(t *testing.T) {
	f := newOfflineFixture(t)
	const id = "AAAAAAAAAAAAAAAAAAAAAA"
	stdout, stderr, err := runJitStreams(t, "revoke", id, "--reason", "forged token seen", "--config", f.caddyfile)
	if err != nil {
		t.Fatalf("revoke of an unrecorded id: %v\nstderr:\n%s", err, stderr)
	}
	if !strings.HasPrefix(stdout, "Revoked "+id+": no session with that id is stored") {
		t.Errorf("stdout %q", stdout)
	}
	if !f.freshState(t).Revocations.Revoked(id) {
		t.Errorf("a fresh instance does not refuse %s", id)
	}
	if got := f.revokedIDs(t); len(got) != 0 {
		t.Errorf("revoking an unrecorded id revoked the fixture's sessions %v", got)
	}
	checkAudit(t, stderr, map[string]any{"event": "revoked", "session_id": id, "reason": "forged token seen", "no_record": true})
}

// Enrolling offline gives a secret whose codes the running instance accepts.
func TestOfflineEnroll(t *testing.T) {
	f := newOfflineFixture(t)
	ctl, stderr := openTestControl(t, f.caddyfile)
	enrollment, err := ctl.enroll("dave", operatorLogin())
	if err != nil {
		t.Fatal(err)
	}
	key, err := otp.NewKeyFromURL(enrollment.OTPAuthURI)
	if err != nil || enrollment.User != "dave" || key.Issuer() != "offline test" || key.AccountName() != "dave" {
		t.Fatalf("enrollment %+v: %v", enrollment, err)
	}
	running := stepup.New(f.storage, audit.NewWriter(zap.NewNop(), nil, time.Now), stepup.Config{Issuer: "offline test", MaxFailures: 2, LockoutDuration: time.Hour, Now: time.Now})
	if err := running.Check(context.Background(), "dave", totpCode(t, key.Secret(), time.Now())); err != nil {
		t.Errorf("the running instance refuses a code of the offline enrollment: %v", err)
	}
	checkNote(t, f, stderr.String(), "changed")
	checkAudit(t, stderr.String(), map[string]any{"event": "enrolled", "user": "dave", "replaced": false})
	if strings.Contains(stderr.String(), key.Secret()) {
		t.Error("the secret is on stderr")
	}
}

func TestOfflineConfigWithoutJitApp(t *testing.T) {
	config := filepath.Join(t.TempDir(), "Caddyfile")
	if err := os.WriteFile(config, []byte("{\n\tadmin off\n\tstorage file_system \""+t.TempDir()+"\"\n}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, _, err := runJitStreams(t, "sessions", "--config", config)
	if err == nil || !strings.Contains(err.Error(), "has no jit app") {
		t.Errorf("error %v, want one saying the config has no jit app", err)
	}
}

// With the admin API off, the CLI works on storage directly: its user arguments take
// the config's canonical form all the same.
func TestOfflineUserArgumentsAreCanonical(t *testing.T) {
	dir := t.TempDir()
	config := filepath.Join(t.TempDir(), "Caddyfile")
	src := "{\n\tadmin off\n\tstorage file_system \"" + dir + "\"\n\tjit {\n\t\tuser_names case_insensitive\n" +
		"\t\trole r {\n\t\t\tmax_duration 1h\n\t\t\teligible dave\n\t\t}\n\t}\n}\n"
	if err := os.WriteFile(config, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	ctl, stderr := openTestControl(t, config)
	enrollment, err := ctl.enroll("DAVE", "op")
	if err != nil || enrollment.User != "dave" {
		t.Fatalf("offline enroll DAVE = %+v, %v; want user dave", enrollment, err)
	}
	key, err := otp.NewKeyFromURL(enrollment.OTPAuthURI)
	if err != nil {
		t.Fatal(err)
	}
	running := stepup.New(&certmagic.FileStorage{Path: dir}, audit.NewWriter(zap.NewNop(), nil, time.Now), stepup.Config{Issuer: "caddy-jit", MaxFailures: 5, LockoutDuration: time.Hour, Now: time.Now})
	if err := running.Check(context.Background(), "dave", totpCode(t, key.Secret(), time.Now())); err != nil {
		t.Errorf("the gate's dave has no enrollment after `caddy jit enroll DAVE`: %v", err)
	}
	if err := ctl.unlock("Dave", "op", "test"); err != nil {
		t.Errorf("offline unlock Dave: %v", err)
	}
	if !strings.Contains(stderr.String(), `"user":"dave"`) || strings.Contains(stderr.String(), `"user":"Dave"`) || strings.Contains(stderr.String(), `"user":"DAVE"`) {
		t.Errorf("the audit events should name dave only: %s", stderr.String())
	}
	if _, err := ctl.revokeUser("da/ve", "op", "test"); err == nil {
		t.Error("offline revoke of a user name with a slash: want an error")
	}
}
