package workflow

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/pquerna/otp"
	"go.uber.org/zap/zaptest/observer"

	"github.com/caddy-jit/caddy-jit/policy"
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
