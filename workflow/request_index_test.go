package workflow

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddy-jit/caddy-jit/policy"
	"github.com/caddy-jit/caddy-jit/state"
)

// markers maps each request id in the index to its index states.
func markers(t *testing.T, w *workflowFixture) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	for _, state := range indexStates {
		entries, err := w.a.Requests.indexed(context.Background(), state)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			out[e.id] = append(out[e.id], state)
		}
	}
	return out
}

// TestIndexBuiltForRequestsOfAnOlderVersion: requests stored without markers (before
// the index existed) are found after the upgrade, by every instance, and only the open
// ones get markers.
func TestIndexBuiltForRequestsOfAnOlderVersion(t *testing.T) {
	ctx := context.Background()
	w := newWorkflowFixture(t)
	roles := w.roles(w.approval)
	var open []*Request
	for _, user := range []string{"bob", "frank"} {
		w.clock.Add(time.Minute)
		open = append(open, storedRequest(t, w, user, w.approval.Name, RequestPending, true))
	}
	denied := storedRequest(t, w, "gina", w.approval.Name, RequestDenied, true)
	if got := markers(t, w); len(got) != 0 {
		t.Fatalf("old layout holds markers: %v", got)
	}

	// Two instances of a cluster start at once; one builds, the other waits for it.
	a, _ := otherInstance(t, w)
	b, _ := otherInstance(t, w)
	results := make([][]*Request, 2)
	var wg sync.WaitGroup
	for i, inst := range []*Authority{a, b} {
		wg.Go(func() {
			got, err := inst.Pending(ctx, caller("carol"), roles)
			if err != nil {
				t.Error(err)
			}
			results[i] = got
		})
	}
	wg.Wait()
	for i, got := range results {
		if !slices.Equal(ids(got), ids(open)) {
			t.Errorf("instance %d lists %v, want the old pending requests %v", i, ids(got), ids(open))
		}
	}
	got := markers(t, w)
	if _, ok := got[denied.ID]; ok || len(got) != len(open) {
		t.Errorf("markers after the build = %v, want only the open requests %v", got, ids(open))
	}
	if !w.st.Exists(ctx, requestIndexBuilt) {
		t.Error("the storage is not marked built")
	}
}

// TestIndexFollowsTheRequestsLife: every save of a request through the workflow keeps
// its marker in the state it is in, and closed requests have none.
func TestIndexFollowsTheRequestsLife(t *testing.T) {
	ctx := context.Background()
	w := newWorkflowFixture(t)
	tests := []struct {
		name string
		// life submits a request (as alice) and takes it through its life.
		life func(t *testing.T, role *policy.Role) *Request
		want []string
	}{
		{"pending", func(t *testing.T, role *policy.Role) *Request { return w.request(t, "alice", role) },
			[]string{indexPending}},
		{"one approval of two", func(t *testing.T, role *policy.Role) *Request {
			r := w.request(t, "alice", role)
			return w.decide(t, w.decision(t, r.ID, "carol", role, true, ""))
		}, []string{indexPending}},
		{"approved and started", func(t *testing.T, role *policy.Role) *Request {
			r := w.request(t, "alice", role)
			w.decide(t, w.decision(t, r.ID, "carol", role, true, ""))
			return w.decide(t, w.decision(t, r.ID, "dave", role, true, ""))
		}, nil},
		{"denied", func(t *testing.T, role *policy.Role) *Request {
			r := w.request(t, "alice", role)
			return w.decide(t, w.decision(t, r.ID, "carol", role, false, "not now"))
		}, nil},
		{"expired by the sweep", func(t *testing.T, role *policy.Role) *Request {
			r := w.request(t, "alice", role)
			w.clock.Add(25 * time.Hour)
			if err := w.a.SweepRequests(ctx, w.roles(role)); err != nil {
				t.Fatal(err)
			}
			return w.stored(t, r.ID)
		}, nil},
		{"approved, waiting for a place", func(t *testing.T, role *policy.Role) *Request {
			r := w.request(t, "alice", role)
			w.decide(t, w.decision(t, r.ID, "carol", role, true, ""))
			return w.decide(t, w.decision(t, r.ID, "dave", role, true, ""))
		}, []string{indexWaiting}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			role := w.roleWith(func(r *policy.Role) {
				r.Name = "role-" + string(rune('a'+i))
				r.Approval = w.approval.Approval
			})
			if tt.name == "approved, waiting for a place" {
				role.MaxActive = 1
				w.submit(t, w.activation(t, "bob", w.roleWith(func(r *policy.Role) { r.Name = role.Name; r.MaxActive = 1 })))
			}
			r := tt.life(t, role)
			if got := markers(t, w)[r.ID]; !slices.Equal(got, tt.want) {
				t.Errorf("markers of the %s request (%s) = %v, want %v", tt.name, w.stored(t, r.ID).State, got, tt.want)
			}
		})
	}
}

