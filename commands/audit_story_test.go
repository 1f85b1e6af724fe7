package commands

import (
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/caddy-jit/caddy-jit/audit"
)

// The story prints each session_ended whole: how, by whom, the counts, first and last
// access, and the responses by status class.
func TestAuditSessionCommandPrintsSessionEnded(t *testing.T) {
	setAuditNow(t)
	l := sampleAuditLog()
	t0 := auditTestNow.Add(-36 * time.Hour)
	l.at = t0.Add(30 * time.Minute)
	l.a.SessionEnded(audit.SessionEnd{User: "alice", Role: "db-admin", SessionID: "sess-1", How: "deactivated", By: "alice",
		Requests: 3, Mutating: 3, BytesIn: 9, BytesOut: 60, First: t0.Add(time.Minute), Last: t0.Add(3 * time.Minute), Statuses: [6]int64{2: 1, 4: 1, 5: 1}})
	code, out, err := runAuditCmd(t, auditSessionCommand, cmdAuditSession, "sess-1", l.write(t, "jit-audit.log"))
	if code != 0 || err != nil {
		t.Fatalf("exit %d, %v\n%s", code, err, out)
	}
	want := "Closed     2026-03-30 10:30:00 UTC on inst-cli: deactivated, 3 requests (3 mutating; 2xx 1, 4xx 1, 5xx 1), 9 bytes in, 60 bytes out, " +
		"first 2026-03-30 10:01:00 UTC, last 2026-03-30 10:03:00 UTC; complete: every request it counts is in these files"
	if !strings.Contains(out, want) {
		t.Errorf("output lacks\n%s\n%s", want, out)
	}
}

// A replaced session's end is printed like a deactivation: how, by whom, why.
func TestAuditSessionCommandPrintsAReplacement(t *testing.T) {
	setAuditNow(t)
	l := newAuditTestLog(audit.NewChain("inst-cli"))
	t0 := auditTestNow.Add(-36 * time.Hour)
	l.activate("sess-2", "alice", "checking", t0, time.Hour, false)
	l.access(t0.Add(time.Minute), "sess-2", "alice", "/status", 200, 10)
	l.event(t0.Add(5*time.Minute), audit.EventReplaced, append(auditSessionFields("sess-2", "alice", "db-admin", "checking", t0, t0.Add(time.Hour), false),
		zap.String("by", "alice"), zap.String("reason", "replaced by session sess-3 in the same browser"))...)
	code, out, err := runAuditCmd(t, auditSessionCommand, cmdAuditSession, "sess-2", l.write(t, "jit-audit.log"))
	if code != 0 || err != nil {
		t.Fatalf("exit %d, %v\n%s", code, err, out)
	}
	want := `Ended      2026-03-30 10:05:00 UTC: replaced by alice: "replaced by session sess-3 in the same browser"`
	if !strings.Contains(out, want) {
		t.Errorf("output lacks\n%s\n%s", want, out)
	}
}
