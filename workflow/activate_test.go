package workflow

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/pquerna/otp"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/caddy-jit/caddy-jit/audit"
	"github.com/caddy-jit/caddy-jit/policy"
	"github.com/caddy-jit/caddy-jit/session"
)

// recordingNotifier is a Notifier that keeps every notification, in order.
type recordingNotifier struct {
	mu   sync.Mutex
	list []Notification
}

func (n *recordingNotifier) Notify(x Notification) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.list = append(n.list, x)
}

func (n *recordingNotifier) all() []Notification {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Clone(n.list)
}

// events lists the events notified, in order.
func (n *recordingNotifier) events() []string {
	var out []string
	for _, x := range n.all() {
		out = append(out, x.Event)
	}
	return out
}

// of returns the notifications of one event.
func (n *recordingNotifier) of(event string) []Notification {
	var out []Notification
	for _, x := range n.all() {
		if x.Event == event {
			out = append(out, x)
		}
	}
	return out
}

func (n *recordingNotifier) reset() {
	n.mu.Lock()
	n.list = nil
	n.mu.Unlock()
}

// workflowFixture is an authority with a recording notifier, five enrolled users and
// a role whose activations need two approvals.
//
//	alice  requester (eligible), also listed as an approver
//	bob    eligible through group ops, no approver
//	carol  approver by name
//	dave   approver by name
//	erin   approver through group sec
type workflowFixture struct {
	*authorityFixture
	notes *recordingNotifier
	// approval is the role prod-db: Approval{Count 2, Expires 24h}.
	approval *policy.Role
	secrets  map[string]string
	// lastStep is the TOTP step of the last code handed out per user.
	lastStep map[string]int64
}

var approvers = []string{"alice", "carol", "dave", "group:sec"}

func newWorkflowFixture(t *testing.T) *workflowFixture {
	t.Helper()
	f := newAuthorityFixture(t)
	w := &workflowFixture{
		authorityFixture: f,
		notes:            &recordingNotifier{},
		secrets:          map[string]string{"alice": f.secret},
		lastStep:         map[string]int64{},
	}
	f.a.Notifier = w.notes
	for _, user := range []string{"bob", "carol", "dave", "erin"} {
		uri, err := f.a.StepUp.Enroll(context.Background(), user, "admin")
		if err != nil {
			t.Fatal(err)
		}
		key, err := otp.NewKeyFromURL(uri)
		if err != nil {
			t.Fatal(err)
		}
		w.secrets[user] = key.Secret()
	}
	w.approval = w.roleWith(func(r *policy.Role) {
		r.Name = "prod-db"
		r.Approval = &policy.Approval{Approvers: approvers, Count: 2, Expires: 24 * time.Hour}
	})
	f.logs.TakeAll()
	return w
}

// roleWith is a copy of the fixture's console-admin role, changed.
func (w *workflowFixture) roleWith(change func(r *policy.Role)) *policy.Role {
	r := *w.role
	change(&r)
	return &r
}

func caller(user string) policy.Caller {
	switch user {
	case "bob":
		return policy.Caller{User: user, Groups: []string{"ops"}}
	case "erin":
		return policy.Caller{User: user, Groups: []string{"sec"}}
	}
	return policy.Caller{User: user}
}

// code is the user's current TOTP code. A code is accepted once per 30 s step, so when
// the user already had one in this step, the clock first moves on to the next step.
func (w *workflowFixture) code(t *testing.T, user string) string {
	t.Helper()
	secret, ok := w.secrets[user]
	if !ok {
		t.Fatalf("%s is not enrolled", user)
	}
	step := w.clock.Now().Unix() / 30
	if last, used := w.lastStep[user]; used && step <= last {
		w.clock.Add(time.Duration(last-step+1) * 30 * time.Second)
		step = last + 1
	}
	w.lastStep[user] = step
	return codeAt(t, secret, w.clock.Now())
}

// activation is an activation by user of role that the policy accepts.
func (w *workflowFixture) activation(t *testing.T, user string, role *policy.Role) Activation {
	t.Helper()
	return Activation{
		Caller:        caller(user),
		Role:          role,
		Audience:      audience,
		Duration:      15 * time.Minute,
		Justification: "restart the stuck queue",
		Ticket:        "INC-42",
		Code:          w.code(t, user),
		ClientIP:      "192.0.2.1",
		UserAgent:     "test-agent/1.0",
		Return:        "/admin",
	}
}

