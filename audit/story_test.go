package audit

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/caddy-jit/caddy-jit/policy"
)

// Record is a session as the tests describe it: audit.Session, with its start.
type Record struct {
	ID, User, Role, Justification, Ticket, ClientIP, RequestID string
	Approvers                                                  []string
	Start, Expires                                             time.Time
	BreakGlass                                                 bool
}

// recordFields are the fields session writes of it (session.Record.AuditFields).
func recordFields(r *Record) []zap.Field {
	return Session{ID: r.ID, User: r.User, Role: r.Role, Justification: r.Justification, Ticket: r.Ticket, ClientIP: r.ClientIP,
		Expires: r.Expires, RequestID: r.RequestID, Approvers: r.Approvers, BreakGlass: r.BreakGlass}.Fields()
}

// requestFields are the fields the workflow writes of a request.
func requestFields(r *Request) []zap.Field { return r.Fields() }

// alStoryLog writes a log with known events, in order, with the clock set per event.
type alStoryLog struct {
	t     *testing.T
	buf   bytes.Buffer
	clock *alClock
	a     *Writer
}

func newAlStoryLog(t *testing.T) *alStoryLog {
	s := &alStoryLog{t: t, clock: &alClock{t: alT0}}
	s.a = NewWriter(alLogger(&s.buf), NewChain("inst-s"), s.clock.now)
	return s
}

func (s *alStoryLog) at(t time.Time) *Writer {
	s.clock.set(t)
	return s.a
}

func (s *alStoryLog) activate(at time.Time, rec *Record) {
	s.at(at).Event(EventActivationSucceeded, append(recordFields(rec),
		zap.String("duration", policy.FormatDuration(rec.Expires.Sub(rec.Start))), zap.String("start", rec.Start.Format(time.RFC3339)))...)
	if rec.BreakGlass {
		s.a.Event(EventBreakGlass, recordFields(rec)...)
	}
}

func (s *alStoryLog) access(at time.Time, rec *Record, method, uri string, status int, n int64, body *BodyDigest) {
	s.at(at).Access(Holder{User: rec.User, Role: rec.Role, SessionID: rec.ID, BreakGlass: rec.BreakGlass}, "192.0.2.7", method, uri, status, n, time.Millisecond, body)
}

func (s *alStoryLog) end(at time.Time, how string, rec *Record, by, reason string) {
	s.at(at).Event(how, append(recordFields(rec), zap.String("by", by), zap.String("reason", reason))...)
}

func (s *alStoryLog) fail(at time.Time, user, role, reason string) {
	s.at(at).Event(EventActivationFailed, zap.String("user", user), zap.String("role", role), zap.String("reason", reason),
		zap.String("justification", "j"), zap.String("ticket", ""), zap.String("client_ip", "192.0.2.8"))
}

