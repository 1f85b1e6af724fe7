package workflow

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/caddy-jit/caddy-jit/audit"
	"github.com/caddy-jit/caddy-jit/policy"
	"github.com/caddy-jit/caddy-jit/session"
)

func TestSubmitWithApprovalMakesAPendingRequest(t *testing.T) {
	ctx := context.Background()
	w := newWorkflowFixture(t)
	act := w.activation(t, "alice", w.approval)
	now := w.clock.Now()
	res, err := w.a.Submit(ctx, act)
	if err != nil {
		t.Fatal(err)
	}
	if res.Token != "" || res.Record != nil || res.Request == nil {
		t.Fatalf("Submit = %+v, want a request and no session", res)
	}
	req := res.Request
	want := &Request{
		ID: req.ID, User: "alice", Role: "prod-db", Audience: audience, Justification: act.Justification,
		Ticket: "INC-42", ClientIP: "192.0.2.1", UserAgent: "test-agent/1.0", Duration: 15 * time.Minute,
		Return: "/admin", Created: now, Deadline: now.Add(24 * time.Hour), Needed: 2, State: RequestPending,
		PickupHash: pickupHash(res.PickupSecret), Methods: []string{"otp"}, SteppedUp: now,
	}
	if !ValidPickupSecret(res.PickupSecret) {
		t.Fatalf("pickup secret %q: want 43 characters of base64url", res.PickupSecret)
	}
	if got, wantJSON := asJSON(t, req), asJSON(t, want); got != wantJSON {
		t.Fatalf("request = %s\nwant      %s", got, wantJSON)
	}
	if session.CheckSessionID(req.ID) != nil {
		t.Fatalf("request id %q", req.ID)
	}
	if got := asJSON(t, w.stored(t, req.ID)); got != asJSON(t, want) {
		t.Fatalf("stored request = %s", got)
	}
	if n := countSessions(t, w.authorityFixture); n != 0 {
		t.Fatalf("%d session records, want none before approval", n)
	}
	if n := len(events(w.logs, audit.EventActivationSucceeded)); n != 0 {
		t.Fatalf("%d activation_succeeded events before approval", n)
	}
	wantFields(t, audit.EventActivationRequested, only(t, w.logs, audit.EventActivationRequested), map[string]any{
		"request_id": req.ID, "user": "alice", "role": "prod-db", "approvals_needed": 2,
		"deadline": now.Add(24 * time.Hour).Format(time.RFC3339), "justification": act.Justification,
	})

	notes := w.notes.all()
	if len(notes) != 1 {
		t.Fatalf("notifications %v, want one: requested", w.notes.events())
	}
	n := notes[0]
	if n.Event != NotifyRequested || n.RequestID != req.ID || n.User != "alice" || n.Role != "prod-db" ||
		!n.Deadline.Equal(req.Deadline) || !slices.Equal(n.Alert, approvers) || n.SessionID != "" {
		t.Fatalf("notification = %+v", n)
	}

	// Activate, which cannot hand out a request, says so.
	if _, _, err := w.a.Activate(ctx, w.activation(t, "alice", w.approval)); !errors.Is(err, ErrNeedsApproval) {
		t.Fatalf("Activate on a role with approval = %v, want %v", err, ErrNeedsApproval)
	}
}