func (w *workflowFixture) submit(t *testing.T, act Activation) *Activated {
	t.Helper()
	res, err := w.a.Submit(context.Background(), act)
	if err != nil {
		t.Fatalf("Submit = %v", err)
	}
	return res
}

// request submits an activation of role by user and returns its pending request.
func (w *workflowFixture) request(t *testing.T, user string, role *policy.Role) *Request {
	t.Helper()
	res := w.submit(t, w.activation(t, user, role))
	if res.Request == nil || res.Token != "" || res.Record != nil {
		t.Fatalf("Submit = %+v, want a request only", res)
	}
	return res.Request
}

// decision is approver's answer to the request, with their current code.
func (w *workflowFixture) decision(t *testing.T, id, approver string, role *policy.Role, approve bool, comment string) Approval {
	t.Helper()
	return Approval{
		RequestID: id, Approver: caller(approver), Role: role, Approve: approve, Comment: comment,
		Code: w.code(t, approver), ClientIP: "198.51.100.7",
	}
}

// decide submits an answer that must be accepted.
func (w *workflowFixture) decide(t *testing.T, ap Approval) *Request {
	t.Helper()
	req, err := w.a.Decide(context.Background(), ap)
	if err != nil {
		t.Fatalf("Decide by %s = %v", ap.Approver.User, err)
	}
	return req
}

func (w *workflowFixture) stored(t *testing.T, id string) *Request {
	t.Helper()
	req, err := w.a.Requests.LoadRequest(context.Background(), id)
	if err != nil {
		t.Fatalf("LoadRequest(%s) = %v", id, err)
	}
	return req
}

func (w *workflowFixture) roles(roles ...*policy.Role) func(string) *policy.Role {
	return func(name string) *policy.Role {
		for _, r := range roles {
			if r.Name == name {
				return r
			}
		}
		return nil
	}
}

func asJSON(t *testing.T, v any) string {
	t.Helper()
	raw, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(raw)
}

// refusal asserts err is an *ActivationError with the reason.
func refusal(t *testing.T, err error, reason string) {
	t.Helper()
	var refused *ActivationError
	if !errors.As(err, &refused) {
		t.Fatalf("err = %v, want an *ActivationError %s", err, reason)
	}
	if refused.Reason != reason || refused.Message == "" {
		t.Fatalf("refusal = %+v, want reason %s", refused, reason)
	}
}

// only returns the fields of the one audit event of the kind, failing on any other count.
func only(t *testing.T, logs *observer.ObservedLogs, event string) map[string]any {
	t.Helper()
	got := events(logs, event)
	if len(got) != 1 {
		t.Fatalf("%d %s events, want 1: %+v", len(got), event, logs.All())
	}
	return got[0].ContextMap()
}

func wantFields(t *testing.T, event string, got, want map[string]any) {
	t.Helper()
	for k, v := range want {
		if fmt.Sprint(got[k]) != fmt.Sprint(v) {
			t.Errorf("%s field %s = %v (%T), want %v", event, k, got[k], got[k], v)
		}
	}
}

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

