package session

import (
	"context"
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
	if err := SaveLive(ctx, st, "instance-1", before); err != nil {
		t.Fatal(err)
	}

	revoked := NewRevocations()
	revoked.Add("revoked-meanwhile", time.Unix(5000, 0))
	after := NewLive()
	var told []Ended
	after.OnEnd = func(e Ended) { told = append(told, e) }
	if err := RestoreLive(ctx, st, "instance-2", after, revoked); err != nil || after.Len() != 0 || len(told) != 0 {
		t.Fatalf("another instance restored %d sessions, told %+v (%v); want nothing: the counts are this instance's", after.Len(), told, err)
	}
	if err := RestoreLive(ctx, st, "instance-1", after, revoked); err != nil {
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
	if err := RestoreLive(ctx, st, "instance-1", again, revoked); err != nil || again.Len() != 0 || len(again.Saved()) != 0 {
		t.Fatalf("a second restore took back %+v (%v); want nothing, the save was used", again.Saved(), err)
	}
	if err := SaveLive(ctx, st, "instance-1", again); err != nil {
		t.Fatalf("saving nothing: %v; want the save removed, or nothing to remove", err)
	}
}
