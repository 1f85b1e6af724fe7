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

func TestScheduledStartWithApproval(t *testing.T) {
	ctx := context.Background()
	w := newWorkflowFixture(t)
	act := w.activation(t, "alice", w.approval)
	start := w.clock.Now().Add(2*time.Hour + 30*time.Minute)
	act.Start = start
	res := w.submit(t, act)
	if res.Request == nil || !res.Request.Start.Equal(start) {
		t.Fatalf("Submit = %+v, want a request starting at %v", res, start)
	}
	w.decide(t, w.decision(t, res.Request.ID, "carol", w.approval, true, ""))
	req := w.decide(t, w.decision(t, res.Request.ID, "erin", w.approval, true, ""))
	now := w.clock.Now()
	if req.State != RequestApproved || req.SessionID == "" {
		t.Fatalf("request = %+v", req)
	}
	rec, err := w.a.Records.Load(ctx, "alice", req.SessionID)
	if err != nil {
		t.Fatal(err)
	}
	if !rec.Start.Equal(start) || !rec.Expires.Equal(start.Add(15*time.Minute)) || rec.Started(now) {
		t.Fatalf("record Start %v Expires %v, want %v and %v", rec.Start, rec.Expires, start, start.Add(15*time.Minute))
	}
	if !slices.Equal(rec.Approvers, []string{"carol", "erin"}) {
		t.Fatalf("approvers = %v", rec.Approvers)
	}
	wantFields(t, audit.EventActivationSucceeded, only(t, w.logs, audit.EventActivationSucceeded),
		map[string]any{"start": start.Format(time.RFC3339), "duration": "15m", "request_id": req.ID})
	if n := w.notes.of(NotifyActivated); len(n) != 1 || !n[0].Start.Equal(start) {
		t.Fatalf("activated notifications = %+v", n)
	}

	token, err := w.a.SignRecord(rec, now)
	if err != nil {
		t.Fatal(err)
	}
	c, err := claimsOf(t, token)
	if err != nil {
		t.Fatal(err)
	}
	if c.NotBefore != start.Unix() || c.IssuedAt != now.Unix() || c.Expiry != start.Add(15*time.Minute).Unix() {
		t.Fatalf("claims nbf %d iat %d exp %d, want nbf %d", c.NotBefore, c.IssuedAt, c.Expiry, start.Unix())
	}
	want := session.Want{Subject: "alice", Audience: audience, Roles: []string{"prod-db"}}
	if _, err := w.a.Verifier.Verify(token, want, now); !errors.Is(err, session.ErrTokenNotYet) {
		t.Fatalf("Verify before the start = %v, want %v", err, session.ErrTokenNotYet)
	}
	if _, err := w.a.Verifier.Verify(token, want, start); err != nil {
		t.Fatalf("Verify at the start = %v", err)
	}
}

