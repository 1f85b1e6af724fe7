package workflow

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/caddy-jit/caddy-jit/audit"
	"github.com/caddy-jit/caddy-jit/policy"
	"github.com/caddy-jit/caddy-jit/session"
)

// Finding 3 of issue 12: with max_active 1, bob schedules a start after alice's
// session ends; alice's extension may reach bob's start, not pass it. Activations and
// extensions count the same sessions the same way.
func TestExtensionCountsScheduledSessions(t *testing.T) {
	ctx := context.Background()
	w := newWorkflowFixture(t)
	role := w.roleWith(func(r *policy.Role) { r.MaxActive = 1; r.MaxTotal = 3 * time.Hour })

	alice := w.submit(t, w.activation(t, "alice", role)).Record // 15m
	bobAct := w.activation(t, "bob", role)
	bobAct.Start = alice.Expires.Add(10 * time.Minute)
	bob := w.submit(t, bobAct).Record
	if bob == nil || !bob.Start.Equal(bobAct.Start.Truncate(time.Second)) {
		t.Fatalf("bob's scheduled session = %+v", bob)
	}

	tests := []struct {
		name     string
		duration time.Duration
		// until, when set, is the end asked for, counted from when the code is given.
		until  time.Time
		reason string
	}{
		{name: "ends before bob's start", duration: 20 * time.Minute},
		{name: "ends at bob's start", until: bob.Start},
		{name: "passes bob's start", duration: 45 * time.Minute, reason: string(policy.ReasonMaxActive)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before, err := w.a.Records.Load(ctx, "alice", alice.ID)
			if err != nil {
				t.Fatal(err)
			}
			ext := w.extension(t, alice, role, tt.duration)
			if !tt.until.IsZero() {
				ext.Duration = tt.until.Sub(w.clock.Now().Truncate(time.Second))
			}
			_, got, err := w.a.Extend(ctx, ext)
			if tt.reason != "" {
				refusal(t, err, tt.reason)
				after, _ := w.a.Records.Load(ctx, "alice", alice.ID)
				if !after.Expires.Equal(before.Expires) {
					t.Fatalf("a refused extension moved the end from %s to %s", before.Expires, after.Expires)
				}
				return
			}
			if err != nil || got.Expires.After(bob.Start) {
				t.Fatalf("Extend = %+v, %v; want an end no later than bob's start %s", got, err, bob.Start)
			}
		})
	}

	// Once bob's session is over, the place is free again.
	if _, err := w.a.End(ctx, "bob", bob.ID, session.Deactivated, "bob", "not needed"); err != nil {
		t.Fatal(err)
	}
	if _, got, err := w.a.Extend(ctx, w.extension(t, alice, role, 45*time.Minute)); err != nil || !got.Expires.After(bob.Start) {
		t.Fatalf("Extend after bob's session ended = %+v, %v", got, err)
	}
}

// Finding 3, the other way round: a scheduled start is refused where an extension
// already holds the place.
func TestScheduledStartCountsExtendedSessions(t *testing.T) {
	ctx := context.Background()
	w := newWorkflowFixture(t)
	role := w.roleWith(func(r *policy.Role) { r.MaxActive = 1; r.MaxTotal = 3 * time.Hour })
	alice := w.submit(t, w.activation(t, "alice", role)).Record
	if _, _, err := w.a.Extend(ctx, w.extension(t, alice, role, time.Hour)); err != nil {
		t.Fatal(err)
	}
	act := w.activation(t, "bob", role)
	act.Start = alice.Expires.Add(10 * time.Minute) // after the end before the extension
	_, err := w.a.Submit(ctx, act)
	refusal(t, err, string(policy.ReasonMaxActive))
}

