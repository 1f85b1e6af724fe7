package session

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
)

// A clean stop saves what each session that goes on was served here, and the next
// start of the same instance goes on counting from there: the session_ended written
// after the restart counts the requests served before it too.
func TestLiveCountsGoOnAcrossAStop(t *testing.T) {
	ctx := context.Background()
	st := &certmagic.FileStorage{Path: t.TempDir()}
	at := time.Unix(1000, 0)
	serve := func(l *Live, id string, expiry int64, use Use) {
		c := &Claims{Grant: Grant{Subject: "alice", Role: "ops", SessionID: id, Expiry: expiry}}
		rctx, cancel := context.WithCancel(ctx)
		l.Register(c, rctx, cancel)
		l.Done(c, rctx, &use)
	}

	before := NewLive()
	serve(before, "goes-on", 5000, Use{Status: 200, BytesOut: 10, At: at})
	serve(before, "revoked-meanwhile", 5000, Use{Status: 201, Mutating: true, BytesIn: 3, At: at})
	serve(before, "expires-meanwhile", 1500, Use{Status: 200, At: at})
	serve(before, "ended-before", 5000, Use{Status: 200, At: at})
	before.End("ended-before")
	if err := SaveLive(ctx, st, "instance-1", before, 42, time.Unix(1000, 0)); err != nil {
		t.Fatal(err)
	}

	revoked := NewRevocations()
	revoked.Add("revoked-meanwhile", time.Unix(5000, 0))
	after := NewLive()
	var told []Ended
	after.OnEnd = func(e Ended) { told = append(told, e) }
	if err := RestoreLive(ctx, st, "instance-2", after, revoked, 42); err != nil || after.Len() != 0 || len(told) != 0 {
		t.Fatalf("another instance restored %d sessions, told %+v (%v); want nothing: the counts are this instance's", after.Len(), told, err)
	}
	if err := RestoreLive(ctx, st, "instance-1", after, revoked, 42); err != nil {
		t.Fatal(err)
	}
	if len(told) != 1 || told[0].SessionID != "revoked-meanwhile" || told[0].How != EndedRevoked ||
		told[0].Usage.Requests != 1 || told[0].Usage.Mutating != 1 || told[0].Usage.BytesIn != 3 {
		t.Fatalf("at restore, told %+v; want the session revoked meanwhile ended at once with its request", told)
	}
	told = nil
	after.Sweep(time.Unix(2000, 0))
	if len(told) != 1 || told[0].SessionID != "expires-meanwhile" || told[0].How != EndedExpired || told[0].Usage.Requests != 1 {
		t.Fatalf("at the first sweep, told %+v; want the session that expired meanwhile, with its request", told)
	}
	told = nil
	serve(after, "goes-on", 5000, Use{Status: 404, At: at.Add(time.Hour)})
	after.End("goes-on")
	want := Usage{Requests: 2, BytesOut: 10, Statuses: [6]int64{2: 1, 4: 1}}
	if len(told) != 1 || told[0].SessionID != "goes-on" || !told[0].Usage.First.Equal(at) || !told[0].Usage.Last.Equal(at.Add(time.Hour)) {
		t.Fatalf("told %+v, want goes-on first served at %v, last an hour later", told, at)
	}
	got := told[0].Usage
	got.First, got.Last = time.Time{}, time.Time{}
	if got != want {
		t.Fatalf("told %+v, want counts %+v: the request before the stop and the one after", got, want)
	}

	// A crash after this start saves nothing: the next start must not count the same
	// requests again.
	again := NewLive()
	if err := RestoreLive(ctx, st, "instance-1", again, revoked, 42); err != nil || again.Len() != 0 || len(again.Saved()) != 0 {
		t.Fatalf("a second restore took back %+v (%v); want nothing, the save was used", again.Saved(), err)
	}
	if err := SaveLive(ctx, st, "instance-1", again, 50, time.Unix(1000, 0)); err != nil {
		t.Fatalf("saving nothing: %v; want the save removed, or nothing to remove", err)
	}
}

// A save is taken back only by a start that resumes the chain from the head it was made
// at: one the instance ran past (a start that took it back failed to remove it, or a
// second state wrote on) is dropped, never counted again. And a save that cannot be
// removed is not taken back.
func TestSavedLiveIsTakenBackOnlyAtItsOwnHead(t *testing.T) {
	ctx := context.Background()
	st := &certmagic.FileStorage{Path: t.TempDir()}
	l := NewLive()
	c := &Claims{Grant: Grant{Subject: "alice", Role: "ops", SessionID: "s1", Expiry: 5000}}
	rctx, cancel := context.WithCancel(ctx)
	l.Register(c, rctx, cancel)
	l.Done(c, rctx, &Use{Status: 200, At: time.Unix(1000, 0)})
	if err := SaveLive(ctx, st, "i", l, 10, time.Unix(1000, 0)); err != nil {
		t.Fatal(err)
	}
	later := NewLive()
	if err := RestoreLive(ctx, st, "i", later, NewRevocations(), 11); !errors.Is(err, ErrSavedLiveStale) || len(later.Saved()) != 0 {
		t.Fatalf("a save at head 10 restored at head 11: %v, took back %+v; want ErrSavedLiveStale and nothing", err, later.Saved())
	}
	if err := RestoreLive(ctx, st, "i", later, NewRevocations(), 10); err != nil || len(later.Saved()) != 0 {
		t.Fatalf("after a stale save: %v, took back %+v; want it gone", err, later.Saved())
	}

	if err := SaveLive(ctx, st, "i", l, 10, time.Unix(1000, 0)); err != nil {
		t.Fatal(err)
	}
	// Pruned once older than keep: an instance that never came back.
	if err := pruneSavedLive(ctx, st, time.Unix(1000, 0).Add(time.Hour), 2*time.Hour); err != nil || !st.Exists(ctx, liveKey("i")) {
		t.Fatalf("pruning a save an hour old, keeping 2h: %v, kept %v; want it kept", err, st.Exists(ctx, liveKey("i")))
	}
	if err := pruneSavedLive(ctx, st, time.Unix(1000, 0).Add(3*time.Hour), 2*time.Hour); err != nil || st.Exists(ctx, liveKey("i")) {
		t.Fatalf("pruning a save 3h old, keeping 2h: %v, kept %v; want it gone", err, st.Exists(ctx, liveKey("i")))
	}
	if err := SaveLive(ctx, st, "i", l, 10, time.Unix(1000, 0)); err != nil {
		t.Fatal(err)
	}
	undeletable := &noDeleteStore{FileStorage: st}
	if err := RestoreLive(ctx, undeletable, "i", later, NewRevocations(), 10); err == nil || len(later.Saved()) != 0 {
		t.Fatalf("a save that cannot be removed: %v, took back %+v; want an error and nothing taken back", err, later.Saved())
	}
}

type noDeleteStore struct{ *certmagic.FileStorage }

func (noDeleteStore) Delete(context.Context, string) error { return errors.New("read-only") }