// TestDecideRefusals: each refusal leaves a pending request as it was, audits
// approval_failed with the reason and notifies no one.
func TestDecideRefusals(t *testing.T) {
	tests := []struct {
		name   string
		ap     func(t *testing.T, w *workflowFixture, id string) Approval
		reason string
	}{
		{"self-approval", func(t *testing.T, w *workflowFixture, id string) Approval {
			return w.decision(t, id, "alice", w.approval, true, "")
		}, "self_approval"},
		{"not an approver", func(t *testing.T, w *workflowFixture, id string) Approval {
			return w.decision(t, id, "bob", w.approval, true, "")
		}, "not_an_approver"},
		{"approver group missing", func(t *testing.T, w *workflowFixture, id string) Approval {
			ap := w.decision(t, id, "erin", w.approval, true, "")
			ap.Approver.Groups = nil
			return ap
		}, "not_an_approver"},
		{"role no longer needs approval", func(t *testing.T, w *workflowFixture, id string) Approval {
			return w.decision(t, id, "carol", w.roleWith(func(r *policy.Role) { r.Name = "prod-db" }), true, "")
		}, "not_an_approver"},
		{"another role", func(t *testing.T, w *workflowFixture, id string) Approval {
			return w.decision(t, id, "carol", w.roleWith(func(r *policy.Role) { r.Approval = w.approval.Approval }), true, "")
		}, "not_an_approver"},
		{"wrong code", func(t *testing.T, w *workflowFixture, id string) Approval {
			ap := w.decision(t, id, "carol", w.approval, true, "")
			ap.Code = wrongCodeAt(t, w.secrets["carol"], w.clock.Now())
			return ap
		}, "totp_invalid"},
		{"empty code", func(t *testing.T, w *workflowFixture, id string) Approval {
			ap := w.decision(t, id, "carol", w.approval, true, "")
			ap.Code = ""
			return ap
		}, "totp_invalid"},
		{"the requester's code", func(t *testing.T, w *workflowFixture, id string) Approval {
			ap := w.decision(t, id, "carol", w.approval, true, "")
			ap.Code = codeAt(t, w.secrets["alice"], w.clock.Now())
			for _, d := range []time.Duration{-30 * time.Second, 0, 30 * time.Second} {
				if ap.Code == codeAt(t, w.secrets["carol"], w.clock.Now().Add(d)) {
					t.Skip("alice's code is one of carol's too")
				}
			}
			return ap
		}, "totp_invalid"},
		{"replayed code", func(t *testing.T, w *workflowFixture, id string) Approval {
			ap := w.decision(t, id, "carol", w.approval, true, "")
			if err := w.a.StepUp.Check(context.Background(), "carol", ap.Code); err != nil {
				t.Fatal(err)
			}
			return ap
		}, "totp_replayed"},
		{"deny without comment", func(t *testing.T, w *workflowFixture, id string) Approval {
			return w.decision(t, id, "carol", w.approval, false, "")
		}, "comment_missing"},
		{"deny with a blank comment", func(t *testing.T, w *workflowFixture, id string) Approval {
			return w.decision(t, id, "carol", w.approval, false, " \t\n ")
		}, "comment_missing"},
		{"comment too long", func(t *testing.T, w *workflowFixture, id string) Approval {
			return w.decision(t, id, "carol", w.approval, true, strings.Repeat("c", policy.MaxJustificationLength+1))
		}, "comment_too_long"},
		{"unknown request", func(t *testing.T, w *workflowFixture, _ string) Approval {
			return w.decision(t, "AAAAAAAAAAAAAAAAAAAAAA", "carol", w.approval, true, "")
		}, "request_not_found"},
		{"malformed request id", func(t *testing.T, w *workflowFixture, _ string) Approval {
			return w.decision(t, "../../keys/signing", "carol", w.approval, true, "")
		}, "request_not_found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			w := newWorkflowFixture(t)
			req := w.request(t, "alice", w.approval)
			before := asJSON(t, w.stored(t, req.ID))
			w.logs.TakeAll()
			w.notes.reset()

			ap := tt.ap(t, w, req.ID)
			got, err := w.a.Decide(ctx, ap)
			refusal(t, err, tt.reason)
			if tt.reason != "request_not_found" && (got == nil || got.State != RequestPending || len(got.Decisions) != 0) {
				t.Fatalf("returned request = %+v", got)
			}
			if after := asJSON(t, w.stored(t, req.ID)); after != before {
				t.Fatalf("a refusal changed the request:\n%s\nwas %s", after, before)
			}
			if all := w.logs.All(); len(all) != 1 {
				t.Fatalf("audit events %+v, want one approval_failed", all)
			}
			fields := map[string]any{"reason": tt.reason, "by": ap.Approver.User, "request_id": ap.RequestID, "client_ip": "198.51.100.7"}
			if tt.reason != "request_not_found" {
				fields["user"], fields["role"] = "alice", "prod-db"
			}
			wantFields(t, audit.EventApprovalFailed, only(t, w.logs, audit.EventApprovalFailed), fields)
			if notes := w.notes.events(); len(notes) != 0 {
				t.Fatalf("a refusal notified %v", notes)
			}
			if n := countSessions(t, w.authorityFixture); n != 0 {
				t.Fatalf("%d sessions after a refusal", n)
			}
		})
	}
}