func TestNotifyExpiring(t *testing.T) {
	ctx := context.Background()
	w := newWorkflowFixture(t)
	soon := w.submit(t, w.activation(t, "alice", w.role)).Record // ends in 15m
	lateAct := w.activation(t, "bob", w.role)
	lateAct.Duration = time.Hour
	late := w.submit(t, lateAct).Record
	schedAct := w.activation(t, "alice", w.role)
	schedAct.Start = soon.Expires.Add(-4 * time.Minute)
	scheduled := w.submit(t, schedAct).Record // starts within soon's window
	ended := w.submit(t, w.activation(t, "bob", w.role)).Record
	if _, err := w.a.End(ctx, "bob", ended.ID, session.Deactivated, "bob", "done"); err != nil {
		t.Fatal(err)
	}
	names := map[string]string{soon.ID: "soon", late.ID: "late", scheduled.ID: "scheduled", ended.ID: "ended"}

	// Another instance over the same storage, with a notifier of its own.
	otherNotes := &recordingNotifier{}
	other, err := NewAuthority(ctx, &certmagic.FileStorage{Path: w.st.Path}, Config{
		Issuer: "caddy-jit test", MaxFailures: 5, LockoutDuration: lockoutDuration, Audit: zap.NewNop(), Now: w.clock.Now,
	})
	if err != nil {
		t.Fatal(err)
	}
	other.Notifier = otherNotes
	w.notes.reset()

	checks := []struct {
		name string
		at   time.Time
		a    *Authority
		// want names the sessions told about so far, across both instances.
		want []string
	}{
		{"long before the end", soon.Expires.Add(-5*time.Minute - time.Second), w.a, nil},
		{"in the window", soon.Expires.Add(-5 * time.Minute), w.a, []string{"soon"}},
		{"again", soon.Expires.Add(-4 * time.Minute), w.a, []string{"soon"}},
		{"from the other instance", soon.Expires.Add(-3 * time.Minute), other, []string{"soon"}},
		{"the scheduled one near its end", scheduled.Expires.Add(-time.Minute), w.a, []string{"scheduled", "soon"}},
		{"the later one, from the other instance", late.Expires.Add(-time.Minute), other, []string{"late", "scheduled", "soon"}},
		{"the later one, from here", late.Expires.Add(-30 * time.Second), w.a, []string{"late", "scheduled", "soon"}},
	}
	for _, c := range checks {
		w.clock.Set(c.at)
		if err := c.a.NotifyExpiring(ctx, 5*time.Minute); err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, n := range append(w.notes.all(), otherNotes.all()...) {
			if n.Event != NotifyExpiring {
				t.Fatalf("%s: notified %s", c.name, n.Event)
			}
			got = append(got, names[n.SessionID])
		}
		slices.Sort(got)
		if !slices.Equal(got, c.want) {
			t.Fatalf("%s: told about %v, want %v", c.name, got, c.want)
		}
	}
	n := w.notes.of(NotifyExpiring)[0]
	if n.SessionID != soon.ID || n.User != "alice" || !n.Expires.Equal(soon.Expires) || n.Role != "console-admin" {
		t.Fatalf("expiring notification = %+v", n)
	}
	if rec, err := w.a.Records.Load(ctx, "alice", soon.ID); err != nil || !rec.ExpiringNoticed {
		t.Fatalf("stored = %+v, %v; want ExpiringNoticed", rec, err)
	}
}

// pausingStorage is a file storage that pauses in the n-th Load of one key, after
// reading it, until released: another instance can act in between.
type pausingStorage struct {
	*certmagic.FileStorage
	mu      sync.Mutex
	key     string
	n       int
	reached chan struct{}
	release chan struct{}
}

func (p *pausingStorage) pauseAt(key string, n int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.key, p.n, p.reached, p.release = key, n, make(chan struct{}), make(chan struct{})
}

func (p *pausingStorage) Load(ctx context.Context, key string) ([]byte, error) {
	b, err := p.FileStorage.Load(ctx, key)
	p.mu.Lock()
	pause := false
	if key == p.key && p.n > 0 {
		p.n--
		pause = p.n == 0
	}
	reached, release := p.reached, p.release
	p.mu.Unlock()
	if pause {
		close(reached)
		<-release
	}
	return b, err
}

// TestNotifyExpiringRace: an instance that listed a session as expiring soon decides
// again on the stored record, which another instance may have changed meanwhile.
func TestNotifyExpiringRace(t *testing.T) {
	tests := []struct {
		name string
		// meanwhile runs while the other instance is paused after its listing.
		meanwhile func(t *testing.T, w *workflowFixture, rec *session.Record, role *policy.Role)
		// want is the expiring notifications from both instances in all.
		want int
	}{
		{"nothing happens", func(*testing.T, *workflowFixture, *session.Record, *policy.Role) {}, 1},
		{"told by this instance", func(t *testing.T, w *workflowFixture, _ *session.Record, _ *policy.Role) {
			if err := w.a.NotifyExpiring(context.Background(), 5*time.Minute); err != nil {
				t.Fatal(err)
			}
		}, 1},
		{"ended", func(t *testing.T, w *workflowFixture, rec *session.Record, _ *policy.Role) {
			if _, err := w.a.End(context.Background(), "alice", rec.ID, session.Deactivated, "alice", "done"); err != nil {
				t.Fatal(err)
			}
		}, 0},
		{"extended", func(t *testing.T, w *workflowFixture, rec *session.Record, role *policy.Role) {
			if _, _, err := w.a.Extend(context.Background(), w.extension(t, rec, role, 30*time.Minute)); err != nil {
				t.Fatal(err)
			}
		}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			w := newWorkflowFixture(t)
			role := w.roleWith(func(r *policy.Role) { r.MaxTotal = 2 * time.Hour })
			rec := w.submit(t, w.activation(t, "alice", role)).Record
			paused := &pausingStorage{FileStorage: &certmagic.FileStorage{Path: w.st.Path}}
			other, err := NewAuthority(ctx, paused, Config{
				Issuer: "caddy-jit test", MaxFailures: 5, LockoutDuration: lockoutDuration, Audit: zap.NewNop(), Now: w.clock.Now,
			})
			if err != nil {
				t.Fatal(err)
			}
			otherNotes := &recordingNotifier{}
			other.Notifier = otherNotes
			w.notes.reset()
			w.clock.Set(rec.Expires.Add(-2 * time.Minute))

			// The other instance pauses right after reading the record in its listing.
			paused.pauseAt(sessionKey("alice", rec.ID), 1)
			done := make(chan error, 1)
			go func() { done <- other.NotifyExpiring(ctx, 5*time.Minute) }()
			<-paused.reached
			tt.meanwhile(t, w, rec, role)
			close(paused.release)
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			mine, theirs := len(w.notes.of(NotifyExpiring)), len(otherNotes.of(NotifyExpiring))
			if mine+theirs != tt.want {
				t.Fatalf("expiring notifications: %d here, %d from the other instance; want %d in all", mine, theirs, tt.want)
			}
		})
	}
}

