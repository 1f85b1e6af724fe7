package session

import (
	"context"
	"testing"
	"time"
)

// A session extended on another instance (or while this one was stopped) is not
// ended here at its first end: the sync reads its record first. It ends once, at the
// end the record holds, with every request served here.
func TestSyncFollowsAnExtensionMadeElsewhere(t *testing.T) {
	ctx := context.Background()
	f := newSessionsFixture(t)
	var told []Ended
	f.a.Live.OnEnd = func(e Ended) { told = append(told, e) }
	token, rec := f.activate(t, f.activation(t))
	c, err := f.a.Verifier.Verify(token, Want{Subject: "alice", Audience: audience, Roles: []string{f.role.Name}}, f.clock.Now())
	if err != nil {
		t.Fatal(err)
	}
	serve := func() {
		rctx, cancel := context.WithCancel(ctx)
		f.a.Live.Register(c, rctx, cancel)
		f.a.Live.Done(c, rctx, &Use{Status: 200, At: f.clock.Now()})
	}
	serve()
	// Another instance extends it by 15 minutes: only the record says so here.
	rec.Expires = rec.Expires.Add(15 * time.Minute)
	if err := f.a.Records.Save(ctx, rec); err != nil {
		t.Fatal(err)
	}
	f.clock.Add(16 * time.Minute)
	if err := f.a.Sync(ctx, f.clock.Now()); err != nil {
		t.Fatal(err)
	}
	if len(told) != 0 {
		t.Fatalf("at its first end, told %+v; want the extended session going on", told)
	}
	serve()
	f.clock.Add(15 * time.Minute)
	if err := f.a.Sync(ctx, f.clock.Now()); err != nil {
		t.Fatal(err)
	}
	if len(told) != 1 || told[0].How != EndedExpired || told[0].Usage.Requests != 2 {
		t.Fatalf("at its extended end, told %+v; want one expiry with both requests", told)
	}
}
