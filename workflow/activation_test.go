package workflow

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/pquerna/otp"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/caddy-jit/caddy-jit/audit"
	"github.com/caddy-jit/caddy-jit/internal/testkit"
	"github.com/caddy-jit/caddy-jit/policy"
	"github.com/caddy-jit/caddy-jit/session"
	"github.com/caddy-jit/caddy-jit/state"
)

type authorityFixture struct {
	st     *certmagic.FileStorage
	clock  *fakeClock
	logs   *observer.ObservedLogs
	log    *zap.Logger // writes to logs
	a      *Authority
	role   *policy.Role
	secret string
	uri    string
	// used collects every code, token and secret seen, for the scan of the audit log.
	used []string
}

func newAuthorityFixture(t *testing.T) *authorityFixture {
	t.Helper()
	ctx := context.Background()
	f := &authorityFixture{st: newStorage(t), clock: newFakeClock(epoch.Add(10 * time.Second))}
	core, logs := observer.New(zap.InfoLevel)
	f.logs, f.log = logs, zap.New(core)
	a, err := NewAuthority(ctx, f.st, Config{
		Issuer:          "caddy-jit test",
		MaxFailures:     5,
		LockoutDuration: lockoutDuration,
		Audit:           f.log,
		Now:             f.clock.Now,
	})
	if err != nil {
		t.Fatal(err)
	}
	f.a = a
	f.uri, err = a.StepUp.Enroll(ctx, "alice", "admin")
	if err != nil {
		t.Fatal(err)
	}
	key, err := otp.NewKeyFromURL(f.uri)
	if err != nil {
		t.Fatal(err)
	}
	f.secret = key.Secret()
	f.used = append(f.used, f.secret, f.uri)
	f.role = &policy.Role{
		Name:                   "console-admin",
		MaxDuration:            time.Hour,
		DefaultDuration:        15 * time.Minute,
		JustificationMinLength: 10,
		Ticket:                 regexp.MustCompile(`^(?:INC-[0-9]+)$`),
		TicketFormat:           "INC-[0-9]+",
		Eligibility:            []policy.Eligibility{{Subjects: []string{"alice", "group:ops"}}},
	}
	return f
}

// activation is a request that succeeds, with the current code.
func (f *authorityFixture) activation(t *testing.T) Activation {
	t.Helper()
	code := codeAt(t, f.secret, f.clock.Now())
	f.used = append(f.used, code)
	return Activation{
		Caller:        policy.Caller{User: "alice"},
		Role:          f.role,
		Audience:      audience,
		Duration:      15 * time.Minute,
		Justification: "restart the stuck queue",
		Ticket:        "INC-42",
		Code:          code,
		ClientIP:      "192.0.2.1",
		UserAgent:     "test-agent/1.0",
	}
}

func (f *authorityFixture) activate(t *testing.T, act Activation) (string, *session.Record) {
	t.Helper()
	token, rec, err := f.a.Activate(context.Background(), act)
	if err != nil {
		t.Fatalf("Activate = %v", err)
	}
	f.used = append(f.used, token)
	return token, rec
}

func (f *authorityFixture) wrongCode(t *testing.T) string {
	code := wrongCodeAt(t, f.secret, f.clock.Now())
	f.used = append(f.used, code)
	return code
}

// assertNoSecretsLogged fails if any audit entry mentions a code, a token or the secret
// in its message or any field.
func (f *authorityFixture) assertNoSecretsLogged(t *testing.T) {
	t.Helper()
	testkit.AssertNoSecretsLogged(t, f.logs, f.secret, f.used)
}