func TestPending(t *testing.T) {
	ctx := context.Background()
	w := newWorkflowFixture(t)
	short := w.roleWith(func(r *policy.Role) {
		r.Name = "short"
		r.Approval = &policy.Approval{Approvers: approvers, Count: 2, Expires: time.Hour}
	})
	expired := w.request(t, "alice", short)
	w.clock.Add(2 * time.Hour)
	// Each a minute apart, so that their order is known.
	next := func(user string, role *policy.Role) *Request {
		w.clock.Add(time.Minute)
		return w.request(t, user, role)
	}
	// One open request per user and role: the second of each user is for a twin role.
	twin := w.roleWith(func(r *policy.Role) {
		r.Name = "twin"
		r.Approval = w.approval.Approval
	})
	mine := next("alice", w.approval)                     // alice's own
	half := next("alice", twin)                           // carol approves it
	bobs := next("bob", w.approval)                       // bob's
	denied := next("bob", twin)                           // carol denies it
	gone := next("bob", w.roleWith(func(r *policy.Role) { // no longer configured
		r.Name = "removed"
		r.Approval = w.approval.Approval
	}))
	w.decide(t, w.decision(t, half.ID, "carol", twin, true, ""))
	w.decide(t, w.decision(t, denied.ID, "carol", twin, false, "no"))
	names := map[string]string{expired.ID: "expired", mine.ID: "mine", half.ID: "half", bobs.ID: "bobs", denied.ID: "denied", gone.ID: "gone"}

	tests := []struct {
		approver policy.Caller
		want     []string
	}{
		{caller("carol"), []string{"mine", "bobs"}},
		{caller("dave"), []string{"mine", "half", "bobs"}},
		{caller("erin"), []string{"mine", "half", "bobs"}},
		{policy.Caller{User: "erin"}, nil},
		{caller("alice"), []string{"bobs"}},
		{caller("bob"), nil},
	}
	for _, tt := range tests {
		got, err := w.a.Pending(ctx, tt.approver, w.roles(w.approval, twin, short))
		if err != nil {
			t.Fatal(err)
		}
		var gotNames []string
		for _, r := range got {
			gotNames = append(gotNames, names[r.ID])
		}
		if !slices.Equal(gotNames, tt.want) {
			t.Errorf("Pending(%+v) = %v, want %v", tt.approver, gotNames, tt.want)
		}
	}
}