func TestMaxActive(t *testing.T) {
	ctx := context.Background()
	t.Run("submit while the role is full", func(t *testing.T) {
		w := newWorkflowFixture(t)
		role := w.roleWith(func(r *policy.Role) { r.MaxActive = 1 })
		first := w.submit(t, w.activation(t, "alice", role))
		if first.Record == nil {
			t.Fatalf("first Submit = %+v", first)
		}
		w.logs.TakeAll()
		w.notes.reset()

		for _, user := range []string{"bob", "alice"} {
			res, err := w.a.Submit(ctx, w.activation(t, user, role))
			refusal(t, err, "max_active_reached")
			if res != nil {
				t.Fatalf("a refused Submit returned %+v", res)
			}
		}
		if n := countSessions(t, w.authorityFixture); n != 1 {
			t.Fatalf("%d sessions, want 1", n)
		}
		failed := events(w.logs, audit.EventActivationFailed)
		if len(failed) != 2 || failed[0].ContextMap()["reason"] != "max_active_reached" || failed[0].ContextMap()["user"] != "bob" {
			t.Fatalf("activation_failed events = %+v", failed)
		}
		if ev := w.notes.events(); len(ev) != 0 {
			t.Fatalf("a refusal notified %v", ev)
		}
		// Another role is not limited by this one; a role without max_active neither.
		other := w.roleWith(func(r *policy.Role) { r.Name = "other"; r.MaxActive = 1 })
		if res := w.submit(t, w.activation(t, "bob", other)); res.Record == nil {
			t.Fatalf("Submit of another role = %+v", res)
		}

		// Once the session ends, the place is free.
		if _, err := w.a.End(ctx, "alice", first.Record.ID, session.Deactivated, "alice", "done"); err != nil {
			t.Fatal(err)
		}
		if res := w.submit(t, w.activation(t, "bob", role)); res.Record == nil {
			t.Fatalf("Submit after End = %+v", res)
		}
	})

	t.Run("approved request waits for a place", func(t *testing.T) {
		w := newWorkflowFixture(t)
		role := w.roleWith(func(r *policy.Role) {
			r.Name = "prod-db"
			r.MaxActive = 1
			r.Approval = &policy.Approval{Approvers: approvers, Count: 1, Expires: 30 * time.Minute}
		})
		firstAct := w.activation(t, "alice", role)
		firstAct.Duration = time.Hour
		first := w.submit(t, firstAct).Request
		first = w.decide(t, w.decision(t, first.ID, "carol", role, true, ""))
		if first.SessionID == "" {
			t.Fatalf("first request = %+v", first)
		}
		second := w.request(t, "bob", role)
		w.logs.TakeAll()
		w.notes.reset()

		second = w.decide(t, w.decision(t, second.ID, "carol", role, true, ""))
		if second.State != RequestApproved || second.SessionID != "" {
			t.Fatalf("approved while full: %+v, want approved without a session", second)
		}
		if got := w.stored(t, second.ID); got.State != RequestApproved || got.SessionID != "" {
			t.Fatalf("stored = %+v", got)
		}
		wantFields(t, audit.EventActivationFailed, only(t, w.logs, audit.EventActivationFailed),
			map[string]any{"reason": "max_active_reached", "request_id": second.ID, "user": "bob"})
		if ev := w.notes.events(); !slices.Equal(ev, []string{NotifyApproved}) {
			t.Fatalf("notifications %v, want only approved", ev)
		}
		if n := countSessions(t, w.authorityFixture); n != 1 {
			t.Fatalf("%d sessions, want 1", n)
		}

		// A sweep while the role is still full starts nothing.
		if err := w.a.SweepRequests(ctx, w.roles(role)); err != nil {
			t.Fatal(err)
		}
		if got := w.stored(t, second.ID); got.SessionID != "" || countSessions(t, w.authorityFixture) != 1 {
			t.Fatalf("started while full: %+v", got)
		}
		// The deadline does not expire an approved request.
		w.clock.Set(second.Deadline.Add(time.Minute))
		if err := w.a.SweepRequests(ctx, w.roles(role)); err != nil {
			t.Fatal(err)
		}
		if got := w.stored(t, second.ID); got.State != RequestApproved || got.SessionID != "" {
			t.Fatalf("after the deadline, still full: %+v", got)
		}
		if _, err := w.a.End(ctx, "alice", first.SessionID, session.Deactivated, "alice", "done"); err != nil {
			t.Fatal(err)
		}
		w.notes.reset()
		w.logs.TakeAll()
		if err := w.a.SweepRequests(ctx, w.roles(role)); err != nil {
			t.Fatal(err)
		}
		now := w.clock.Now()
		got := w.stored(t, second.ID)
		if got.State != RequestApproved || session.CheckSessionID(got.SessionID) != nil {
			t.Fatalf("after the sweep: %+v", got)
		}
		rec, err := w.a.Records.Load(ctx, "bob", got.SessionID)
		if err != nil {
			t.Fatal(err)
		}
		if rec.RequestID != second.ID || !slices.Equal(rec.Approvers, []string{"carol"}) || !rec.Start.Equal(now) ||
			!rec.Expires.Equal(now.Add(15*time.Minute)) {
			t.Fatalf("record = %+v", rec)
		}
		if ev := w.notes.events(); !slices.Equal(ev, []string{NotifyActivated}) {
			t.Fatalf("notifications %v, want [activated]", ev)
		}
		wantFields(t, audit.EventActivationSucceeded, only(t, w.logs, audit.EventActivationSucceeded), map[string]any{"request_id": second.ID})

		// A second sweep starts nothing more.
		if err := w.a.SweepRequests(ctx, w.roles(role)); err != nil {
			t.Fatal(err)
		}
		if n := countSessions(t, w.authorityFixture); n != 2 {
			t.Fatalf("%d session records, want 2", n)
		}
		if n := len(w.notes.of(NotifyActivated)); n != 1 {
			t.Fatalf("%d activated notifications, want 1", n)
		}
	})
}

