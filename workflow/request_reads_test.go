package workflow

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"

	"github.com/caddy-jit/caddy-jit/policy"
	"github.com/caddy-jit/caddy-jit/state"
)

// countingStorage is a file storage that counts the reads (Load) and listings (List)
// made under each key prefix.
type countingStorage struct {
	*certmagic.FileStorage
	mu    sync.Mutex
	loads []string
	lists []string
}

func (c *countingStorage) Load(ctx context.Context, key string) ([]byte, error) {
	c.mu.Lock()
	c.loads = append(c.loads, key)
	c.mu.Unlock()
	return c.FileStorage.Load(ctx, key)
}

func (c *countingStorage) List(ctx context.Context, prefix string, recursive bool) ([]string, error) {
	c.mu.Lock()
	c.lists = append(c.lists, prefix)
	c.mu.Unlock()
	return c.FileStorage.List(ctx, prefix, recursive)
}

func (c *countingStorage) reset() {
	c.mu.Lock()
	c.loads, c.lists = nil, nil
	c.mu.Unlock()
}

// requestReads counts the loads of requests and the listings of requests or of any
// index of them since the last reset.
func (c *countingStorage) requestReads() (loads, lists int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, k := range c.loads {
		if strings.HasPrefix(k, requestFolder) {
			loads++
		}
	}
	for _, p := range c.lists {
		// The requests' folder and the index's (jit/request-index/) alike.
		if strings.HasPrefix(p, state.Prefix+"request") {
			lists++
		}
	}
	return loads, lists
}

// otherInstance is a second authority on the fixture's storage, reading it through a
// countingStorage.
func otherInstance(t *testing.T, w *workflowFixture) (*Authority, *countingStorage) {
	t.Helper()
	st := &countingStorage{FileStorage: &certmagic.FileStorage{Path: w.st.Path}}
	a, err := NewAuthority(context.Background(), st, Config{
		Issuer: "caddy-jit test", MaxFailures: 5, LockoutDuration: lockoutDuration, Audit: zap.NewNop(), Now: w.clock.Now,
	})
	if err != nil {
		t.Fatal(err)
	}
	a.Notifier = &recordingNotifier{}
	return a, st
}

// storedRequest is a request of user for role in the given state, as saveRequest (or,
// with oldLayout, a version without the index) would store it.
func storedRequest(t *testing.T, w *workflowFixture, user, role, inState string, oldLayout bool) *Request {
	t.Helper()
	id := newRequestID()
	now := w.clock.Now()
	r := &Request{
		ID: id, User: user, Role: role, Audience: audience, Justification: "restart the stuck queue",
		Duration: 15 * time.Minute, Created: now.UTC(), Deadline: now.Add(24 * time.Hour).UTC(), Needed: 1, State: inState,
	}
	switch inState {
	case RequestApproved:
		// Started: a session id. The waiting kind is made by the caller.
		r.SessionID, r.Decided = "started-session", now.UTC()
		r.Decisions = []Decision{{By: "carol", Approve: true, At: now.UTC()}}
	case RequestDenied, RequestExpired:
		r.Decided = now.UTC()
	}
	ctx := context.Background()
	var err error
	if oldLayout {
		err = state.StoreJSON(ctx, w.st, requestKey(r.ID), r)
	} else {
		err = w.a.Requests.saveRequest(ctx, r)
	}
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// ids are the ids of requests, in order.
func ids(rs []*Request) []string {
	var out []string
	for _, r := range rs {
		out = append(out, r.ID)
	}
	return out
}

// TestRequestReadsAreOpenOnly: with 2,000 decided requests in storage, the
// approvals listing and the sweep read the few open requests, not all of them.
func TestRequestReadsAreOpenOnly(t *testing.T) {
	ctx := context.Background()
	w := newWorkflowFixture(t)
	other := w.roleWith(func(r *policy.Role) {
		r.Name = "billing"
		r.Approval = &policy.Approval{Approvers: []string{"zed"}, Count: 1, Expires: 24 * time.Hour}
	})
	roles := w.roles(w.approval, other)
	states := []string{RequestDenied, RequestExpired, RequestApproved}
	for i := range 2000 {
		storedRequest(t, w, "bob", w.approval.Name, states[i%len(states)], false)
	}
	var pending []*Request
	for _, user := range []string{"bob", "frank", "gina"} {
		w.clock.Add(time.Minute)
		pending = append(pending, storedRequest(t, w, user, w.approval.Name, RequestPending, false))
	}
	billing := storedRequest(t, w, "bob", other.Name, RequestPending, false)
	waiting := storedRequest(t, w, "hank", w.approval.Name, RequestApproved, false)
	waiting.SessionID, waiting.WaitingForPlace = "", true
	if err := w.a.Requests.saveRequest(ctx, waiting); err != nil {
		t.Fatal(err)
	}

	a, st := otherInstance(t, w)
	// The first use builds the index for requests older versions stored (none here
	// lack markers, but this storage was never marked built): it may read them all.
	if _, err := a.Pending(ctx, caller("carol"), roles); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name               string
		run                func() ([]*Request, error)
		want               []string
		maxLoads, maxLists int
	}{
		{"Pending of an approver of prod-db", func() ([]*Request, error) { return a.Pending(ctx, caller("carol"), roles) },
			ids(pending), len(pending), 1},
		{"Pending of the approver of billing only", func() ([]*Request, error) {
			return a.Pending(ctx, policy.Caller{User: "zed"}, roles)
		}, []string{billing.ID}, 1, 1},
		{"Pending of someone who approves nothing", func() ([]*Request, error) {
			return a.Pending(ctx, policy.Caller{User: "nobody"}, roles)
		}, nil, 0, 1},
		// The sweep reads each open request once, and again under its lock only when
		// it acts on it (the waiting one here), and once more to fence its save (a
		// store without a Swap of its own compares under the lock).
		{"SweepRequests", func() ([]*Request, error) { return nil, a.SweepRequests(ctx, roles) },
			nil, len(pending) + 1 + 2*1 + 1, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st.reset()
			got, err := tt.run()
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(ids(got), tt.want) {
				t.Errorf("listed %v, want %v", ids(got), tt.want)
			}
			loads, lists := st.requestReads()
			if loads > tt.maxLoads || lists > tt.maxLists {
				t.Errorf("%d request loads and %d listings with 2,000 decided and %d open requests; want at most %d and %d",
					loads, lists, len(pending)+2, tt.maxLoads, tt.maxLists)
			}
		})
	}
}
