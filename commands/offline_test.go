package commands

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/caddyserver/certmagic"
	"github.com/pquerna/otp"
	"github.com/pquerna/otp/totp"
	"go.uber.org/zap"

	// Caddy's standard modules, as cmd/caddy has them: the test configs of this
	// package name the file_system storage.
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	"github.com/caddy-jit/caddy-jit/audit"
	"github.com/caddy-jit/caddy-jit/authority"
	"github.com/caddy-jit/caddy-jit/internal/adminapi"
	"github.com/caddy-jit/caddy-jit/policy"
	"github.com/caddy-jit/caddy-jit/session"
	"github.com/caddy-jit/caddy-jit/stepup"
	"github.com/caddy-jit/caddy-jit/workflow"
)

// offlineFixture is a Caddyfile with the admin API off and a file storage in which a
// "running instance" (an authority of its own over the same storage) made sessions.
type offlineFixture struct {
	caddyfile string
	storage   *certmagic.FileStorage
	// alice has one session, bob two; carol is locked out.
	alice, bob1, bob2 *session.Record
	secrets           map[string]string
}

const offlineRole = "console-admin"

func newOfflineFixture(t *testing.T) *offlineFixture {
	t.Helper()
	dir := t.TempDir()
	f := &offlineFixture{
		caddyfile: filepath.Join(t.TempDir(), "Caddyfile"),
		storage:   &certmagic.FileStorage{Path: dir},
		secrets:   map[string]string{},
	}
	src := `{
	admin off
	storage file_system "` + dir + `"
	jit {
		issuer "offline test"
		lockout {
			max_failures 2
			duration 1h
		}
		role ` + offlineRole + ` {
			max_duration 1h
			justification optional
			eligible alice bob carol dave
		}
	}
}
`
	if err := os.WriteFile(f.caddyfile, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}

	// The running instance's clock moves a TOTP step per activation, so that a user's
	// second code is not a replay.
	var shift time.Duration
	clock := func() time.Time { return time.Now().Add(shift) }
	ctx := context.Background()
	a, err := authority.New(ctx, f.storage, authority.Config{
		Issuer: "offline test", MaxFailures: 2, LockoutDuration: time.Hour, Audit: zap.NewNop(), Now: clock,
	})
	if err != nil {
		t.Fatal(err)
	}
	role := &policy.Role{
		Name: offlineRole, MaxDuration: time.Hour, DefaultDuration: 15 * time.Minute,
		Eligibility: []policy.Eligibility{{Subjects: []string{"alice", "bob", "carol", "dave"}}},
	}
	for _, user := range []string{"alice", "bob", "carol"} {
		uri, err := a.StepUp.Enroll(ctx, user, "test setup")
		if err != nil {
			t.Fatal(err)
		}
		key, err := otp.NewKeyFromURL(uri)
		if err != nil {
			t.Fatal(err)
		}
		f.secrets[user] = key.Secret()
	}
	activate := func(user, code string) (*session.Record, error) {
		_, rec, err := a.Activate(ctx, workflow.Activation{
			Caller: policy.Caller{User: user}, Role: role, Audience: "http://localhost:8080",
			Duration: 30 * time.Minute, Justification: "offline test of " + user, Code: code, ClientIP: "192.0.2.1",
		})
		return rec, err
	}
	mustActivate := func(user string) *session.Record {
		t.Helper()
		rec, err := activate(user, totpCode(t, f.secrets[user], clock()))
		if err != nil {
			t.Fatalf("activating %s: %v", user, err)
		}
		shift += 30 * time.Second
		return rec
	}
	f.alice = mustActivate("alice")
	f.bob1 = mustActivate("bob")
	f.bob2 = mustActivate("bob")
	for range 2 {
		_, err := activate("carol", wrongTOTPCode(t, f.secrets["carol"], clock()))
		var refused *workflow.ActivationError
		if !errors.As(err, &refused) {
			t.Fatalf("a wrong code for carol: %v", err)
		}
	}
	if until := f.lockedUntil(t, "carol"); until.IsZero() {
		t.Fatal("carol is not locked out after two wrong codes")
	}
	return f
}

// totpCode is the code an authenticator app shows for secret at t.
func totpCode(t *testing.T, secret string, at time.Time) string {
	t.Helper()
	code, err := totp.GenerateCodeCustom(secret, at, totp.ValidateOpts{Period: 30, Digits: otp.DigitsSix, Algorithm: otp.AlgorithmSHA1})
	if err != nil {
		t.Fatal(err)
	}
	return code
}

