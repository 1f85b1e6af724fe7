package audit

import (
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
)

// A `fresh` route's requests: the access event says which rule admitted it, and a
// refused re-confirmation is among the session's failures.
func TestFreshEventsInTheLogAndTheStory(t *testing.T) {
	l := newAlStoryLog(t)
	m := func(n int) time.Time { return alT0.Add(time.Duration(n) * time.Minute) }
	rec := &Record{ID: "sess-fresh", User: "alice", Role: "db-admin", Justification: "drop the old table", Start: m(0), Expires: m(30)}
	l.activate(m(0), rec)
	l.at(m(1)).Access(Holder{User: rec.User, Role: rec.Role, SessionID: rec.ID, BreakGlass: true, Fresh: "5m"}, "192.0.2.7", "DELETE", "/t", 204, 0, time.Millisecond,
		&BodyDigest{Size: 3, SHA256: strings.Repeat("ab", 32), Key: "k", Dropped: true})
	l.access(m(2), rec, "GET", "/plain", 200, 1, nil)
	l.at(m(8)).Event(EventReauthRequired, zap.String("user", "alice"), zap.String("session_id", rec.ID), zap.String("uri", "/t"), zap.String("fresh", "5m"))
	l.at(m(9)).Event(EventReconfirmFailed, zap.String("user", "alice"), zap.String("session_id", rec.ID), zap.String("reason", "totp_invalid"),
		zap.String("client_ip", "192.0.2.7"))

	lines := strings.Split(strings.TrimSpace(l.buf.String()), "\n")
	if len(lines) != 5 {
		t.Fatalf("%d lines, want 5:\n%s", len(lines), l.buf.String())
	}
	// Every field the access event can carry at once, fresh last: nothing is lost.
	for _, want := range []string{`"break_glass":true`, `"body_recorded":false`, `"body_complete":false`, `"fresh":"5m"`} {
		if !strings.Contains(lines[1], want) {
			t.Errorf("the fresh access event lacks %s: %s", want, lines[1])
		}
	}
	if strings.Contains(lines[2], `"fresh"`) {
		t.Errorf("an access under no fresh rule says fresh: %s", lines[2])
	}
	s, err := SessionStory([]Input{Data("jit-audit.log", l.buf.Bytes())}, rec.ID, m(20))
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Failures) != 1 || s.Failures[0].Event != EventReconfirmFailed || s.Failures[0].Reason != "totp_invalid" {
		t.Errorf("failures %+v, want the refused re-confirmation", s.Failures)
	}
	if len(s.Accesses) != 2 {
		t.Errorf("accesses %+v, want 2: reauth_required is no access", s.Accesses)
	}
}