func TestSessionStory(t *testing.T) {
	l := newAlStoryLog(t)
	m := func(n int) time.Time { return alT0.Add(time.Duration(n) * time.Minute) }
	approved := &Record{ID: "sess-approved", User: "alice", Role: "db-admin", Justification: "fix \"prod\"\nnow", Ticket: "OPS-1",
		ClientIP: "192.0.2.7", Start: m(10).Truncate(time.Second), Expires: m(40).Truncate(time.Second), RequestID: "req-1", Approvers: []string{"bob", "carol"}}
	req := &Request{ID: "req-1", User: "alice", Role: "db-admin", Justification: approved.Justification, Duration: 30 * time.Minute, Ticket: "OPS-1"}
	l.at(m(0)).Event(EventActivationRequested, append(requestFields(req), zap.String("client_ip", "192.0.2.7"), zap.Int("approvals_needed", 2),
		zap.String("deadline", m(60).Format(time.RFC3339)))...)
	l.at(m(5)).Event(EventRequestApproved, append(requestFields(req), zap.String("by", "bob"), zap.String("comment", "ok \u2028 go"),
		zap.String("client_ip", "198.51.100.1"), zap.Int("approvals", 1), zap.Int("approvals_needed", 2))...)
	l.at(m(9)).Event(EventRequestApproved, append(requestFields(req), zap.String("by", "carol"), zap.String("comment", "fine"),
		zap.String("client_ip", "198.51.100.2"), zap.Int("approvals", 2), zap.Int("approvals_needed", 2))...)
	l.activate(m(10), approved)
	other := &Record{ID: "sess-other", User: "dave", Role: "db-admin", Start: m(11), Expires: m(20)}
	l.activate(m(11), other)
	l.access(m(12), approved, "GET", "/a", 200, 100, nil)
	l.access(m(13), other, "GET", "/other", 200, 1, nil)
	l.access(m(14), approved, "POST", "/b", 201, 20, &BodyDigest{Size: 7, SHA256: strings.Repeat("cd", 32), Complete: true})
	l.access(m(15), approved, "GET", "/missing", 404, 3, nil)
	l.access(m(16), approved, "GET", "/boom", 502, 0, nil)
	from := approved.Expires
	approved.Expires = m(70).Truncate(time.Second)
	l.at(m(30)).Event(EventExtended, append(recordFields(approved), zap.String("extension_justification", "more"),
		zap.String("from", from.Format(time.RFC3339)), zap.String("extension_client_ip", "192.0.2.7"))...)
	l.at(m(31)).Event(EventExtensionFailed, zap.String("user", "alice"), zap.String("session_id", approved.ID), zap.String("reason", "totp_invalid"),
		zap.String("justification", "more"), zap.String("client_ip", "192.0.2.7"))
	l.end(m(50), EventRevoked, approved, "op", "incident over")

	glass := &Record{ID: "sess-glass", User: "erin", Role: "db-admin", Justification: "outage!!", Start: m(60), Expires: m(75), BreakGlass: true}
	l.activate(m(60), glass)
	l.access(m(61), glass, "GET", "/", 200, 5, nil)

	inputs := []Input{Data("jit-audit.log", l.buf.Bytes())}
	now := m(120)

	s, err := SessionStory(inputs, "sess-approved", now)
	if err != nil {
		t.Fatal(err)
	}
	a := s.Activation
	if s.User != "alice" || s.Role != "db-admin" || a == nil || a.Justification != approved.Justification || a.Ticket != "OPS-1" ||
		!a.Start.Equal(approved.Start) || !a.At.Equal(m(10)) || a.RequestID != "req-1" || !slices.Equal(a.Approvers, []string{"bob", "carol"}) ||
		a.ClientIP != "192.0.2.7" || a.Where != "jit-audit.log:4" || a.Duration != "30m" {
		t.Errorf("activation %+v", a)
	}
	r := s.Request
	if r == nil || !r.RequestedAt.Equal(m(0)) || r.ApprovalsNeeded != 2 || len(r.Decisions) != 2 || r.Decisions[0].By != "bob" ||
		r.Decisions[0].Comment != "ok \u2028 go" || !r.Decisions[1].Approved || r.Decisions[1].By != "carol" {
		t.Errorf("request %+v", r)
	}
	if len(s.Extensions) != 1 || !s.Extensions[0].From.Equal(from) || !s.Extensions[0].To.Equal(approved.Expires) || s.Extensions[0].Justification != "more" {
		t.Errorf("extensions %+v", s.Extensions)
	}
	if len(s.Failures) != 1 || s.Failures[0].Reason != "totp_invalid" {
		t.Errorf("failures %+v", s.Failures)
	}
	if len(s.Accesses) != 4 || s.Accesses[1].BodySHA256 != strings.Repeat("cd", 32) || s.Accesses[1].BodyBytes == nil || *s.Accesses[1].BodyBytes != 7 ||
		s.Accesses[2].URI != "/missing" || s.Accesses[3].Status != 502 {
		t.Errorf("accesses %+v", s.Accesses)
	}
	wantTotals := StoryTotals{Requests: 4, Bytes: 123, Statuses: map[string]int64{"2xx": 2, "4xx": 1, "5xx": 1},
		ElevatedSeconds: int64(m(50).Sub(approved.Start) / time.Second), Elevated: "40m"}
	if got, _ := json.Marshal(s.Totals); string(got) != string(alMust(json.Marshal(wantTotals))) {
		t.Errorf("totals %s, want %+v", got, wantTotals)
	}
	if s.End.How != EndRevoked || s.End.By != "op" || s.End.Reason != "incident over" || !s.End.At.Equal(m(50)) {
		t.Errorf("end %+v", s.End)
	}

	// A break-glass session nobody ended: it expired.
	s, err = SessionStory(inputs, "sess-glass", now)
	if err != nil {
		t.Fatal(err)
	}
	if !s.Activation.BreakGlass || s.End.How != EndExpired || !s.End.At.Equal(m(75).Truncate(time.Second)) || s.Totals.Elevated != "15m" || s.Request != nil {
		t.Errorf("break-glass story %+v %+v", s.Activation, s.End)
	}
	// Still running: counted to now.
	s, err = SessionStory(inputs, "sess-glass", m(65))
	if err != nil {
		t.Fatal(err)
	}
	if s.End.How != EndActive || s.Totals.Elevated != "5m" {
		t.Errorf("running story %+v %+v", s.End, s.Totals)
	}

	if _, err := SessionStory(inputs, "sess-nope", now); !errors.Is(err, ErrSessionNotInLog) {
		t.Errorf("unknown session: %v", err)
	}
}

