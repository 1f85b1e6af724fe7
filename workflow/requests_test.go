package workflow

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"

	"github.com/caddy-jit/caddy-jit/audit"
	"github.com/caddy-jit/caddy-jit/policy"
	"github.com/caddy-jit/caddy-jit/session"
)

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