func TestBreakGlass(t *testing.T) {
	ctx := context.Background()
	w := newWorkflowFixture(t)
	role := w.roleWith(func(r *policy.Role) {
		r.Name = "prod-db"
		r.BreakGlass = true
		r.Approval = &policy.Approval{Approvers: approvers, Count: 2, Expires: time.Hour}
		// Closed at this hour: break-glass skips allowed hours too.
		r.AllowedHours = []policy.HoursWindow{{Days: [7]bool{true, true, true, true, true, true, true}, From: 9 * 60, To: 17 * 60}}
	})
	act := w.activation(t, "alice", role)
	act.BreakGlass = true
	act.Justification = "database down, paging"
	res := w.submit(t, act)
	if res.Request != nil || res.Record == nil || res.Token == "" {
		t.Fatalf("break-glass Submit = %+v, want a session at once", res)
	}
	rec := res.Record
	if !rec.BreakGlass || rec.RequestID != "" {
		t.Fatalf("record = %+v", rec)
	}
	if stored, err := w.a.Records.Load(ctx, "alice", rec.ID); err != nil || !stored.BreakGlass {
		t.Fatalf("stored record = %+v, %v", stored, err)
	}
	wantFields(t, audit.EventActivationSucceeded, only(t, w.logs, audit.EventActivationSucceeded),
		map[string]any{"session_id": rec.ID, "break_glass": true})
	wantFields(t, audit.EventBreakGlass, only(t, w.logs, audit.EventBreakGlass),
		map[string]any{"session_id": rec.ID, "user": "alice", "role": "prod-db", "break_glass": true, "justification": act.Justification})
	if n := len(events(w.logs, audit.EventActivationRequested)); n != 0 {
		t.Fatal("break-glass made a request")
	}
	if ev := w.notes.events(); !slices.Equal(ev, []string{NotifyActivated, NotifyBreakGlass}) {
		t.Fatalf("notifications %v, want [activated break_glass]", ev)
	}
	if n := w.notes.of(NotifyActivated)[0]; !n.BreakGlass || n.SessionID != rec.ID {
		t.Fatalf("activated notification = %+v", n)
	}
	if n := w.notes.of(NotifyBreakGlass)[0]; !n.BreakGlass || n.SessionID != rec.ID || !slices.Equal(n.Alert, approvers) {
		t.Fatalf("break_glass notification = %+v", n)
	}

	now := w.clock.Now()
	c, err := w.a.Verifier.Verify(res.Token, session.Want{Subject: "alice", Audience: audience, Roles: []string{"prod-db"}}, now)
	if err != nil || !c.BreakGlass {
		t.Fatalf("Verify = %+v, %v; want break-glass claims", c, err)
	}

	// A normal session, on a role without approval.
	normal := w.submit(t, w.activation(t, "bob", w.role))
	if normal.Record == nil || normal.Record.BreakGlass {
		t.Fatalf("normal Submit = %+v", normal)
	}
	nc, err := w.a.Verifier.Verify(normal.Token, session.Want{Subject: "bob", Audience: audience, Roles: []string{"console-admin"}}, now)
	if err != nil || nc.BreakGlass {
		t.Fatalf("Verify of the normal session = %+v, %v", nc, err)
	}

	w.logs.TakeAll()
	w.a.Audit.Access(c.Holder(), "192.0.2.1", "GET", "/db", 200, 42, time.Millisecond, nil)
	w.a.Audit.Access(nc.Holder(), "192.0.2.2", "GET", "/console", 200, 42, time.Millisecond, nil)
	access := events(w.logs, audit.EventAccess)
	if len(access) != 2 {
		t.Fatalf("%d access events", len(access))
	}
	bg, plain := access[0].ContextMap(), access[1].ContextMap()
	if bg["break_glass"] != true || bg["session_id"] != rec.ID {
		t.Fatalf("break-glass access event = %v", bg)
	}
	if _, found := plain["break_glass"]; found || plain["session_id"] != normal.Record.ID {
		t.Fatalf("normal access event = %v, want no break_glass field", plain)
	}

	// The refusals of break-glass.
	for _, tt := range []struct {
		name   string
		change func(a *Activation)
		reason string
	}{
		{"role without break-glass", func(a *Activation) { a.Role = w.approval }, "break_glass_not_allowed"},
		{"short justification on a role where it is optional", func(a *Activation) {
			a.Role = w.roleWith(func(r *policy.Role) { r.BreakGlass = true; r.JustificationMinLength = 0 })
			a.Justification = "urgent"
		}, "justification_too_short"},
		{"scheduled", func(a *Activation) { a.Start = w.clock.Now().Add(time.Hour) }, "break_glass_scheduled"},
	} {
		act := w.activation(t, "bob", role)
		act.BreakGlass = true
		act.Justification = "database down, paging"
		tt.change(&act)
		_, err := w.a.Submit(ctx, act)
		var refused *ActivationError
		if !errors.As(err, &refused) || refused.Reason != tt.reason {
			t.Errorf("%s: Submit = %v, want %s", tt.name, err, tt.reason)
		}
	}
	if n := len(events(w.logs, audit.EventBreakGlass)); n != 0 {
		t.Fatalf("a refused break-glass was audited as break_glass")
	}
}
