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
