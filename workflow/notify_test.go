package workflow

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"

	"github.com/caddy-jit/caddy-jit/policy"
	"github.com/caddy-jit/caddy-jit/session"
)

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
