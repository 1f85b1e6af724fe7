package session

import (
	"context"
	"testing"
	"time"
)

// What a session was served here is told once, when it ends, and only once its last
// request in flight is done: the counts then equal its access events.
func TestLiveTellsEachEndedSessionsUsage(t *testing.T) {
	at := time.Unix(1000, 0)
	type request struct {
		use   *Use // nil: refused after it registered
		early bool // still in flight when the session ends
	}
	tests := []struct {
		name     string
		requests []request
		end      func(l *Live, id string)
		want     *Ended
	}{
		{"deactivated here: its event waits for Release", []request{{use: &Use{Status: 200, BytesOut: 10, At: at}}, {use: &Use{Status: 302, BytesIn: 5, Mutating: true, At: at.Add(time.Second)}}},
			func(l *Live, id string) { l.Ending(id, EndedDeactivated, "alice"); l.End(id); l.Release(id) },
			&Ended{How: EndedDeactivated, By: "alice", Known: true, Usage: Usage{Requests: 2, Mutating: 1, BytesIn: 5, BytesOut: 10, First: at, Last: at.Add(time.Second), Statuses: [6]int64{0, 0, 1, 1}}}},
		{"revoked elsewhere", []request{{use: &Use{Status: 404, At: at}}},
			func(l *Live, id string) { l.End(id) },
			&Ended{How: EndedRevoked, Usage: Usage{Requests: 1, First: at, Last: at, Statuses: [6]int64{0, 0, 0, 0, 1}}}},
		{"expired, a stream still open", []request{{use: &Use{Status: 200, At: at}}, {use: &Use{Status: 499, BytesOut: 7, At: at.Add(time.Minute)}, early: true}},
			func(l *Live, id string) { l.Sweep(time.Unix(2000, 0)) },
			&Ended{How: EndedExpired, Known: true, Usage: Usage{Requests: 2, BytesOut: 7, First: at, Last: at.Add(time.Minute), Statuses: [6]int64{1: 0, 2: 1, 4: 1}}}},
		{"served nothing here", []request{{use: nil}},
			func(l *Live, id string) { l.End(id) }, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := NewLive()
			var told []Ended
			l.OnEnd = func(e Ended) { told = append(told, e) }
			c := &Claims{Grant: Grant{Subject: "alice", Role: "ops", SessionID: "s1", Expiry: 1500}}
			var inFlight []func()
			for _, r := range tt.requests {
				ctx, cancel := context.WithCancel(context.Background())
				l.Register(c, ctx, cancel)
				if r.early {
					inFlight = append(inFlight, func() { l.Done(c, ctx, r.use) })
					continue
				}
				l.Done(c, ctx, r.use)
			}
			tt.end(l, "s1")
			if len(inFlight) > 0 && len(told) != 0 {
				t.Fatalf("told %+v while a request was in flight", told)
			}
			for _, done := range inFlight {
				done()
			}
			tt.end(l, "s1") // a second end tells nothing more
			if tt.want == nil {
				if len(told) != 0 {
					t.Fatalf("told %+v, want nothing", told)
				}
				return
			}
			want := *tt.want
			want.SessionID, want.User, want.Role = "s1", "alice", "ops"
			if len(told) != 1 || told[0] != want {
				t.Fatalf("told %+v, want once %+v", told, want)
			}
		})
	}
}

// A store out of reach cancels the requests, but ends no session: its usage goes on.
func TestLiveEndAllKeepsUsage(t *testing.T) {
	l := NewLive()
	var told []Ended
	l.OnEnd = func(e Ended) { told = append(told, e) }
	c := &Claims{Grant: Grant{Subject: "alice", Role: "ops", SessionID: "s1", Expiry: 1500}}
	for range 2 {
		ctx, cancel := context.WithCancel(context.Background())
		l.Register(c, ctx, cancel)
		l.EndAll()
		l.Done(c, ctx, &Use{Status: 200, At: time.Unix(1000, 0)})
	}
	l.End("s1")
	if len(told) != 1 || told[0].Usage.Requests != 2 {
		t.Fatalf("told %+v, want one end with both requests", told)
	}
}

// An extension keeps the session's id and issues a token with a later expiry: the
// session goes on, so Sweep at its first end neither cancels its open streams nor
// tells a session_ended, which comes once, at the end it was extended to.
func TestLiveFollowsAnExtension(t *testing.T) {
	l := NewLive()
	var told []Ended
	l.OnEnd = func(e Ended) { told = append(told, e) }
	before := &Claims{Grant: Grant{Subject: "alice", Role: "ops", SessionID: "s1", Expiry: 1500}}
	extended := &Claims{Grant: Grant{Subject: "alice", Role: "ops", SessionID: "s1", Expiry: 3000}}
	serve := func(c *Claims, at int64) {
		ctx, cancel := context.WithCancel(context.Background())
		l.Register(c, ctx, cancel)
		l.Done(c, ctx, &Use{Status: 200, At: time.Unix(at, 0)})
	}
	serve(before, 1000)
	serve(extended, 1400)
	stream, cancel := context.WithCancel(context.Background())
	l.Register(before, stream, cancel) // opened with the old token, after the extension
	l.Sweep(time.Unix(1600, 0))
	if stream.Err() != nil || len(told) != 0 {
		t.Fatalf("at the first end: stream %v, told %+v; want the session going on", stream.Err(), told)
	}
	l.Done(before, stream, &Use{Status: 101, At: time.Unix(2000, 0)})
	serve(extended, 2500)
	l.Sweep(time.Unix(3000, 0))
	if len(told) != 1 || told[0].How != EndedExpired || told[0].Usage.Requests != 4 {
		t.Fatalf("told %+v, want one expiry with all 4 requests", told)
	}
}

// At a stop, CancelAll cancels what is open and keeps it counted until it is done, so
// that the stop can wait for its usage; EndAll forgets it at once.
func TestLiveCancelAllKeepsCountingUntilDone(t *testing.T) {
	l := NewLive()
	c := &Claims{Grant: Grant{Subject: "alice", Role: "ops", SessionID: "s1", Expiry: 1500}}
	ctx, cancel := context.WithCancel(context.Background())
	l.Register(c, ctx, cancel)
	l.CancelAll()
	if ctx.Err() == nil || l.Len() != 1 {
		t.Fatalf("after CancelAll: context %v, Len %d; want cancelled and still counted", ctx.Err(), l.Len())
	}
	l.Done(c, ctx, &Use{Status: 101, At: time.Unix(1000, 0)})
	if l.Len() != 0 || len(l.Saved()) != 1 || l.Saved()[0].Usage.Requests != 1 {
		t.Fatalf("after Done: Len %d, saved %+v; want nothing in flight and the request counted", l.Len(), l.Saved())
	}
}