func TestPruneRequests(t *testing.T) {
	ctx := context.Background()
	w := newWorkflowFixture(t)
	once := w.roleWith(func(r *policy.Role) {
		r.Name = "prod-db"
		r.Approval = &policy.Approval{Approvers: approvers, Count: 1, Expires: 30 * 24 * time.Hour}
	})
	hourly := w.roleWith(func(r *policy.Role) {
		r.Name = "hourly"
		r.Approval = &policy.Approval{Approvers: approvers, Count: 1, Expires: time.Hour}
	})
	t0 := w.clock.Now()
	// Each a minute apart, so that their order is known.
	next := func(user string, role *policy.Role) *Request {
		w.clock.Add(time.Minute)
		return w.request(t, user, role)
	}
	denied := next("alice", once)
	w.decide(t, w.decision(t, denied.ID, "carol", once, false, "no"))
	approved := next("alice", once)
	if r := w.decide(t, w.decision(t, approved.ID, "carol", once, true, "")); r.SessionID == "" {
		t.Fatalf("approved = %+v", r)
	}
	// One open request per user and role: the approved one is open until picked up,
	// so the next ones are for twin roles or of another user.
	twin := func(r *policy.Role) *policy.Role {
		return w.roleWith(func(t *policy.Role) { *t = *r; t.Name = r.Name + "-twin" })
	}
	pending := next("alice", twin(once))
	expired := next("bob", hourly)
	overdue := next("bob", twin(hourly)) // never swept: stays pending in storage
	w.clock.Set(t0.Add(2 * time.Hour))
	if err := w.a.SweepRequests(ctx, w.roles(once)); err != nil {
		t.Fatal(err)
	}
	if w.stored(t, expired.ID).State != RequestExpired {
		t.Fatal("not expired")
	}
	// The sweep expired both; put one back as if no instance had swept it.
	unswept := w.stored(t, overdue.ID)
	unswept.State, unswept.Decided = RequestPending, time.Time{}
	if err := w.a.Requests.saveRequest(ctx, unswept); err != nil {
		t.Fatal(err)
	}
	w.clock.Set(t0.Add(3 * time.Hour))
	later := next("bob", once)
	w.decide(t, w.decision(t, later.ID, "carol", once, false, "no"))
	decidedAt := func(id string) time.Time { return w.stored(t, id).Decided }
	deniedAt, approvedAt, laterAt, expiredAt := decidedAt(denied.ID), decidedAt(approved.ID), decidedAt(later.ID), decidedAt(expired.ID)

	names := map[string]string{denied.ID: "denied", approved.ID: "approved", pending.ID: "pending", expired.ID: "expired",
		overdue.ID: "overdue", later.ID: "later"}
	checks := []struct {
		at   time.Time
		want []string // what is left, oldest first
	}{
		{deniedAt.Add(requestKeep), []string{"denied", "approved", "pending", "expired", "overdue", "later"}},
		{deniedAt.Add(requestKeep + time.Second), []string{"approved", "pending", "expired", "overdue", "later"}},
		{approvedAt.Add(requestKeep + time.Second), []string{"pending", "expired", "overdue", "later"}},
		{expiredAt.Add(requestKeep + time.Second), []string{"pending", "overdue", "later"}},
		{laterAt.Add(requestKeep + time.Second), []string{"pending", "overdue"}},
		{t0.Add(60 * 24 * time.Hour), []string{"pending", "overdue"}},
	}
	for _, c := range checks {
		if err := w.a.Prune(ctx, c.at); err != nil {
			t.Fatal(err)
		}
		all, err := w.a.Requests.All(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var left []string
		for _, r := range all {
			left = append(left, names[r.ID])
		}
		if !slices.Equal(left, c.want) {
			t.Fatalf("after Prune at %v: %v, want %v", c.at, left, c.want)
		}
	}
	for _, id := range []string{denied.ID, approved.ID} {
		if _, err := w.a.Requests.LoadRequest(ctx, id); !errors.Is(err, ErrRequestNotFound) {
			t.Fatalf("LoadRequest of a pruned request = %v", err)
		}
	}
}

// TestExtendWaitsForANoticeInProgress: an extension made while another instance is
// saving its expiring notice for the same session is not lost.
func TestExtendWaitsForANoticeInProgress(t *testing.T) {
	ctx := context.Background()
	w := newWorkflowFixture(t)
	role := w.roleWith(func(r *policy.Role) { r.MaxTotal = 2 * time.Hour })
	rec := w.submit(t, w.activation(t, "alice", role)).Record
	paused := &pausingStorage{FileStorage: &certmagic.FileStorage{Path: w.st.Path}}
	other, err := NewAuthority(ctx, paused, Config{
		Issuer: "caddy-jit test", MaxFailures: 5, LockoutDuration: lockoutDuration, Audit: zap.NewNop(), Now: w.clock.Now,
	})
	if err != nil {
		t.Fatal(err)
	}
	other.Notifier = &recordingNotifier{}
	w.clock.Set(rec.Expires.Add(-2 * time.Minute))

	// The second read of the record is the other instance's, under the session lock.
	paused.pauseAt(sessionKey("alice", rec.ID), 2)
	noticed := make(chan error, 1)
	go func() { noticed <- other.NotifyExpiring(ctx, 5*time.Minute) }()
	<-paused.reached
	ext := w.extension(t, rec, role, 30*time.Minute)
	extended := make(chan error, 1)
	var newEnd time.Time
	go func() {
		_, r, err := w.a.Extend(ctx, ext)
		if err == nil {
			newEnd = r.Expires
		}
		extended <- err
	}()
	time.Sleep(100 * time.Millisecond) // the extension now waits for the lock
	close(paused.release)
	if err := <-noticed; err != nil {
		t.Fatal(err)
	}
	if err := <-extended; err != nil {
		t.Fatal(err)
	}
	stored, err := w.a.Records.Load(ctx, "alice", rec.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !stored.Expires.Equal(newEnd) || len(stored.Extensions) != 1 {
		t.Fatalf("stored record ends %s with %d extensions; the extension said %s", stored.Expires, len(stored.Extensions), newEnd)
	}
	if stored.ExpiringNoticed {
		t.Error("the extended session keeps the notice of its old end; its new end deserves one")
	}
	// And it can still be revoked after its old end.
	w.clock.Set(rec.Expires.Add(time.Minute))
	if _, err := w.a.EndByID(ctx, rec.ID, "ops", "test"); err != nil {
		t.Fatal(err)
	}
	if !w.a.Revocations.Revoked(rec.ID) {
		t.Error("the extended session was not revoked")
	}
}

func TestMaxActiveCountsOnlyOverlappingSessions(t *testing.T) {
	ctx := context.Background()
	w := newWorkflowFixture(t)
	role := w.roleWith(func(r *policy.Role) { r.MaxActive = 1 })
	first := w.submit(t, w.activation(t, "alice", role)).Record // now … now+15m

	later := w.activation(t, "bob", role)
	later.Start = first.Expires.Add(time.Hour)
	if res := w.submit(t, later); res.Record == nil || !res.Record.Start.Equal(later.Start.UTC()) {
		t.Fatalf("a session scheduled after the first ends = %+v, want it started", res)
	}
	overlapping := w.activation(t, "bob", role)
	overlapping.Start = first.Expires.Add(-time.Minute)
	_, err := w.a.Submit(ctx, overlapping)
	refusal(t, err, "max_active_reached")
}

func TestActivateOnARoleWithApprovalChangesNothing(t *testing.T) {
	ctx := context.Background()
	w := newWorkflowFixture(t)
	act := w.activation(t, "alice", w.approval)
	if _, _, err := w.a.Activate(ctx, act); !errors.Is(err, ErrNeedsApproval) {
		t.Fatalf("Activate = %v, want ErrNeedsApproval", err)
	}
	if all, _ := w.a.Requests.All(ctx); len(all) != 0 || len(w.logs.All()) != 0 || len(w.notes.all()) != 0 {
		t.Fatalf("Activate left %d requests, %d audit events, %d notifications", len(all), len(w.logs.All()), len(w.notes.all()))
	}
	// The code was not used up: the same activation submits.
	if res := w.submit(t, act); res.Request == nil {
		t.Fatalf("Submit after Activate = %+v", res)
	}
}

func TestApprovedRequestWaitingForAPlaceIsAuditedOnce(t *testing.T) {
	ctx := context.Background()
	w := newWorkflowFixture(t)
	role := w.roleWith(func(r *policy.Role) {
		r.Name = "prod-db"
		r.MaxActive = 1
		r.Approval = &policy.Approval{Approvers: approvers, Count: 1, Expires: time.Hour}
	})
	holder := w.submit(t, w.activation(t, "bob", w.roleWith(func(r *policy.Role) { r.Name = "prod-db"; r.MaxActive = 1 }))).Record
	req := w.request(t, "alice", role)
	w.decide(t, w.decision(t, req.ID, "carol", role, true, ""))
	for range 3 {
		w.clock.Add(2 * time.Second)
		if err := w.a.SweepRequests(ctx, w.roles(role)); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(events(w.logs, audit.EventActivationFailed)); n != 1 {
		t.Fatalf("%d activation_failed events while the request waited, want 1", n)
	}
	if got := w.stored(t, req.ID); !got.WaitingForPlace || got.SessionID != "" {
		t.Fatalf("stored request = %+v, want waiting for a place", got)
	}
	if _, err := w.a.End(ctx, "bob", holder.ID, session.Deactivated, "bob", "done"); err != nil {
		t.Fatal(err)
	}
	if err := w.a.SweepRequests(ctx, w.roles(role)); err != nil {
		t.Fatal(err)
	}
	if got := w.stored(t, req.ID); got.WaitingForPlace || got.SessionID == "" {
		t.Fatalf("stored request = %+v, want started", got)
	}
}
