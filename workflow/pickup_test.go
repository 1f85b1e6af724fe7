package workflow

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/caddy-jit/caddy-jit/audit"
	"github.com/caddy-jit/caddy-jit/policy"
	"github.com/caddy-jit/caddy-jit/session"
)

// approvedRequest is alice's request for a role that one approval starts, approved by
// carol: its session runs and waits for the browser holding secret.
func (w *workflowFixture) approvedRequest(t *testing.T) (req *Request, secret string, role *policy.Role) {
	t.Helper()
	role = w.roleWith(func(r *policy.Role) {
		r.Name = "prod-db"
		r.Approval = &policy.Approval{Approvers: approvers, Count: 1, Expires: 24 * time.Hour}
	})
	res := w.submit(t, w.activation(t, "alice", role))
	req = w.decide(t, w.decision(t, res.Request.ID, "carol", role, true, ""))
	if req.SessionID == "" {
		t.Fatalf("the approval started no session: %+v", req)
	}
	return req, res.PickupSecret, role
}

func TestPickupHandsTheSessionOverOnceToTheAskingBrowser(t *testing.T) {
	ctx := context.Background()
	w := newWorkflowFixture(t)
	req, secret, _ := w.approvedRequest(t)

	other := strings.Repeat("A", PickupSecretLength)
	refusals := []struct {
		name, user, secret, audience string
		want                         error
	}{
		{"another browser's guess", "alice", other, audience, ErrPickupRefused},
		{"a malformed secret", "alice", "short", audience, ErrRequestNotFound},
		{"another user with the secret", "bob", secret, audience, ErrRequestNotFound},
		{"another site with the secret", "alice", secret, "https://elsewhere.example", ErrRequestNotFound},
	}
	for _, tt := range refusals {
		t.Run(tt.name, func(t *testing.T) {
			got, err := w.a.Pickup(ctx, tt.user, req.ID, tt.secret, tt.audience, "192.0.2.9")
			if !errors.Is(err, tt.want) || got != nil {
				t.Fatalf("Pickup = %+v, %v; want %v", got, err, tt.want)
			}
			if w.stored(t, req.ID).PickedUp.IsZero() == false {
				t.Fatal("a refused pickup marked the request picked up")
			}
		})
	}
	if n := len(w.logs.FilterMessage(audit.EventPickupRefused).All()); n != 1 {
		t.Errorf("%d pickup_refused events, want 1 (the wrong secret; the others name no request of theirs)", n)
	}

	got, err := w.a.Pickup(ctx, "alice", req.ID, secret, audience, "192.0.2.1")
	if err != nil || got.Token == "" || got.Record == nil || got.Record.ID != req.SessionID || !got.Done {
		t.Fatalf("Pickup by the asking browser = %+v, %v; want the session's token", got, err)
	}
	if c, err := w.a.Verifier.Verify(got.Token, session.Want{Subject: "alice", Audience: audience, Roles: []string{"prod-db"}}, w.clock.Now()); err != nil || c.SessionID != req.SessionID {
		t.Fatalf("the handed-over token does not verify: %v", err)
	}
	if w.stored(t, req.ID).PickedUp.IsZero() {
		t.Fatal("the pickup is not recorded")
	}
	again, err := w.a.Pickup(ctx, "alice", req.ID, secret, audience, "192.0.2.1")
	if err != nil || again.Token != "" || !again.Done {
		t.Fatalf("a second pickup with the same secret = %+v, %v; want nothing, done", again, err)
	}
	if n := len(w.logs.FilterMessage(audit.EventPickedUp).All()); n != 1 {
		t.Errorf("%d session_picked_up events, want 1", n)
	}
}

func TestPickupOfARequestThatIsNotReady(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name     string
		settle   func(w *workflowFixture, req *Request, role *policy.Role)
		wantDone bool
	}{
		{"pending", func(*workflowFixture, *Request, *policy.Role) {}, false},
		{"denied", func(w *workflowFixture, req *Request, role *policy.Role) {
			w.decide(t, w.decision(t, req.ID, "carol", role, false, "not now"))
		}, true},
		{"expired", func(w *workflowFixture, req *Request, role *policy.Role) { w.clock.Add(25 * time.Hour) }, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := newWorkflowFixture(t)
			res := w.submit(t, w.activation(t, "alice", w.approval))
			tt.settle(w, res.Request, w.approval)
			got, err := w.a.Pickup(ctx, "alice", res.Request.ID, res.PickupSecret, audience, "192.0.2.1")
			if err != nil || got.Token != "" || got.Done != tt.wantDone {
				t.Fatalf("Pickup = %+v, %v; want no token, done=%v", got, err, tt.wantDone)
			}
		})
	}
	t.Run("the session was revoked before the pickup", func(t *testing.T) {
		w := newWorkflowFixture(t)
		req, secret, _ := w.approvedRequest(t)
		if _, err := w.a.EndByID(ctx, req.SessionID, "operator", "test"); err != nil {
			t.Fatal(err)
		}
		got, err := w.a.Pickup(ctx, "alice", req.ID, secret, audience, "192.0.2.1")
		if err != nil || got.Token != "" || !got.Done {
			t.Fatalf("Pickup = %+v, %v; want no token, done", got, err)
		}
	})
}

func TestOneOpenRequestPerUserAndRole(t *testing.T) {
	ctx := context.Background()
	w := newWorkflowFixture(t)
	first := w.request(t, "alice", w.approval)

	second := w.activation(t, "alice", w.approval)
	_, err := w.a.Submit(ctx, second)
	var refused *ActivationError
	if !errors.As(err, &refused) || refused.Reason != ReasonRequestOpen {
		t.Fatalf("a second request while one is open = %v, want %s", err, ReasonRequestOpen)
	}
	// Refused before the code was checked: the same code still works elsewhere.
	if err := w.a.StepUp.Check(ctx, "alice", second.Code); err != nil {
		t.Fatalf("the refused second request spent the code: %v", err)
	}
	open, err := w.a.OpenRequest(ctx, "alice", w.approval.Name)
	if err != nil || open == nil || open.ID != first.ID {
		t.Fatalf("OpenRequest = %+v, %v; want the first request", open, err)
	}
	if other, err := w.a.OpenRequest(ctx, "bob", w.approval.Name); err != nil || other != nil {
		t.Fatalf("bob's open request = %+v, %v; want none", other, err)
	}

	// Denied, the request is closed: a new one may be made.
	w.decide(t, w.decision(t, first.ID, "carol", w.approval, false, "no"))
	if open, err := w.a.OpenRequest(ctx, "alice", w.approval.Name); err != nil || open != nil {
		t.Fatalf("OpenRequest after the denial = %+v, %v; want none", open, err)
	}
	w.request(t, "alice", w.approval)
}

func TestAnApprovedRequestStaysOpenUntilPickedUp(t *testing.T) {
	ctx := context.Background()
	w := newWorkflowFixture(t)
	req, secret, role := w.approvedRequest(t)
	if open, err := w.a.OpenRequest(ctx, "alice", role.Name); err != nil || open == nil || open.ID != req.ID {
		t.Fatalf("OpenRequest of an approved request not yet picked up = %+v, %v; want it", open, err)
	}
	if _, err := w.a.Pickup(ctx, "alice", req.ID, secret, audience, "192.0.2.1"); err != nil {
		t.Fatal(err)
	}
	if open, err := w.a.OpenRequest(ctx, "alice", role.Name); err != nil || open != nil {
		t.Fatalf("OpenRequest after the pickup = %+v, %v; want none", open, err)
	}
}
