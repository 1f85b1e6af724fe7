package workflow

import (
	"context"
	"testing"
	"time"

	"github.com/caddy-jit/caddy-jit/audit"
	"github.com/caddy-jit/caddy-jit/policy"
	"github.com/caddy-jit/caddy-jit/session"
)

// reconfirmation is alice's proof for rec with her current code.
func (w *workflowFixture) reconfirmation(t *testing.T, rec *session.Record, role *policy.Role) Reconfirmation {
	t.Helper()
	return Reconfirmation{Caller: caller(rec.User), SessionID: rec.ID, Role: role, Code: w.code(t, rec.User), ClientIP: "203.0.113.9"}
}

// A re-confirmation moves the session's step-up to now and leaves its end alone: the
// new token differs in auth_time (and iat), never in exp.
func TestReconfirmMovesTheStepUpAndKeepsTheEnd(t *testing.T) {
	ctx := context.Background()
	w := newWorkflowFixture(t)
	rec := w.submit(t, w.activation(t, "alice", w.role)).Record
	activatedAt := rec.SteppedUpAt()
	w.clock.Add(10 * time.Minute)
	w.logs.TakeAll()

	token, got, err := w.a.Reconfirm(ctx, w.reconfirmation(t, rec, w.role))
	if err != nil {
		t.Fatalf("Reconfirm = %v", err)
	}
	now := w.clock.Now().Truncate(time.Second)
	if !got.SteppedUp.Equal(now) || got.SteppedUp.Equal(activatedAt) {
		t.Errorf("stepped up at %s, want now (%s)", got.SteppedUp, now)
	}
	if !got.Expires.Equal(rec.Expires) {
		t.Errorf("the end moved from %s to %s", rec.Expires, got.Expires)
	}
	stored, err := w.a.Records.Load(ctx, "alice", rec.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !stored.SteppedUp.Equal(now) || !stored.Expires.Equal(rec.Expires) || len(stored.Extensions) != 0 {
		t.Errorf("stored record %+v, want stepped up now with the old end and no extension", stored)
	}
	c, err := w.a.Verifier.Verify(token, session.Want{Subject: "alice", Audience: audience, Roles: []string{w.role.Name}}, w.clock.Now())
	if err != nil {
		t.Fatalf("the new token does not admit: %v", err)
	}
	if c.AuthTime != now.Unix() || c.Expiry != rec.Expires.Unix() || c.SessionID != rec.ID || c.NotBefore != rec.Start.Unix() {
		t.Errorf("claims auth_time %d exp %d sid %s nbf %d; want auth_time %d, the old exp %d, sid %s, nbf %d",
			c.AuthTime, c.Expiry, c.SessionID, c.NotBefore, now.Unix(), rec.Expires.Unix(), rec.ID, rec.Start.Unix())
	}
	if len(c.Methods) != 1 || c.Methods[0] != "otp" {
		t.Errorf("amr %v, want [otp] for a code", c.Methods)
	}
	ev := only(t, w.logs, audit.EventSessionReconfirmed)
	wantFields(t, audit.EventSessionReconfirmed, ev, map[string]any{
		"user": "alice", "role": w.role.Name, "session_id": rec.ID, "expires": rec.Expires.Format(time.RFC3339),
		"stepped_up": now.UTC().Format(time.RFC3339), "reconfirm_client_ip": "203.0.113.9", "amr": []any{"otp"},
	})
	if n := len(events(w.logs, audit.EventExtended)); n != 0 {
		t.Errorf("%d extended events, want none", n)
	}
}

func TestReconfirmRefusals(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name string
		// change makes the refused re-confirmation of alice's running session.
		change func(t *testing.T, w *workflowFixture, rec *session.Record, rc *Reconfirmation)
		reason string
	}{
		{"wrong code", func(t *testing.T, w *workflowFixture, _ *session.Record, rc *Reconfirmation) {
			rc.Code = wrongCodeAt(t, w.secret, w.clock.Now())
		}, "totp_invalid"},
		{"no code", func(_ *testing.T, _ *workflowFixture, _ *session.Record, rc *Reconfirmation) { rc.Code = "" }, "totp_invalid"},
		{"another user's session", func(t *testing.T, w *workflowFixture, _ *session.Record, rc *Reconfirmation) {
			rc.Caller, rc.Code = caller("bob"), w.code(t, "bob")
		}, ReasonSessionNotFound},
		{"not a session id", func(_ *testing.T, _ *workflowFixture, _ *session.Record, rc *Reconfirmation) {
			rc.SessionID = "../../enrollments/alice"
		}, ReasonSessionNotFound},
		{"deactivated", func(t *testing.T, w *workflowFixture, rec *session.Record, _ *Reconfirmation) {
			if _, err := w.a.End(ctx, "alice", rec.ID, session.Deactivated, "alice", "done"); err != nil {
				t.Fatal(err)
			}
		}, ReasonSessionNotActive},
		{"expired", func(_ *testing.T, w *workflowFixture, _ *session.Record, _ *Reconfirmation) {
			w.clock.Add(20 * time.Minute)
		}, ReasonSessionNotActive},
		{"role gone", func(_ *testing.T, _ *workflowFixture, _ *session.Record, rc *Reconfirmation) { rc.Role = nil }, string(policy.ReasonUnknownRole)},
		{"another role", func(_ *testing.T, w *workflowFixture, _ *session.Record, rc *Reconfirmation) { rc.Role = w.approval }, string(policy.ReasonUnknownRole)},
		{"no longer eligible", func(_ *testing.T, w *workflowFixture, _ *session.Record, rc *Reconfirmation) {
			rc.Role = w.roleWith(func(r *policy.Role) { r.Eligibility = []policy.Eligibility{{Subjects: []string{"bob"}}} })
		}, string(policy.ReasonNotEligible)},
		{"step_up asks for a passkey", func(_ *testing.T, w *workflowFixture, _ *session.Record, rc *Reconfirmation) {
			rc.Role = w.roleWith(func(r *policy.Role) { r.StepUp = policy.StepUpWebAuthn })
		}, string(policy.ReasonPasskeyRequired)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := newWorkflowFixture(t)
			rec := w.submit(t, w.activation(t, "alice", w.role)).Record
			w.clock.Add(5 * time.Minute)
			rc := w.reconfirmation(t, rec, w.role)
			tt.change(t, w, rec, &rc)
			w.logs.TakeAll()

			token, got, err := w.a.Reconfirm(ctx, rc)
			refusal(t, err, tt.reason)
			if token != "" || got != nil {
				t.Errorf("a refusal returned a token or a record: %q, %+v", token, got)
			}
			stored, err := w.a.Records.Load(ctx, "alice", rec.ID)
			if err != nil {
				t.Fatal(err)
			}
			if !stored.SteppedUp.Equal(rec.SteppedUp) || !stored.Expires.Equal(rec.Expires) {
				t.Errorf("a refused re-confirmation changed the record: stepped up %s → %s, end %s → %s",
					rec.SteppedUp, stored.SteppedUp, rec.Expires, stored.Expires)
			}
			ev := only(t, w.logs, audit.EventReconfirmFailed)
			wantFields(t, audit.EventReconfirmFailed, ev, map[string]any{"reason": tt.reason, "user": rc.Caller.User, "client_ip": "203.0.113.9"})
			if n := len(events(w.logs, audit.EventSessionReconfirmed)); n != 0 {
				t.Errorf("%d session_reconfirmed events after a refusal", n)
			}
		})
	}
}

