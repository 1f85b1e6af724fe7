package workflow

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"

	"github.com/caddy-jit/caddy-jit/policy"
	"github.com/caddy-jit/caddy-jit/state"
)

// A save is fenced by what its copy was read as: a writer whose lock was lost under it
// (two copies of one request changed at once) cannot overwrite the other's change.
func TestRequestSavesAreFencedByWhatWasRead(t *testing.T) {
	ctx := context.Background()
	s := &Requests{storage: &certmagic.FileStorage{Path: t.TempDir()}}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	fresh := func() *Request {
		return &Request{ID: newRequestID(), User: "alice", Role: "ops", State: RequestPending, Created: now, Deadline: now.Add(time.Hour), Needed: 1}
	}
	r := fresh()
	if err := s.saveRequest(ctx, r); err != nil {
		t.Fatal(err)
	}
	twin := *r
	twin.stored = nil
	if err := s.saveRequest(ctx, &twin); !errors.Is(err, ErrRequestChanged) {
		t.Errorf("a second new request under the same id = %v, want ErrRequestChanged", err)
	}

	first, err := s.LoadRequest(ctx, r.ID)
	if err != nil {
		t.Fatal(err)
	}
	second, err := s.LoadRequest(ctx, r.ID)
	if err != nil {
		t.Fatal(err)
	}
	first.Decisions = append(first.Decisions, Decision{By: "carol", Approve: true, At: now})
	first.State = RequestApproved
	if err := s.saveRequest(ctx, first); err != nil {
		t.Fatalf("the first change = %v", err)
	}
	second.Decisions = append(second.Decisions, Decision{By: "dave", Comment: "no", At: now})
	second.State = RequestDenied
	if err := s.saveRequest(ctx, second); !errors.Is(err, ErrRequestChanged) {
		t.Errorf("a change to a stale copy = %v, want ErrRequestChanged", err)
	}
	stored, err := s.LoadRequest(ctx, r.ID)
	if err != nil {
		t.Fatal(err)
	}
	if stored.State != RequestApproved || len(stored.Decisions) != 1 || stored.Decisions[0].By != "carol" {
		t.Errorf("the store holds %s with %+v, want the first change only", stored.State, stored.Decisions)
	}
	// The copy that saved goes on saving: it knows what it wrote.
	first.SessionID = "s1"
	if err := s.saveRequest(ctx, first); err != nil {
		t.Errorf("a second save of the copy that saved = %v", err)
	}
}

// A place claimed on another instance counts before its session is stored: the claim
// is in the role's place record, written by compare-and-set, so an instance that lost
// the role's lock under it (or any other) cannot give the same place twice.
func TestPlaceClaimedElsewhereCountsBeforeItsSessionIsStored(t *testing.T) {
	ctx := context.Background()
	w := newWorkflowFixture(t)
	role := w.roleWith(func(r *policy.Role) { r.MaxActive = 1 })
	now := w.clock.Now()
	claimed := placeRecord{Claims: []placeClaim{{User: "bob", ID: "claimed-on-another-instance", Start: now, End: now.Add(time.Hour), At: now}}}
	if err := state.StoreJSON(ctx, w.st, placesKey(role.Name), claimed); err != nil {
		t.Fatal(err)
	}
	_, err := w.a.Submit(ctx, w.activation(t, "alice", role))
	refusal(t, err, "max_active_reached")

	// A claim whose session never appears stops counting after claimPending.
	w.clock.Add(claimPending + time.Second)
	if res := w.submit(t, w.activation(t, "alice", role)); res.Record == nil {
		t.Fatalf("Submit after the stale claim = %+v", res)
	}
	var after placeRecord
	if _, err := state.LoadJSON(ctx, w.st, placesKey(role.Name), &after); err != nil {
		t.Fatal(err)
	}
	if len(after.Claims) != 1 || after.Claims[0].User != "alice" {
		t.Errorf("the place record holds %+v, want alice's claim only", after.Claims)
	}
}