// TestDecideToApproval walks one request through its answers, in order.
func TestDecideToApproval(t *testing.T) {
	ctx := context.Background()
	w := newWorkflowFixture(t)
	req := w.request(t, "alice", w.approval)
	w.logs.TakeAll()
	w.notes.reset()

	steps := []struct {
		name     string
		approver string
		approve  bool
		comment  string
		wrong    bool   // a wrong code
		reason   string // the refusal; "" accepted
		state    string
		// decisions stored after the step
		decisions int
		notes     []string
	}{
		{name: "first approval", approver: "carol", approve: true, comment: " fine by me ", state: RequestPending, decisions: 1},
		{name: "self-approval", approver: "alice", approve: true, reason: "self_approval", state: RequestPending, decisions: 1},
		{name: "not an approver", approver: "bob", approve: true, reason: "not_an_approver", state: RequestPending, decisions: 1},
		{name: "same approver again", approver: "carol", approve: true, reason: "already_decided", state: RequestPending, decisions: 1},
		{name: "same approver denies", approver: "carol", approve: false, comment: "changed my mind", reason: "already_decided", state: RequestPending, decisions: 1},
		{name: "wrong code", approver: "dave", approve: true, wrong: true, reason: "totp_invalid", state: RequestPending, decisions: 1},
		{name: "deny without comment", approver: "dave", approve: false, reason: "comment_missing", state: RequestPending, decisions: 1},
		{name: "second approval", approver: "dave", approve: true, state: RequestApproved, decisions: 2,
			notes: []string{NotifyApproved, NotifyActivated}},
		{name: "after approval", approver: "erin", approve: true, reason: "already_decided", state: RequestApproved, decisions: 2},
	}
	for _, s := range steps {
		w.logs.TakeAll()
		w.notes.reset()
		ap := w.decision(t, req.ID, s.approver, w.approval, s.approve, s.comment)
		if s.wrong {
			ap.Code = wrongCodeAt(t, w.secrets[s.approver], w.clock.Now())
		}
		got, err := w.a.Decide(ctx, ap)
		if s.reason != "" {
			refusal(t, err, s.reason)
			wantFields(t, audit.EventApprovalFailed, only(t, w.logs, audit.EventApprovalFailed),
				map[string]any{"reason": s.reason, "by": s.approver, "request_id": req.ID, "user": "alice"})
			if n := len(events(w.logs, audit.EventRequestApproved)) + len(events(w.logs, audit.EventRequestDenied)); n != 0 {
				t.Fatalf("%s: a refused answer was audited as a decision", s.name)
			}
		} else if err != nil {
			t.Fatalf("%s: Decide = %v", s.name, err)
		}
		if got == nil || got.State != s.state {
			t.Fatalf("%s: returned %+v, want state %s", s.name, got, s.state)
		}
		stored := w.stored(t, req.ID)
		if stored.State != s.state || len(stored.Decisions) != s.decisions {
			t.Fatalf("%s: stored %+v, want state %s with %d decisions", s.name, stored, s.state, s.decisions)
		}
		if ev := w.notes.events(); !slices.Equal(ev, s.notes) {
			t.Fatalf("%s: notifications %v, want %v", s.name, ev, s.notes)
		}
		switch s.name {
		case "first approval":
			wantFields(t, audit.EventRequestApproved, only(t, w.logs, audit.EventRequestApproved), map[string]any{
				"request_id": req.ID, "by": "carol", "comment": "fine by me", "approvals": 1, "approvals_needed": 2,
				"user": "alice", "role": "prod-db",
			})
			if d := stored.Decisions[0]; d.By != "carol" || !d.Approve || d.Comment != "fine by me" || !d.At.Equal(w.clock.Now()) {
				t.Fatalf("decision = %+v", d)
			}
			if got.SessionID != "" || countSessions(t, w.authorityFixture) != 0 {
				t.Fatal("a session started after one of two approvals")
			}
		case "second approval":
			now := w.clock.Now()
			wantFields(t, audit.EventRequestApproved, only(t, w.logs, audit.EventRequestApproved),
				map[string]any{"by": "dave", "approvals": 2, "approvals_needed": 2})
			if session.CheckSessionID(got.SessionID) != nil || stored.SessionID != got.SessionID || !stored.Decided.Equal(now) {
				t.Fatalf("approved request = %+v", stored)
			}
			rec, err := w.a.Records.Load(ctx, "alice", got.SessionID)
			if err != nil {
				t.Fatal(err)
			}
			if rec.RequestID != req.ID || !slices.Equal(rec.Approvers, []string{"carol", "dave"}) || rec.Role != "prod-db" ||
				!rec.Start.Equal(now) || !rec.Expires.Equal(now.Add(15*time.Minute)) || rec.BreakGlass ||
				rec.Justification != req.Justification || rec.Ticket != "INC-42" || rec.Audience != audience {
				t.Fatalf("session record = %+v", rec)
			}
			wantFields(t, audit.EventActivationSucceeded, only(t, w.logs, audit.EventActivationSucceeded), map[string]any{
				"request_id": req.ID, "session_id": rec.ID, "approvers": []string{"carol", "dave"}, "user": "alice",
			})
			approved := w.notes.of(NotifyApproved)[0]
			if approved.RequestID != req.ID || !slices.Equal(approved.Approvers, []string{"carol", "dave"}) {
				t.Fatalf("approved notification = %+v", approved)
			}
			activated := w.notes.of(NotifyActivated)[0]
			if activated.SessionID != rec.ID || activated.RequestID != req.ID || !activated.Expires.Equal(rec.Expires) {
				t.Fatalf("activated notification = %+v", activated)
			}
			// The requester's page signs the token of the session.
			token, err := w.a.SignRecord(rec, now)
			if err != nil {
				t.Fatal(err)
			}
			c, err := w.a.Verifier.Verify(token, session.Want{Subject: "alice", Audience: audience, Roles: []string{"prod-db"}}, now)
			if err != nil || c.SessionID != rec.ID || c.Expiry != rec.Expires.Unix() {
				t.Fatalf("Verify = %+v, %v", c, err)
			}
		}
	}
	if n := countSessions(t, w.authorityFixture); n != 1 {
		t.Fatalf("%d sessions, want 1", n)
	}
}