// extensionFixture is a running session of a role whose activations and extensions
// need one approval (approvers: alice, carol, dave, group:sec).
func extensionFixture(t *testing.T, change func(r *policy.Role)) (*workflowFixture, *policy.Role, *session.Record, string) {
	t.Helper()
	w := newWorkflowFixture(t)
	role := w.roleWith(func(r *policy.Role) {
		r.Name = "prod-db"
		r.MaxTotal = 2 * time.Hour
		r.Approval = &policy.Approval{Approvers: approvers, Count: 1, Expires: 24 * time.Hour}
		if change != nil {
			change(r)
		}
	})
	req := w.request(t, "alice", role)
	req = w.decide(t, w.decision(t, req.ID, "carol", role, true, ""))
	rec, err := w.a.Records.Load(context.Background(), "alice", req.SessionID)
	if err != nil {
		t.Fatal(err)
	}
	token, err := w.a.SignRecord(rec, w.clock.Now())
	if err != nil {
		t.Fatal(err)
	}
	w.logs.TakeAll()
	w.notes.reset()
	return w, role, rec, token
}

// Finding 8 of issue 12: extending a session of a role that needs approval files a
// request; nothing moves until an approver other than the requester approves it.
func TestExtensionOfApprovalRoleWaitsForApprovers(t *testing.T) {
	ctx := context.Background()
	w, role, rec, token := extensionFixture(t, nil)

	// Extend (the solo path) refuses outright and changes nothing.
	if _, _, err := w.a.Extend(ctx, w.extension(t, rec, role, time.Hour)); !errors.Is(err, ErrNeedsApproval) {
		t.Fatalf("Extend of an approval role = %v, want ErrNeedsApproval", err)
	}

	ext := w.extension(t, rec, role, time.Hour)
	asked := w.clock.Now().Truncate(time.Second)
	out, err := w.a.SubmitExtension(ctx, ext)
	if err != nil || out.Request == nil || out.Token != "" {
		t.Fatalf("SubmitExtension = %+v, %v; want a request and no token", out, err)
	}
	req := out.Request
	if !req.IsExtension() || req.ExtendsSession != rec.ID || !req.NewEnd.Equal(asked.Add(time.Hour)) ||
		req.State != RequestPending || req.Needed != 1 || !req.Deadline.Equal(rec.Expires) {
		t.Fatalf("request = %+v", req)
	}
	if stored, _ := w.a.Records.Load(ctx, "alice", rec.ID); !stored.Expires.Equal(rec.Expires) || len(stored.Extensions) != 0 {
		t.Fatalf("the request moved the session: %+v", stored)
	}
	wantFields(t, audit.EventExtensionRequested, only(t, w.logs, audit.EventExtensionRequested),
		map[string]any{"request_id": req.ID, "session_id": rec.ID, "new_end": req.NewEnd.Format(time.RFC3339)})
	if n := w.notes.of(NotifyExtensionRequested); len(n) != 1 || n[0].SessionID != rec.ID || !n[0].Expires.Equal(req.NewEnd) ||
		!slices.Equal(n[0].Alert, approvers) {
		t.Fatalf("extension_requested notifications = %+v", n)
	}

	// A second request while the first waits is refused before the code.
	second := w.extension(t, rec, role, time.Hour)
	second.Code = "000000"
	_, err = w.a.SubmitExtension(ctx, second)
	refusal(t, err, ReasonExtensionOpen)

	// Approvers see it; the requester cannot approve it.
	pending, err := w.a.Pending(ctx, caller("carol"), w.roles(role))
	if err != nil || !slices.ContainsFunc(pending, func(r *Request) bool { return r.ID == req.ID }) {
		t.Fatalf("carol's pending = %v, %v; want the extension request", pending, err)
	}
	_, err = w.a.Decide(ctx, w.decision(t, req.ID, "alice", role, true, ""))
	refusal(t, err, string(policy.ReasonSelfApproval))

	w.logs.TakeAll()
	w.notes.reset()
	decided := w.decide(t, w.decision(t, req.ID, "dave", role, true, ""))
	if decided.State != RequestApproved || decided.SessionID != rec.ID {
		t.Fatalf("after the approval: %+v", decided)
	}
	stored, err := w.a.Records.Load(ctx, "alice", rec.ID)
	if err != nil {
		t.Fatal(err)
	}
	wantExt := session.Extended{At: w.clock.Now().UTC().Truncate(time.Second), Justification: ext.Justification, From: rec.Expires,
		To: req.NewEnd, RequestID: req.ID, Approvers: []string{"dave"}}
	if !stored.Expires.Equal(req.NewEnd) || asJSON(t, stored.Extensions) != asJSON(t, []session.Extended{wantExt}) {
		t.Fatalf("stored = %+v, want the end %s and %+v", stored, req.NewEnd, wantExt)
	}
	wantFields(t, audit.EventExtended, only(t, w.logs, audit.EventExtended), map[string]any{
		"session_id": rec.ID, "extension_request_id": req.ID, "extension_approvers": []string{"dave"},
		"expires": req.NewEnd.Format(time.RFC3339),
	})
	if n := w.notes.of(NotifyExtended); len(n) != 1 || !slices.Equal(n[0].Approvers, []string{"dave"}) {
		t.Fatalf("extended notifications = %+v", n)
	}

	// The new end reaches only a browser that presents the session's own token.
	t.Run("renew", func(t *testing.T) {
		other := w.submit(t, w.activation(t, "alice", w.role)).Token // another session of alice
		cases := []struct {
			name, user, audience, sid, presented string
		}{
			{name: "no token", user: "alice", audience: audience, sid: rec.ID},
			{name: "garbage", user: "alice", audience: audience, sid: rec.ID, presented: "a.b.c"},
			{name: "another session's token", user: "alice", audience: audience, sid: rec.ID, presented: other},
			{name: "another site", user: "alice", audience: "https://other.example", sid: rec.ID, presented: token},
			{name: "another user", user: "bob", audience: audience, sid: rec.ID, presented: token},
		}
		for _, c := range cases {
			if got, _, err := w.a.RenewToken(ctx, c.user, c.audience, c.sid, c.presented, "203.0.113.9"); !errors.Is(err, ErrNothingToCollect) || got != "" {
				t.Errorf("%s: RenewToken = %q, %v; want nothing", c.name, got, err)
			}
		}
		got, r, err := w.a.RenewToken(ctx, "alice", audience, rec.ID, token, "203.0.113.9")
		if err != nil {
			t.Fatal(err)
		}
		claims, err := w.a.Verifier.Verify(got, session.Want{Subject: "alice", Audience: audience, Roles: []string{role.Name}}, w.clock.Now())
		if err != nil || claims.SessionID != rec.ID || claims.Expiry != req.NewEnd.Unix() || !r.Expires.Equal(req.NewEnd) {
			t.Fatalf("renewed token %+v, %v", claims, err)
		}
		// Once current, there is nothing more to collect.
		if again, _, err := w.a.RenewToken(ctx, "alice", audience, rec.ID, got, ""); !errors.Is(err, ErrNothingToCollect) || again != "" {
			t.Fatalf("second RenewToken = %q, %v", again, err)
		}
	})
}

