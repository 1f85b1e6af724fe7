package workflow

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/caddy-jit/caddy-jit/audit"
	"github.com/caddy-jit/caddy-jit/policy"
	"github.com/caddy-jit/caddy-jit/session"
)

func TestExtend(t *testing.T) {
	// extendable: sessions of at most 1h, 2h in all with extensions.
	extendable := func(w *workflowFixture) *policy.Role {
		return w.roleWith(func(r *policy.Role) { r.MaxTotal = 2 * time.Hour })
	}
	// tight: sessions of at most 1h, 90m in all.
	tight := func(w *workflowFixture) *policy.Role {
		return w.roleWith(func(r *policy.Role) { r.MaxTotal = 90 * time.Minute })
	}
	tests := []struct {
		name string
		// role defaults to extendable.
		role     func(w *workflowFixture) *policy.Role
		duration time.Duration // of the session; default 15m
		// prepare runs after the activation, before the extension, which change adjusts.
		prepare func(t *testing.T, w *workflowFixture, rec *session.Record, role *policy.Role)
		change  func(t *testing.T, w *workflowFixture, ext *Extension)
		reason  string
		// end is the new end when it is capped; nil: the time of the extension + its
		// duration.
		end func(rec *session.Record, role *policy.Role) time.Time
	}{
		{
			name: "within max_total",
			prepare: func(_ *testing.T, w *workflowFixture, _ *session.Record, _ *policy.Role) {
				w.clock.Add(5 * time.Minute)
			},
		},
		{
			name:     "capped at max_total",
			role:     tight,
			duration: time.Hour,
			prepare: func(_ *testing.T, w *workflowFixture, _ *session.Record, _ *policy.Role) {
				w.clock.Add(50 * time.Minute)
			},
			change: func(_ *testing.T, _ *workflowFixture, ext *Extension) { ext.Duration = time.Hour },
			end:    func(rec *session.Record, role *policy.Role) time.Time { return rec.Start.Add(role.MaxTotal) },
		},
		{
			name: "capped at the end of eligibility",
			role: func(w *workflowFixture) *policy.Role {
				return w.roleWith(func(r *policy.Role) {
					r.MaxTotal = 2 * time.Hour
					r.Eligibility = []policy.Eligibility{{Subjects: []string{"alice"}, Until: w.clock.Now().Add(20 * time.Minute)}}
				})
			},
			end: func(rec *session.Record, _ *policy.Role) time.Time { return rec.Start.Add(20 * time.Minute) },
		},
		{
			name: "eligibility ends with the session",
			role: func(w *workflowFixture) *policy.Role {
				return w.roleWith(func(r *policy.Role) {
					r.MaxTotal = 2 * time.Hour
					r.Eligibility = []policy.Eligibility{{Subjects: []string{"alice"}, Until: w.clock.Now().Add(15 * time.Minute)}}
				})
			},
			reason: "max_total_reached",
		},
		{
			name:     "beyond max_total",
			role:     tight,
			duration: time.Hour,
			prepare: func(t *testing.T, w *workflowFixture, rec *session.Record, role *policy.Role) {
				w.clock.Add(55 * time.Minute)
				_, got, err := w.a.Extend(context.Background(), w.extension(t, rec, role, time.Hour))
				if err != nil || !got.Expires.Equal(rec.Start.Add(90*time.Minute)) {
					t.Fatalf("first extension = %+v, %v", got, err)
				}
				w.clock.Add(20 * time.Minute)
			},
			change: func(_ *testing.T, _ *workflowFixture, ext *Extension) { ext.Duration = time.Hour },
			reason: "max_total_reached",
		},
		{
			name: "max_total equal to max_duration",
			role: func(w *workflowFixture) *policy.Role {
				return w.roleWith(func(r *policy.Role) { r.MaxTotal = time.Hour })
			},
			reason: "extension_not_permitted",
		},
		{
			name:   "no max_total",
			role:   func(w *workflowFixture) *policy.Role { return w.role },
			reason: "extension_not_permitted",
		},
		{
			name: "someone else's session",
			change: func(t *testing.T, w *workflowFixture, ext *Extension) {
				ext.Caller = caller("bob")
				ext.Code = w.code(t, "bob")
			},
			reason: "session_not_found",
		},
		{
			name:   "unknown session",
			change: func(_ *testing.T, _ *workflowFixture, ext *Extension) { ext.SessionID = "AAAAAAAAAAAAAAAAAAAAAA" },
			reason: "session_not_found",
		},
		{
			name: "ended session",
			prepare: func(t *testing.T, w *workflowFixture, rec *session.Record, _ *policy.Role) {
				if _, err := w.a.End(context.Background(), "alice", rec.ID, session.Deactivated, "alice", "done"); err != nil {
					t.Fatal(err)
				}
			},
			reason: "session_not_active",
		},
		{
			name:    "expired session",
			prepare: func(_ *testing.T, w *workflowFixture, rec *session.Record, _ *policy.Role) { w.clock.Set(rec.Expires) },
			reason:  "session_not_active",
		},
		{
			name: "wrong code",
			change: func(t *testing.T, w *workflowFixture, ext *Extension) {
				ext.Code = wrongCodeAt(t, w.secrets["alice"], w.clock.Now())
			},
			reason: "totp_invalid",
		},
		{
			name:   "longer than max_duration",
			change: func(_ *testing.T, _ *workflowFixture, ext *Extension) { ext.Duration = time.Hour + time.Minute },
			reason: "duration_too_long",
		},
		{
			name:   "not past the current end",
			change: func(_ *testing.T, _ *workflowFixture, ext *Extension) { ext.Duration = 10 * time.Minute },
			reason: "duration_invalid",
		},
		{
			name:   "justification missing",
			change: func(_ *testing.T, _ *workflowFixture, ext *Extension) { ext.Justification = "" },
			reason: "justification_missing",
		},
		{
			name:   "role renamed",
			change: func(_ *testing.T, w *workflowFixture, ext *Extension) { ext.Role = w.approval },
			reason: "unknown_role",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			w := newWorkflowFixture(t)
			role := extendable(w)
			if tt.role != nil {
				role = tt.role(w)
			}
			act := w.activation(t, "alice", role)
			if tt.duration != 0 {
				act.Duration = tt.duration
			}
			res := w.submit(t, act)
			rec := res.Record
			if tt.prepare != nil {
				tt.prepare(t, w, rec, role)
			}
			before, err := w.a.Records.Load(ctx, "alice", rec.ID)
			if err != nil {
				t.Fatal(err)
			}
			w.logs.TakeAll()
			w.notes.reset()

			ext := w.extension(t, rec, role, 30*time.Minute)
			if tt.change != nil {
				tt.change(t, w, &ext)
			}
			now := w.clock.Now()
			token, got, err := w.a.Extend(ctx, ext)
			after, loadErr := w.a.Records.Load(ctx, "alice", rec.ID)
			if loadErr != nil {
				t.Fatal(loadErr)
			}
			if tt.reason != "" {
				refusal(t, err, tt.reason)
				if token != "" || got != nil {
					t.Fatalf("a refusal returned %q, %+v", token, got)
				}
				if asJSON(t, after) != asJSON(t, before) {
					t.Fatalf("a refusal changed the record:\n%s\nwas %s", asJSON(t, after), asJSON(t, before))
				}
				wantFields(t, audit.EventExtensionFailed, only(t, w.logs, audit.EventExtensionFailed),
					map[string]any{"reason": tt.reason, "session_id": ext.SessionID, "user": ext.Caller.User})
				if n := len(events(w.logs, audit.EventExtended)); n != 0 {
					t.Fatal("a refusal was audited as extended")
				}
				if ev := w.notes.events(); len(ev) != 0 {
					t.Fatalf("a refusal notified %v", ev)
				}
				return
			}

			if err != nil {
				t.Fatalf("Extend = %v", err)
			}
			wantEnd := now.Add(ext.Duration)
			if tt.end != nil {
				wantEnd = tt.end(rec, role)
				if !wantEnd.Before(now.Add(ext.Duration)) {
					t.Fatal("the case does not reach its cap")
				}
			}
			if !got.Expires.Equal(wantEnd) || !after.Expires.Equal(wantEnd) {
				t.Fatalf("Expires = %v (stored %v), want %v", got.Expires, after.Expires, wantEnd)
			}
			wantExt := []session.Extended{{At: now, Justification: ext.Justification, From: before.Expires, To: wantEnd}}
			if asJSON(t, after.Extensions) != asJSON(t, wantExt) || !after.Start.Equal(before.Start) {
				t.Fatalf("stored extensions = %s, want %s", asJSON(t, after.Extensions), asJSON(t, wantExt))
			}
			c, err := w.a.Verifier.Verify(token, session.Want{Subject: "alice", Audience: audience, Roles: []string{role.Name}}, now)
			if err != nil {
				t.Fatal(err)
			}
			old, err := claimsOf(t, res.Token)
			if err != nil {
				t.Fatal(err)
			}
			if c.SessionID != rec.ID || c.Expiry != wantEnd.Unix() || c.Expiry <= old.Expiry || c.NotBefore != rec.Start.Unix() {
				t.Fatalf("new claims = %+v, old exp %d", c, old.Expiry)
			}
			wantFields(t, audit.EventExtended, only(t, w.logs, audit.EventExtended), map[string]any{
				"session_id": rec.ID, "user": "alice", "from": before.Expires.Format(time.RFC3339),
				"expires": wantEnd.Format(time.RFC3339), "extension_justification": ext.Justification,
			})
			if ev := w.notes.events(); !slices.Equal(ev, []string{NotifyExtended}) {
				t.Fatalf("notifications %v", ev)
			}
			if n := w.notes.of(NotifyExtended)[0]; n.SessionID != rec.ID || !n.Expires.Equal(wantEnd) || n.Justification != ext.Justification {
				t.Fatalf("extended notification = %+v", n)
			}
		})
	}
}

// extension asks for more time on rec, with the user's current code.
func (w *workflowFixture) extension(t *testing.T, rec *session.Record, role *policy.Role, d time.Duration) Extension {
	t.Helper()
	return Extension{
		Caller: caller(rec.User), SessionID: rec.ID, Role: role, Duration: d,
		Justification: "the migration runs late", Code: w.code(t, rec.User), ClientIP: "192.0.2.1",
	}
}
