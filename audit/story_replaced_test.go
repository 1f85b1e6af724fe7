package audit

import (
	"testing"
	"time"
)

// A session replaced in its browser ends at its replaced event, by its user: the
// story says so, and counts the elevated time to there, not to its expiry.
func TestSessionStoryOfAReplacedSession(t *testing.T) {
	l := newAlStoryLog(t)
	m := func(n int) time.Time { return alT0.Add(time.Duration(n) * time.Minute) }
	rec := &Record{ID: "sess-replaced", User: "alice", Role: "ops", Start: m(0), Expires: m(60)}
	l.activate(m(0), rec)
	l.access(m(1), rec, "GET", "/", 200, 10, nil)
	l.end(m(5), EventReplaced, rec, "alice", "replaced by session sess-next in the same browser")

	s, err := SessionStory([]Input{Data("jit-audit.log", l.buf.Bytes())}, rec.ID, m(120))
	if err != nil {
		t.Fatal(err)
	}
	if e := s.End; e.How != EndReplaced || e.By != "alice" || !e.At.Equal(m(5)) || e.Reason != "replaced by session sess-next in the same browser" {
		t.Errorf("end %+v, want replaced by alice at %v", e, m(5))
	}
	if s.Totals.Elevated != "5m" {
		t.Errorf("elevated %s, want 5m: to the replacement, not the expiry", s.Totals.Elevated)
	}
}