// wrongTOTPCode is a code that none of the steps accepted at t matches.
func wrongTOTPCode(t *testing.T, secret string, at time.Time) string {
	t.Helper()
	var right []string
	for _, d := range []time.Duration{-30 * time.Second, 0, 30 * time.Second} {
		right = append(right, totpCode(t, secret, at.Add(d)))
	}
	for _, c := range []string{"000000", "111111", "222222", "333333"} {
		if !slices.Contains(right, c) {
			return c
		}
	}
	t.Fatal("no wrong code")
	return ""
}

// freshState reads the storage as a newly started instance would.
func (f *offlineFixture) freshState(t *testing.T) *session.State {
	t.Helper()
	st, err := session.LoadState(context.Background(), f.storage, 0, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func (f *offlineFixture) lockedUntil(t *testing.T, user string) time.Time {
	t.Helper()
	until, err := stepup.New(f.storage, audit.NewWriter(zap.NewNop(), nil, time.Now), stepup.Config{Issuer: "offline test", MaxFailures: 2, LockoutDuration: time.Hour, Now: time.Now}).LockedUntil(context.Background(), user)
	if err != nil {
		t.Fatal(err)
	}
	return until
}

// revokedIDs lists which of the fixture's sessions a fresh instance refuses, in the
// order alice, bob1, bob2.
func (f *offlineFixture) revokedIDs(t *testing.T) []string {
	t.Helper()
	st := f.freshState(t)
	var ids []string
	for _, rec := range []*session.Record{f.alice, f.bob1, f.bob2} {
		if st.Revocations.Revoked(rec.ID) {
			ids = append(ids, rec.ID)
		}
	}
	return ids
}

// auditEvents returns the audit events among the lines of stderr.
func auditEvents(t *testing.T, stderr string) []map[string]any {
	t.Helper()
	var events []map[string]any
	for line := range strings.SplitSeq(stderr, "\n") {
		if !strings.HasPrefix(line, "{") {
			continue
		}
		var e map[string]any
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("stderr line is not JSON: %v\n%s", err, line)
		}
		if e["logger"] != "http.handlers.jit.audit" {
			t.Errorf("JSON line on stderr from logger %v, want http.handlers.jit.audit: %s", e["logger"], line)
		}
		events = append(events, e)
	}
	return events
}

// checkAudit asserts that stderr holds exactly the audit events want (each given by
// a subset of its fields), in order, by the operator working on storage.
func checkAudit(t *testing.T, stderr string, want ...map[string]any) {
	t.Helper()
	got := auditEvents(t, stderr)
	if len(got) != len(want) {
		t.Fatalf("%d audit events on stderr, want %d:\n%s", len(got), len(want), stderr)
	}
	by := operatorLogin() + " via caddy jit on storage (admin API off)"
	for i, w := range want {
		if got[i]["level"] != "info" || got[i]["msg"] != w["event"] || got[i]["by"] != by {
			t.Errorf("audit event %d: level %v, msg %v, by %v; want info, %v, %q", i, got[i]["level"], got[i]["msg"], got[i]["by"], w["event"], by)
		}
		for k, v := range w {
			if got[i][k] != v {
				t.Errorf("audit event %d: %s = %v, want %v", i, k, got[i][k], v)
			}
		}
	}
}

// checkNote asserts the one-line note that the command worked on storage.
func checkNote(t *testing.T, f *offlineFixture, stderr, verb string) {
	t.Helper()
	var notes []string
	for line := range strings.SplitSeq(stderr, "\n") {
		if strings.HasPrefix(line, "The admin API is off in ") {
			notes = append(notes, line)
		}
	}
	want := "The admin API is off in " + f.caddyfile + ": " + verb + " FileStorage:" + f.storage.Path + " directly"
	if len(notes) != 1 || !strings.HasPrefix(notes[0], want) {
		t.Errorf("notes on stderr %q, want one starting %q", notes, want)
	}
}

// openTestControl opens the control that the operator commands get from
// --config with config, as `caddy jit enroll --config config` does; what it notes
// and audits goes to stderr. It is closed when the test ends.
func openTestControl(t *testing.T, config string) (jitControl, *bytes.Buffer) {
	t.Helper()
	cmd := enrollCommand()
	if err := cmd.ParseFlags([]string{"--config", config}); err != nil {
		t.Fatal(err)
	}
	stderr := new(bytes.Buffer)
	ctl, err := openControl(caddycmd.Flags{FlagSet: cmd.Flags()}, stderr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ctl.close)
	return ctl, stderr
}

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