func alMust[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func TestReport(t *testing.T) {
	now := time.Date(2026, 3, 31, 22, 0, 0, 0, time.UTC) // a Tuesday, after hours
	day := func(d int, hhmm string) time.Time {
		t, err := time.Parse("2006-01-02 15:04", fmt.Sprintf("2026-03-%02d %s", d, hhmm))
		if err != nil {
			panic(err)
		}
		return t
	}
	l := newAlStoryLog(t)
	n := 0
	session := func(user, role string, start time.Time, d time.Duration, bg bool) *Record {
		n++
		rec := &Record{ID: fmt.Sprintf("s%02d", n), User: user, Role: role, Justification: "because", Start: start, Expires: start.Add(d), BreakGlass: bg}
		l.activate(start, rec)
		return rec
	}
	// Before the window (30 days before now is Sunday March 1, 22:00): an old session
	// of alice that runs into the window for 1h.
	old := session("alice", "db-admin", day(1, "21:00"), 2*time.Hour, false)
	l.access(day(1, "21:30"), old, "GET", "/old", 200, 1, nil) // outside the window
	l.access(day(1, "22:30"), old, "GET", "/in", 200, 1, nil)  // inside
	// alice: 2 sessions in hours, one ended early, one extended.
	s1 := session("alice", "db-admin", day(2, "10:00"), time.Hour, false)
	l.access(day(2, "10:05"), s1, "GET", "/", 200, 1, nil)
	l.end(day(2, "10:20"), EventDeactivated, s1, "alice", "done")
	s2 := session("alice", "db-admin", day(3, "10:00"), 30*time.Minute, false)
	from := s2.Expires
	s2.Expires = s2.Expires.Add(30 * time.Minute)
	l.at(day(3, "10:25")).Event(EventExtended, append(recordFields(s2), zap.String("extension_justification", "more"),
		zap.String("from", from.Format(time.RFC3339)), zap.String("extension_client_ip", "x"))...)
	l.access(day(3, "10:50"), s2, "GET", "/late", 200, 1, nil)
	// bob: noisy, 11 short sessions on weekdays, and a 12th at night.
	for _, d := range []int{9, 10, 11, 12, 13, 16, 17, 18, 19, 20, 23} {
		session("bob", "db-admin", day(d, "09:00"), 10*time.Minute, false)
	}
	session("bob", "db-admin", day(24, "23:30"), 10*time.Minute, false) // outside hours
	// erin: break-glass at night, still running.
	glass := session("erin", "db-admin", now.Add(-30*time.Minute), time.Hour, true)
	l.access(now.Add(-10*time.Minute), glass, "GET", "/fix", 200, 1, nil)
	// dave: a burst of 5 wrong codes in 10 minutes, then a lockout; 4 spread out.
	for i := range 5 {
		l.fail(day(25, "08:00").Add(time.Duration(i)*2*time.Minute), "dave", "db-admin", "totp_invalid")
	}
	// The sixth code locks dave out, as checkCode writes it: the lockout's own event,
	// then the refusal; a retry while locked is refused again. One alert.
	l.at(day(25, "08:11")).Event(EventLockedOut, zap.String("user", "dave"), zap.String("until", day(25, "08:26").Format(time.RFC3339)))
	l.fail(day(25, "08:11"), "dave", "db-admin", "locked_out")
	l.fail(day(25, "08:12"), "dave", "db-admin", "locked_out")
	for i := range 4 {
		l.fail(day(26, "08:00").Add(time.Duration(i)*time.Hour), "dave", "db-admin", "totp_replayed")
	}
	l.fail(day(27, "08:00"), "frank", "db-admin", "not_eligible")

	roles := map[string]*policy.Role{
		"db-admin": {
			Name: "db-admin",
			Eligibility: []policy.Eligibility{
				{Subjects: []string{"alice", "bob", "erin", "dave", "group:dba", "carol"}},
				{Subjects: []string{"grace", "group:oncall"}, Until: now.Add(5 * 24 * time.Hour)},
				{Subjects: []string{"heidi"}, From: now.Add(-2 * 24 * time.Hour)}, // too new to be unused
			},
			// Mon–Fri 08:00–18:00 UTC.
			AllowedHours: []policy.HoursWindow{{Days: [7]bool{false, true, true, true, true, true, false}, From: 8 * 60, To: 18 * 60}},
		},
	}
	inputs := []Input{Data("jit-audit.log", l.buf.Bytes())}

	rep, err := Summarize(inputs, 30*24*time.Hour, now, ReportOptions{Roles: roles})
	if err != nil {
		t.Fatal(err)
	}
	type rowSum struct {
		user                      string
		activations, bg, requests int64
		elevated                  string
		lastUse                   time.Time
	}
	var got []rowSum
	for _, r := range rep.Rows {
		got = append(got, rowSum{r.User, r.Activations, r.BreakGlass, r.Requests, r.Elevated, r.LastUse})
		if r.Role != "db-admin" {
			t.Errorf("row of role %s", r.Role)
		}
	}
	want := []rowSum{
		// old session: 1h in the window; s1 20m; s2 1h.
		{"alice", 2, 0, 3, "2h20m", day(3, "10:50")},
		{"bob", 12, 0, 0, "2h", day(24, "23:30")},
		{"erin", 1, 1, 1, "30m", now.Add(-10 * time.Minute)},
	}
	if !slices.Equal(got, want) {
		t.Errorf("rows\n got %+v\nwant %+v", got, want)
	}

	var alerts []string
	for _, a := range rep.Alerts {
		alerts = append(alerts, a.Kind+" "+a.User+" "+a.Role)
	}
	wantAlerts := []string{
		"outside_hours bob db-admin",
		"totp_failures dave ",
		"locked_out dave ",
		"outside_hours erin db-admin",
		"break_glass erin db-admin",
		"expiring_eligibility  db-admin", // group:oncall
		"expiring_eligibility grace db-admin",
		"noisy bob db-admin",
		"unused_eligibility carol db-admin",
		"unused_eligibility dave db-admin",
		"unused_eligibility grace db-admin",
	}
	slices.Sort(alerts)
	slices.Sort(wantAlerts)
	if !slices.Equal(alerts, wantAlerts) {
		t.Errorf("alerts\n got %q\nwant %q", alerts, wantAlerts)
	}
	for _, a := range rep.Alerts {
		switch a.Kind {
		case AlertCodeFailures:
			if a.Count != 5 || !a.At.Equal(day(25, "08:00")) {
				t.Errorf("burst %+v", a)
			}
		case AlertLockedOut:
			if !strings.Contains(a.Message, "until 2026-03-25 08:26 UTC") {
				t.Errorf("lockout %+v", a)
			}
		case AlertNoisy:
			if a.Count != 12 || !strings.Contains(a.Message, "more than 10") {
				t.Errorf("noisy %+v", a)
			}
		case AlertOutsideHours:
			if a.User == "erin" && !strings.Contains(a.Message, "(break-glass)") {
				t.Errorf("outside hours %+v", a)
			}
		}
	}
	if rep.Events == 0 || rep.Skipped != 0 || !rep.ConfigAware {
		t.Errorf("report %+v", rep)
	}

	// Without the config: those alerts are skipped, and the report says so.
	rep, err = Summarize(inputs, 30*24*time.Hour, now, ReportOptions{Noisy: 12})
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, a := range rep.Alerts {
		kinds = append(kinds, a.Kind)
	}
	if !slices.Equal(kinds, []string{AlertCodeFailures, AlertLockedOut, AlertBreakGlass}) {
		t.Errorf("alerts without config: %q", kinds)
	}
	if rep.ConfigAware || len(rep.Notes) == 0 || !strings.Contains(rep.Notes[0], "no config given") {
		t.Errorf("notes %q", rep.Notes)
	}

	// A shorter window clips.
	rep, err = Summarize(inputs, 40*time.Minute, now, ReportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Rows) != 1 || rep.Rows[0].User != "erin" || rep.Rows[0].Elevated != "30m" || rep.Rows[0].Activations != 1 {
		t.Errorf("short window rows %+v", rep.Rows)
	}
}

func TestCodeFailureBursts(t *testing.T) {
	t0 := alT0
	at := func(mins ...int) []codeFailure {
		var fs []codeFailure
		for _, m := range mins {
			fs = append(fs, codeFailure{at: t0.Add(time.Duration(m) * time.Minute)})
		}
		return fs
	}
	tests := []struct {
		name   string
		fs     []codeFailure
		counts []int64
	}{
		{"four", at(0, 1, 2, 3), nil},
		{"five in 15m", at(0, 1, 2, 3, 15), []int64{5}},
		{"five in 16m", at(0, 1, 2, 3, 16), nil},
		{"a long burst is one", at(0, 1, 2, 3, 4, 5, 6, 7), []int64{8}},
		{"two bursts", at(0, 1, 2, 3, 4, 100, 101, 102, 103, 104), []int64{5, 5}},
		{"unsorted", at(4, 3, 2, 1, 0), []int64{5}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var counts []int64
			for _, b := range codeFailureBursts(tt.fs) {
				counts = append(counts, b.count)
			}
			if !slices.Equal(counts, tt.counts) {
				t.Errorf("bursts %v, want %v", counts, tt.counts)
			}
		})
	}
}