// An approved extension that cannot be applied: the session ended (the request
// lapses), or the role is full (it waits for a place while the session runs).
func TestApprovedExtensionThatCannotApply(t *testing.T) {
	ctx := context.Background()
	t.Run("session ended", func(t *testing.T) {
		w, role, rec, _ := extensionFixture(t, nil)
		out, err := w.a.SubmitExtension(ctx, w.extension(t, rec, role, time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.a.End(ctx, "alice", rec.ID, session.Deactivated, "alice", "done early"); err != nil {
			t.Fatal(err)
		}
		got := w.decide(t, w.decision(t, out.Request.ID, "carol", role, true, ""))
		if got.State != RequestExpired || got.Refused == "" || got.SessionID != "" {
			t.Fatalf("after approval of an ended session's extension: %+v", got)
		}
		if n := len(events(w.logs, audit.EventExtended)); n != 0 {
			t.Fatal("an ended session was extended")
		}
	})
	t.Run("role full", func(t *testing.T) {
		w, role, rec, _ := extensionFixture(t, func(r *policy.Role) { r.MaxActive = 1 })
		out, err := w.a.SubmitExtension(ctx, w.extension(t, rec, role, time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		// bob (not needing approval on this copy of the role) schedules a start right
		// after alice's current end.
		open := w.roleWith(func(r *policy.Role) { r.Name = role.Name; r.MaxActive = 1 })
		act := w.activation(t, "bob", open)
		act.Start = rec.Expires.Add(time.Minute)
		bob := w.submit(t, act).Record
		got := w.decide(t, w.decision(t, out.Request.ID, "carol", role, true, ""))
		if got.State != RequestApproved || got.SessionID != "" || !got.WaitingForPlace {
			t.Fatalf("approved while full: %+v", got)
		}
		if stored, _ := w.a.Records.Load(ctx, "alice", rec.ID); !stored.Expires.Equal(rec.Expires) {
			t.Fatalf("extended past bob's start: %+v", stored)
		}
		// bob's session ends: the sweep applies the extension.
		if _, err := w.a.End(ctx, "bob", bob.ID, session.Deactivated, "bob", "not needed"); err != nil {
			t.Fatal(err)
		}
		if err := w.a.SweepRequests(ctx, w.roles(role)); err != nil {
			t.Fatal(err)
		}
		if got := w.stored(t, out.Request.ID); got.SessionID != rec.ID || got.WaitingForPlace {
			t.Fatalf("after the sweep: %+v", got)
		}
		if stored, _ := w.a.Records.Load(ctx, "alice", rec.ID); !stored.Expires.Equal(out.Request.NewEnd) {
			t.Fatalf("after the sweep the session ends at %s, want %s", stored.Expires, out.Request.NewEnd)
		}
	})
}

// extend_without_approval keeps the solo extension; break-glass sessions follow the
// role's rule like any other.
func TestExtensionApprovalRule(t *testing.T) {
	ctx := context.Background()
	w, role, rec, _ := extensionFixture(t, func(r *policy.Role) { r.ExtendWithoutApproval = true })
	if _, got, err := w.a.Extend(ctx, w.extension(t, rec, role, time.Hour)); err != nil || !got.Expires.After(rec.Expires) {
		t.Fatalf("Extend under extend_without_approval = %+v, %v", got, err)
	}

	w2 := newWorkflowFixture(t)
	bg := w2.roleWith(func(r *policy.Role) {
		r.Name = "prod-db"
		r.MaxTotal = 2 * time.Hour
		r.BreakGlass = true
		r.Approval = &policy.Approval{Approvers: approvers, Count: 1, Expires: time.Hour}
	})
	act := w2.activation(t, "alice", bg)
	act.BreakGlass, act.Justification = true, "the database is down for everyone"
	emergency := w2.submit(t, act).Record
	out, err := w2.a.SubmitExtension(ctx, w2.extension(t, emergency, bg, time.Hour))
	if err != nil || out.Request == nil {
		t.Fatalf("extending a break-glass session = %+v, %v; want a request for approval", out, err)
	}
}

// An extension's proof renews the session's step-up: a `fresh` route reads auth_time.
func TestExtensionRenewsTheStepUp(t *testing.T) {
	ctx := context.Background()
	w := newWorkflowFixture(t)
	role := w.roleWith(func(r *policy.Role) { r.MaxTotal = 3 * time.Hour })
	rec := w.submit(t, w.activation(t, "alice", role)).Record
	w.clock.Add(10 * time.Minute)
	token, got, err := w.a.Extend(ctx, w.extension(t, rec, role, 30*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	now := w.clock.Now().UTC().Truncate(time.Second)
	if !got.SteppedUp.Equal(now) || !slices.Equal(got.Methods, []string{"otp"}) {
		t.Errorf("after the extension: stepped up %s (amr %v), want %s", got.SteppedUp, got.Methods, now)
	}
	stored, err := w.a.Records.Load(ctx, "alice", rec.ID)
	if err != nil || !stored.SteppedUp.Equal(now) {
		t.Fatalf("stored stepped_up %v (%v), want %s", stored.SteppedUp, err, now)
	}
	claims, err := w.a.Verifier.Verify(token, session.Want{Subject: "alice", Audience: audience, Roles: []string{role.Name}}, w.clock.Now())
	if err != nil || claims.AuthTime != now.Unix() {
		t.Errorf("the extended token's auth_time = %v (%v), want %d", claims, err, now.Unix())
	}
}