// The code of the activation cannot confirm the session again: a code works once.
func TestReconfirmRefusesTheActivationsCode(t *testing.T) {
	w := newWorkflowFixture(t)
	act := w.activation(t, "alice", w.role)
	rec := w.submit(t, act).Record
	rc := Reconfirmation{Caller: caller("alice"), SessionID: rec.ID, Role: w.role, Code: act.Code, ClientIP: "203.0.113.9"}
	_, _, err := w.a.Reconfirm(context.Background(), rc)
	refusal(t, err, "totp_replayed")
}

// A refusal of the session is decided before the code is checked: the same code then
// works for the session it belongs to.
func TestReconfirmRefusedSessionSpendsNoCode(t *testing.T) {
	ctx := context.Background()
	w := newWorkflowFixture(t)
	rec := w.submit(t, w.activation(t, "alice", w.role)).Record
	rc := w.reconfirmation(t, rec, w.role)
	wrong := rc
	wrong.SessionID = "AAAAAAAAAAAAAAAAAAAAAA"
	if _, _, err := w.a.Reconfirm(ctx, wrong); err == nil {
		t.Fatal("a re-confirmation of an unknown session was accepted")
	}
	if _, _, err := w.a.Reconfirm(ctx, rc); err != nil {
		t.Fatalf("the code was spent by the refused re-confirmation: %v", err)
	}
}