func TestDenyEndsTheRequest(t *testing.T) {
	ctx := context.Background()
	w := newWorkflowFixture(t)
	req := w.request(t, "alice", w.approval)
	w.decide(t, w.decision(t, req.ID, "carol", w.approval, true, ""))
	w.notes.reset()
	w.logs.TakeAll()

	denied := w.decide(t, w.decision(t, req.ID, "dave", w.approval, false, "  not during the freeze "))
	now := w.clock.Now()
	if denied.State != RequestDenied || !denied.Decided.Equal(now) || denied.SessionID != "" {
		t.Fatalf("denied request = %+v", denied)
	}
	d, ok := w.stored(t, req.ID).Denial()
	if !ok || d.By != "dave" || d.Approve || d.Comment != "not during the freeze" || !d.At.Equal(now) {
		t.Fatalf("Denial = %+v, %v", d, ok)
	}
	wantFields(t, audit.EventRequestDenied, only(t, w.logs, audit.EventRequestDenied),
		map[string]any{"request_id": req.ID, "by": "dave", "comment": "not during the freeze", "user": "alice"})
	if ev := w.notes.events(); !slices.Equal(ev, []string{NotifyDenied}) {
		t.Fatalf("notifications %v", ev)
	}
	if n := w.notes.of(NotifyDenied)[0]; n.By != "dave" || n.Comment != "not during the freeze" || n.RequestID != req.ID {
		t.Fatalf("denied notification = %+v", n)
	}

	for _, answer := range []struct {
		approver string
		approve  bool
		comment  string
	}{{"erin", true, ""}, {"erin", false, "me too"}, {"dave", true, ""}} {
		_, err := w.a.Decide(ctx, w.decision(t, req.ID, answer.approver, w.approval, answer.approve, answer.comment))
		refusal(t, err, "already_decided")
	}
	if got := w.stored(t, req.ID); got.State != RequestDenied || len(got.Decisions) != 2 {
		t.Fatalf("stored after late answers = %+v", got)
	}
	if n := countSessions(t, w.authorityFixture); n != 0 {
		t.Fatalf("%d sessions after a denial", n)
	}
	// The requester reads it; nobody else.
	if got, err := w.a.RequestFor(ctx, "alice", req.ID); err != nil || got.State != RequestDenied {
		t.Fatalf("RequestFor = %+v, %v", got, err)
	}
	if _, err := w.a.RequestFor(ctx, "dave", req.ID); !errors.Is(err, ErrRequestNotFound) {
		t.Fatalf("RequestFor by another user = %v", err)
	}
}