func TestActivate(t *testing.T) {
	ctx := context.Background()
	f := newAuthorityFixture(t)
	now := f.clock.Now()
	act := f.activation(t)
	token, rec := f.activate(t, act)

	if session.CheckSessionID(rec.ID) != nil {
		t.Fatalf("session id %q", rec.ID)
	}
	want := &session.Record{
		ID: rec.ID, User: "alice", Role: "console-admin", Audience: audience,
		Justification: act.Justification, Ticket: "INC-42", ClientIP: "192.0.2.1", UserAgent: "test-agent/1.0",
		Methods: []string{"otp"}, SteppedUp: now, Start: now, Expires: now.Add(15 * time.Minute),
	}
	wantJSON, _ := json.Marshal(want)
	if got, _ := json.Marshal(rec); string(got) != string(wantJSON) {
		t.Fatalf("record = %s\nwant %s", got, wantJSON)
	}

	// The record is in storage.
	loaded, err := f.a.Records.Load(ctx, "alice", rec.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := json.Marshal(loaded); string(got) != string(wantJSON) {
		t.Fatalf("stored record = %s\nwant %s", got, wantJSON)
	}
	active, err := f.a.Records.OfUser(ctx, "alice", now)
	if err != nil || len(active) != 1 || active[0].ID != rec.ID {
		t.Fatalf("OfUser = %v, %v", active, err)
	}

	// The token verifies, for this user, site and role only.
	c, err := f.a.Verifier.Verify(token, session.Want{Subject: "alice", Audience: audience, Roles: []string{"console-admin"}}, now)
	if err != nil {
		t.Fatalf("Verify = %v", err)
	}
	if c.Issuer != "caddy-jit test" || c.SessionID != rec.ID || c.IssuedAt != now.Unix() || c.NotBefore != now.Unix() ||
		c.Expiry != rec.Expires.Unix() || len(c.Methods) != 1 || c.Methods[0] != "otp" {
		t.Fatalf("claims = %+v", c)
	}
	if _, err := f.a.Verifier.Verify(token, session.Want{Subject: "bob", Audience: audience, Roles: []string{"console-admin"}}, now); !errors.Is(err, session.ErrTokenSubject) {
		t.Fatalf("Verify for bob = %v", err)
	}

	// One audit event, with the session's fields.
	succeeded := events(f.logs, audit.EventActivationSucceeded)
	if len(succeeded) != 1 || len(events(f.logs, audit.EventActivationFailed)) != 0 {
		t.Fatalf("audit events: %+v", f.logs.All())
	}
	fields := fieldsOf(succeeded[0])
	wantFields := map[string]any{
		"event": audit.EventActivationSucceeded, "user": "alice", "role": "console-admin", "session_id": rec.ID,
		"justification": act.Justification, "ticket": "INC-42", "client_ip": "192.0.2.1",
		"expires": "2026-01-01T00:15:10Z", "duration": "15m", "start": "2026-01-01T00:00:10Z",
		"amr": []string{"otp"},
	}
	if len(fields) != len(wantFields) {
		t.Errorf("fields = %v, want %v", fields, wantFields)
	}
	for k, v := range wantFields {
		if list, ok := v.([]string); ok {
			if fmt.Sprint(fields[k]) != fmt.Sprint(list) {
				t.Errorf("field %s = %v, want %v", k, fields[k], list)
			}
			continue
		}
		if fields[k] != v {
			t.Errorf("field %s = %v (%T), want %v", k, fields[k], fields[k], v)
		}
	}
	if succeeded[0].Message != audit.EventActivationSucceeded || succeeded[0].Level != zap.InfoLevel {
		t.Errorf("entry = %q at %v", succeeded[0].Message, succeeded[0].Level)
	}

	// The enrollment was audited too, without its secret.
	enrolled := events(f.logs, audit.EventEnrolled)
	if len(enrolled) != 1 {
		t.Fatalf("enrolled events: %d", len(enrolled))
	}
	if m := fieldsOf(enrolled[0]); m["user"] != "alice" || m["by"] != "admin" || m["replaced"] != false || len(m) != 4 {
		t.Errorf("enrolled fields = %v", m)
	}
	f.assertNoSecretsLogged(t)
}

func TestActivateFailures(t *testing.T) {
	tests := []struct {
		name string
		// setup runs before the activation, whose request change adjusts.
		setup  func(t *testing.T, f *authorityFixture)
		change func(t *testing.T, f *authorityFixture, a *Activation)
		reason string
		// codeSpent: the refusal came from the TOTP check, so the failure counts.
		codeSpent bool
	}{
		{name: "not eligible", reason: "not_eligible", change: func(_ *testing.T, _ *authorityFixture, a *Activation) { a.Caller = policy.Caller{User: "mallory"} }},
		{name: "not eligible, other group", reason: "not_eligible", change: func(_ *testing.T, _ *authorityFixture, a *Activation) {
			a.Caller = policy.Caller{User: "dave", Groups: []string{"dev"}}
		}},
		{name: "zero duration", reason: "duration_invalid", change: func(_ *testing.T, _ *authorityFixture, a *Activation) { a.Duration = 0 }},
		{name: "negative duration", reason: "duration_invalid", change: func(_ *testing.T, _ *authorityFixture, a *Activation) { a.Duration = -time.Minute }},
		{name: "duration too long", reason: "duration_too_long", change: func(_ *testing.T, _ *authorityFixture, a *Activation) { a.Duration = 2 * time.Hour }},
		{name: "justification missing", reason: "justification_missing", change: func(_ *testing.T, _ *authorityFixture, a *Activation) { a.Justification = "" }},
		{name: "justification too short", reason: "justification_too_short", change: func(_ *testing.T, _ *authorityFixture, a *Activation) { a.Justification = "because" }},
		{name: "justification too long", reason: "justification_too_long", change: func(_ *testing.T, _ *authorityFixture, a *Activation) {
			a.Justification = strings.Repeat("j", policy.MaxJustificationLength+1)
		}},
		{name: "ticket missing", reason: "ticket_invalid", change: func(_ *testing.T, _ *authorityFixture, a *Activation) { a.Ticket = "" }},
		{name: "ticket of the wrong form", reason: "ticket_invalid", change: func(_ *testing.T, _ *authorityFixture, a *Activation) { a.Ticket = "CHG-1" }},
		{name: "wrong code", reason: "totp_invalid", codeSpent: true, change: func(t *testing.T, f *authorityFixture, a *Activation) { a.Code = f.wrongCode(t) }},
		{name: "empty code", reason: "totp_invalid", codeSpent: true, change: func(_ *testing.T, _ *authorityFixture, a *Activation) { a.Code = "" }},
		{
			name:      "replayed code",
			reason:    "totp_replayed",
			codeSpent: true,
			setup: func(t *testing.T, f *authorityFixture) {
				f.activate(t, f.activation(t))
			},
		},
		{
			name:      "locked out, even with the right code",
			reason:    "locked_out",
			codeSpent: true,
			setup: func(t *testing.T, f *authorityFixture) {
				for range 5 {
					_ = f.a.StepUp.Check(context.Background(), "alice", f.wrongCode(t))
				}
			},
		},
		{
			name:      "not enrolled",
			reason:    "totp_not_enrolled",
			codeSpent: true,
			change: func(_ *testing.T, _ *authorityFixture, a *Activation) {
				a.Caller = policy.Caller{User: "dave", Groups: []string{"ops"}}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			f := newAuthorityFixture(t)
			if tt.setup != nil {
				tt.setup(t, f)
			}
			sessionsBefore := countSessions(t, f)
			f.logs.TakeAll()

			act := f.activation(t)
			if tt.change != nil {
				tt.change(t, f, &act)
			}
			token, rec, err := f.a.Activate(ctx, act)
			var refused *ActivationError
			if !errors.As(err, &refused) {
				t.Fatalf("Activate = %q, %v, %v; want an *ActivationError", token, rec, err)
			}
			if token != "" || rec != nil {
				t.Fatalf("a refusal returned a token or a record")
			}
			if refused.Reason != tt.reason || refused.Message == "" || err.Error() != tt.reason+": "+refused.Message {
				t.Fatalf("refusal = %+v, want reason %q", refused, tt.reason)
			}
			if tt.reason == "locked_out" {
				until := f.clock.Now().Add(lockoutDuration)
				if !refused.LockedUntil.Equal(until) || !strings.Contains(refused.Message, until.Format("15:04 UTC")) {
					t.Fatalf("lockout refusal = %+v, want until %v", refused, until)
				}
			} else if !refused.LockedUntil.IsZero() {
				t.Fatalf("LockedUntil = %v on a %s refusal", refused.LockedUntil, tt.reason)
			}

			// Exactly one audit event, with the reason and the request's fields.
			all := f.logs.All()
			if len(all) != 1 {
				t.Fatalf("%d audit events, want 1: %+v", len(all), all)
			}
			m := fieldsOf(all[0])
			wantFields := map[string]any{
				"event": audit.EventActivationFailed, "reason": tt.reason, "user": act.Caller.User, "role": "console-admin",
				"justification": act.Justification, "ticket": act.Ticket, "client_ip": "192.0.2.1",
			}
			if len(m) != len(wantFields) {
				t.Errorf("fields = %v, want %v", m, wantFields)
			}
			for k, v := range wantFields {
				if m[k] != v {
					t.Errorf("field %s = %v, want %v", k, m[k], v)
				}
			}
			if all[0].Message != audit.EventActivationFailed {
				t.Errorf("message = %q", all[0].Message)
			}

			// No session was started.
			if n := countSessions(t, f); n != sessionsBefore {
				t.Fatalf("sessions in storage: %d, want %d", n, sessionsBefore)
			}

			// A refusal by the policy spends neither the code nor a failure: the same
			// code, with the request put right, still works.
			if !tt.codeSpent {
				if f.st.Exists(context.Background(), "jit/lockouts/"+state.Name("alice")+".json") {
					t.Fatal("a policy refusal counted as a TOTP failure")
				}
				fixed := f.activation(t)
				fixed.Code = act.Code
				f.activate(t, fixed)
			}
			f.assertNoSecretsLogged(t)
		})
	}
}

// countSessions counts session records in storage, for every user.
func countSessions(t *testing.T, f *authorityFixture) int {
	t.Helper()
	users, err := f.st.List(context.Background(), strings.TrimSuffix(sessionFolder, "/"), false)
	if err != nil {
		return 0
	}
	n := 0
	for _, u := range users {
		keys, err := f.st.List(context.Background(), u, false)
		if err != nil {
			t.Fatal(err)
		}
		n += len(keys)
	}
	return n
}

// TestAuditNeverContainsSecretsOrCodes runs a whole story — enrollment, success,
// replay, wrong codes, lockout, re-enrollment, end — and scans every audit entry.
func TestAuditNeverContainsSecretsOrCodes(t *testing.T) {
	ctx := context.Background()
	f := newAuthorityFixture(t)
	act := f.activation(t)
	_, rec := f.activate(t, act)
	if _, _, err := f.a.Activate(ctx, act); err == nil {
		t.Fatal("replay accepted")
	}
	for range 5 {
		bad := f.activation(t)
		bad.Code = f.wrongCode(t)
		_, _, _ = f.a.Activate(ctx, bad)
	}
	if _, _, err := f.a.Activate(ctx, f.activation(t)); err == nil {
		t.Fatal("locked out, yet accepted")
	}
	if _, err := f.a.End(ctx, "alice", rec.ID, session.Deactivated, "alice", "done"); err != nil {
		t.Fatal(err)
	}
	uri, err := f.a.StepUp.Enroll(ctx, "alice", "admin")
	if err != nil {
		t.Fatal(err)
	}
	key, _ := otp.NewKeyFromURL(uri)
	f.used = append(f.used, uri)
	f.used = append(f.used, secretForms(t, key.Secret())...)
	if n := len(events(f.logs, audit.EventEnrolled)); n != 2 {
		t.Fatalf("enrolled events: %d", n)
	}
	if m := events(f.logs, audit.EventEnrolled)[1].ContextMap(); m["replaced"] != true {
		t.Fatalf("re-enrollment fields = %v", m)
	}
	if n := len(events(f.logs, audit.EventActivationFailed)); n != 7 {
		t.Fatalf("activation_failed events: %d, want 7 (1 replay, 5 wrong, 1 locked)", n)
	}
	f.assertNoSecretsLogged(t)
}

func TestSessionExpiry(t *testing.T) {
	now := epoch.Add(10*time.Second + 700*time.Millisecond)
	tests := []struct {
		name     string
		until    time.Time // the grant's end; zero: none
		duration time.Duration
		want     time.Time
	}{
		{"no end to the eligibility", time.Time{}, time.Hour, epoch.Add(time.Hour + 10*time.Second)},
		{"eligibility ends later", now.Add(2 * time.Hour), time.Hour, epoch.Add(time.Hour + 10*time.Second)},
		{"eligibility ends sooner: capped", epoch.Add(10 * time.Minute), time.Hour, epoch.Add(10 * time.Minute)},
		{"eligibility ends at the same time", epoch.Add(time.Hour + 10*time.Second), time.Hour, epoch.Add(time.Hour + 10*time.Second)},
		{"eligibility ends in a fraction of a second", epoch.Add(10*time.Minute + 500*time.Millisecond), time.Hour, epoch.Add(10 * time.Minute)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newAuthorityFixture(t)
			f.clock.Set(now)
			f.role.Eligibility = []policy.Eligibility{{Subjects: []string{"alice"}, Until: tt.until}}
			act := f.activation(t)
			act.Duration = tt.duration
			token, rec := f.activate(t, act)
			if !rec.Expires.Equal(tt.want) {
				t.Fatalf("Expires = %v, want %v", rec.Expires, tt.want)
			}
			c, err := f.a.Verifier.Verify(token, session.Want{Subject: "alice", Audience: audience, Roles: []string{"console-admin"}}, now)
			if err != nil {
				t.Fatal(err)
			}
			if c.Expiry != tt.want.Unix() {
				t.Fatalf("exp = %d, want %d", c.Expiry, tt.want.Unix())
			}
			if !tt.until.IsZero() && c.Expiry > tt.until.Unix() {
				t.Fatalf("the token outlives the eligibility: exp %d > %d", c.Expiry, tt.until.Unix())
			}
		})
	}
}