// TestIndexHeals: a marker left by a crash names no open request; readers skip it,
// drop it when its request is closed, and prune drops it when its request never came.
// A marker filed under the wrong role lists nothing there, and prune drops it.
func TestIndexHeals(t *testing.T) {
	ctx := context.Background()
	w := newWorkflowFixture(t)
	roles := w.roles(w.approval)
	if _, err := w.a.Pending(ctx, caller("carol"), roles); err != nil { // builds the (empty) index
		t.Fatal(err)
	}
	closed := storedRequest(t, w, "bob", w.approval.Name, RequestDenied, false)
	// As if the instance stopped between saving the denial and dropping the marker.
	if err := state.StoreJSON(ctx, w.st, indexKey(indexPending, closed.Role, closed.ID), indexMarker{ID: closed.ID, Created: closed.Created}); err != nil {
		t.Fatal(err)
	}
	// As if it stopped between writing a new request's marker and the request.
	orphanID := newRequestID()
	orphanKey := indexKey(indexPending, w.approval.Name, orphanID)
	if err := state.StoreJSON(ctx, w.st, orphanKey, indexMarker{ID: orphanID, Created: w.clock.Now().UTC()}); err != nil {
		t.Fatal(err)
	}
	// A stray key in the index folder is no marker at all.
	if err := w.st.Store(ctx, indexFolder(indexPending)+"not-base64!/x.json", []byte("{}")); err != nil {
		t.Fatal(err)
	}

	// A marker of an open request filed under a role it is not for.
	open := storedRequest(t, w, "bob", w.approval.Name, RequestPending, false)
	misfiled := indexKey(indexPending, "billing", open.ID)
	if err := state.StoreJSON(ctx, w.st, misfiled, indexMarker{ID: open.ID, Created: open.Created}); err != nil {
		t.Fatal(err)
	}
	billing := w.roleWith(func(r *policy.Role) { r.Name = "billing"; r.Approval = w.approval.Approval })
	got, err := w.a.Pending(ctx, caller("carol"), w.roles(w.approval, billing))
	if err != nil || !slices.Equal(ids(got), []string{open.ID}) {
		t.Fatalf("Pending = %v, %v; want only the open request %s, once", ids(got), err, open.ID)
	}
	if m := markers(t, w); len(m[closed.ID]) != 0 || len(m[orphanID]) != 1 {
		t.Fatalf("markers after a read = %v: want the closed request's dropped, the young orphan kept", m)
	}
	for _, tt := range []struct {
		after time.Duration
		kept  bool
	}{{orphanMarkerAge, true}, {orphanMarkerAge + time.Second, false}} {
		if err := w.a.Prune(ctx, w.clock.Now().Add(tt.after)); err != nil {
			t.Fatal(err)
		}
		if kept := w.st.Exists(ctx, orphanKey); kept != tt.kept {
			t.Errorf("orphan marker %s old: kept = %v, want %v", tt.after, kept, tt.kept)
		}
	}
	if w.st.Exists(ctx, misfiled) || !w.st.Exists(ctx, indexKey(indexPending, open.Role, open.ID)) {
		t.Error("prune kept the misfiled marker, or dropped the right one")
	}
}

func TestApprovesRole(t *testing.T) {
	approval := &policy.Approval{Approvers: []string{"carol", "group:sec"}, Count: 1, Expires: time.Hour}
	withApproval := &policy.Role{Name: "prod-db", Approval: approval}
	tests := []struct {
		name   string
		role   *policy.Role
		caller policy.Caller
		want   bool
	}{
		{"approver by name", withApproval, policy.Caller{User: "carol"}, true},
		{"approver by group", withApproval, policy.Caller{User: "erin", Groups: []string{"sec"}}, true},
		{"not an approver", withApproval, policy.Caller{User: "bob", Groups: []string{"ops"}}, false},
		{"a user named like the group", withApproval, policy.Caller{User: "group:sec"}, false},
		{"empty user", withApproval, policy.Caller{Groups: []string{"sec"}}, false},
		{"role without approval", &policy.Role{Name: "viewer"}, policy.Caller{User: "carol"}, false},
		{"no role", nil, policy.Caller{User: "carol"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ApprovesRole(tt.role, tt.caller); got != tt.want {
				t.Errorf("ApprovesRole = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestParseIndexKey(t *testing.T) {
	id := strings.Repeat("A", 22)
	tests := []struct {
		key  string
		want indexEntry
		ok   bool
	}{
		{indexKey(indexPending, "prod-db", id), indexEntry{key: indexKey(indexPending, "prod-db", id), role: "prod-db", id: id}, true},
		{indexKey(indexPending, "prod-db", id) + ".tmp", indexEntry{}, false},
		{indexFolder(indexPending) + state.Name("prod-db"), indexEntry{}, false},
		{indexFolder(indexPending) + state.Name("prod-db") + "/short.json", indexEntry{}, false},
		{indexFolder(indexPending) + "%%%/" + id + ".json", indexEntry{}, false},
		{indexFolder(indexPending) + "/" + id + ".json", indexEntry{}, false},
		{indexKey(indexWaiting, "prod-db", id), indexEntry{}, false},
	}
	for _, tt := range tests {
		got, ok := parseIndexKey(indexPending, tt.key)
		if ok != tt.ok || got != tt.want {
			t.Errorf("parseIndexKey(%q) = %+v, %v; want %+v, %v", tt.key, got, ok, tt.want, tt.ok)
		}
	}
}