// TestRequestDeadline: whichever call first notices the deadline expires the request,
// once; later answers are refused.
func TestRequestDeadline(t *testing.T) {
	settle := []struct {
		name string
		do   func(t *testing.T, w *workflowFixture, id string)
	}{
		{"Decide", func(t *testing.T, w *workflowFixture, id string) {
			req, err := w.a.Decide(context.Background(), w.decision(t, id, "carol", w.approval, true, ""))
			refusal(t, err, "already_decided")
			if req == nil || req.State != RequestExpired {
				t.Fatalf("Decide returned %+v, want the expired request", req)
			}
		}},
		{"RequestFor", func(t *testing.T, w *workflowFixture, id string) {
			req, err := w.a.RequestFor(context.Background(), "alice", id)
			if err != nil || req.State != RequestExpired {
				t.Fatalf("RequestFor = %+v, %v; want it expired", req, err)
			}
		}},
		{"SweepRequests", func(t *testing.T, w *workflowFixture, _ string) {
			if err := w.a.SweepRequests(context.Background(), w.roles(w.approval)); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tt := range settle {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			w := newWorkflowFixture(t)
			req := w.request(t, "alice", w.approval)
			other := w.request(t, "bob", w.roleWith(func(r *policy.Role) {
				r.Name = "prod-db"
				r.Approval = &policy.Approval{Approvers: approvers, Count: 2, Expires: 48 * time.Hour}
			}))
			w.decide(t, w.decision(t, req.ID, "carol", w.approval, true, ""))

			// A second before the deadline, a sweep changes nothing.
			w.clock.Set(req.Deadline.Add(-time.Second))
			if err := w.a.SweepRequests(ctx, w.roles(w.approval)); err != nil {
				t.Fatal(err)
			}
			if got := w.stored(t, req.ID); got.State != RequestPending {
				t.Fatalf("before the deadline: %s", got.State)
			}
			w.logs.TakeAll()
			w.notes.reset()

			w.clock.Set(req.Deadline)
			tt.do(t, w, req.ID)
			now := w.clock.Now()
			got := w.stored(t, req.ID)
			if got.State != RequestExpired || got.SessionID != "" {
				t.Fatalf("stored after the deadline = %+v", got)
			}
			if !got.Decided.Equal(now) {
				t.Fatalf("Decided = %v, want %v", got.Decided, now)
			}
			wantFields(t, audit.EventRequestExpired, only(t, w.logs, audit.EventRequestExpired),
				map[string]any{"request_id": req.ID, "user": "alice", "reason": "deadline_passed"})
			if ev := w.notes.events(); !slices.Equal(ev, []string{NotifyExpired}) {
				t.Fatalf("notifications %v, want [expired]", ev)
			}
			if n := w.notes.of(NotifyExpired)[0]; n.RequestID != req.ID || n.User != "alice" {
				t.Fatalf("expired notification = %+v", n)
			}

			// Nothing expires it twice, and nothing decides it any more.
			if err := w.a.SweepRequests(ctx, w.roles(w.approval)); err != nil {
				t.Fatal(err)
			}
			if r, err := w.a.RequestFor(ctx, "alice", req.ID); err != nil || r.State != RequestExpired {
				t.Fatalf("RequestFor = %+v, %v", r, err)
			}
			_, err := w.a.Decide(ctx, w.decision(t, req.ID, "dave", w.approval, true, ""))
			refusal(t, err, "already_decided")
			if n := len(events(w.logs, audit.EventRequestExpired)); n != 1 {
				t.Fatalf("%d request_expired events, want 1", n)
			}
			if n := len(w.notes.of(NotifyExpired)); n != 1 {
				t.Fatalf("%d expired notifications, want 1", n)
			}
			if n := countSessions(t, w.authorityFixture); n != 0 {
				t.Fatalf("%d sessions from an expired request", n)
			}
			// A request with a later deadline is left alone.
			if o := w.stored(t, other.ID); o.State != RequestPending {
				t.Fatalf("the other request is %s", o.State)
			}
		})
	}
}
