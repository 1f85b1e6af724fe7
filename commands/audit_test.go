package commands

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/caddyserver/certmagic"
	"github.com/spf13/cobra"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/caddy-jit/caddy-jit/audit"
	"github.com/caddy-jit/caddy-jit/caddymodule"
)

// auditTestNow is "now" for the audit command tests: a Tuesday evening.
var auditTestNow = time.Date(2026, 3, 31, 22, 0, 0, 0, time.UTC)

// auditTestLog writes audit events through a real Auditor and Chain, encoded as
// Caddy's JSON log encoder does (level, ts as float seconds, logger, msg).
type auditTestLog struct {
	buf   bytes.Buffer
	at    time.Time
	a     *audit.Writer
	chain *audit.Chain
}

func newAuditTestLog(chain *audit.Chain) *auditTestLog {
	l := &auditTestLog{chain: chain}
	core := zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), zapcore.Lock(zapcore.AddSync(&l.buf)), zap.InfoLevel)
	log := zap.New(core).Named(string(caddymodule.Handler{}.CaddyModule().ID) + ".audit")
	l.a = audit.NewWriter(log, chain, func() time.Time { return l.at })
	return l
}

func (l *auditTestLog) event(at time.Time, event string, fields ...zap.Field) {
	l.at = at
	l.a.Event(event, fields...)
}

// sessionFields are the fields of every event about a session, as the writer sends
// them.
func auditSessionFields(id, user, role, justification string, start, expires time.Time, breakGlass bool) []zap.Field {
	f := []zap.Field{zap.String("user", user), zap.String("role", role), zap.String("session_id", id),
		zap.String("justification", justification), zap.String("expires", expires.UTC().Format(time.RFC3339)), zap.String("client_ip", "192.0.2.1")}
	if breakGlass {
		f = append(f, zap.Bool("break_glass", true))
	}
	return f
}

func (l *auditTestLog) activate(id, user, justification string, start time.Time, d time.Duration, breakGlass bool) {
	l.event(start, audit.EventActivationSucceeded, append(auditSessionFields(id, user, "db-admin", justification, start, start.Add(d), breakGlass),
		zap.String("duration", d.String()), zap.String("start", start.Format(time.RFC3339)))...)
	if breakGlass {
		l.event(start, audit.EventBreakGlass, auditSessionFields(id, user, "db-admin", justification, start, start.Add(d), true)...)
	}
}

func (l *auditTestLog) access(at time.Time, id, user, uri string, status int, n int64) {
	l.at = at
	l.a.Access(audit.Holder{User: user, Role: "db-admin", SessionID: id}, "192.0.2.1", "GET", uri, status, n, time.Millisecond,
		&audit.BodyDigest{Size: 3, SHA256: strings.Repeat("0f", 32), Complete: true})
}

func (l *auditTestLog) write(t *testing.T, name string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, l.buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func auditWriteFile(t *testing.T, name string, data []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// runAuditCmd parses args into the command's flags and runs its function, returning
// the exit code, stdout and error.
func runAuditCmd(t *testing.T, build func() *cobra.Command, run func(io.Writer, io.Writer, caddycmd.Flags) (int, error), args ...string) (int, string, error) {
	t.Helper()
	cmd := build()
	if err := cmd.ParseFlags(args); err != nil {
		t.Fatalf("flags %q: %v", args, err)
	}
	var out, errOut bytes.Buffer
	code, err := run(&out, &errOut, caddycmd.Flags{FlagSet: cmd.Flags()})
	return code, out.String(), err
}

func setAuditNow(t *testing.T) {
	saved := now
	t.Cleanup(func() { now = saved })
	now = func() time.Time { return auditTestNow }
}

// sampleAuditLog is one session, its requests and its end: six lines.
func sampleAuditLog() *auditTestLog {
	l := newAuditTestLog(audit.NewChain("inst-cli"))
	t0 := auditTestNow.Add(-36 * time.Hour) // Monday 10:00
	l.activate("sess-1", "alice", "restart \"db\"\x1b[31m red", t0, time.Hour, false)
	l.access(t0.Add(time.Minute), "sess-1", "alice", "/status", 200, 10)
	l.access(t0.Add(2*time.Minute), "sess-1", "alice", "/restart\x1b]0;pwned\x07", 500, 20)
	l.access(t0.Add(3*time.Minute), "sess-1", "alice", "/status", 404, 30)
	l.event(t0.Add(4*time.Minute), audit.EventUnlocked, zap.String("user", "bob"), zap.String("by", "op"), zap.String("reason", "typo"))
	l.event(t0.Add(30*time.Minute), audit.EventDeactivated, append(auditSessionFields("sess-1", "alice", "db-admin", "x", t0, t0.Add(time.Hour), false),
		zap.String("by", "alice"), zap.String("reason", "done"))...)
	return l
}

func TestAuditVerifyCommand(t *testing.T) {
	l := sampleAuditLog()
	lines := strings.SplitAfter(l.buf.String(), "\n")
	intact := l.write(t, "jit-audit.log")
	edited := auditWriteFile(t, "edited.log", []byte(strings.Replace(l.buf.String(), `"status":500`, `"status":200`, 1)))
	older := auditWriteFile(t, "jit-audit-2026-03-30T10-00-00.000.log", []byte(strings.Join(lines[:3], "")))
	newer := auditWriteFile(t, "jit-audit.log", []byte(strings.Join(lines[3:], "")))

	tests := []struct {
		name    string
		args    []string
		code    int
		out     []string // parts of stdout
		errPart string
	}{
		{name: "intact", args: []string{intact}, code: 0,
			out: []string{"Read 1 file, 6 lines: 6 events of 1 instance.", "inst-cli", "1…6", "The chain is intact.", "Not checked for events missing at the end"}},
		{name: "edited", args: []string{edited}, code: 1,
			out: []string{"The chain is BROKEN (1 break). The first:\n  " + edited + ":4: prev does not match the hash of line 3 (seq 3): line 3 was edited",
				"\n  " + edited + ":3: the line to look at first\n"},
			errPart: "the audit chain is broken: " + edited + ":4: prev does not match"},
		{name: "rotated, in order", args: []string{older, newer}, code: 0, out: []string{"Read 2 files, 6 lines", "The chain is intact."}},
		{name: "rotated, out of order", args: []string{newer, older}, code: 1,
			out: []string{older + ":1: seq 1 of instance inst-cli follows seq 6 (" + newer + ":3)", "are the files in order?"}},
		{name: "no file", args: nil, code: 2, errPart: "no audit log file"},
		{name: "a file twice", args: []string{intact, filepath.Dir(intact) + "/./" + filepath.Base(intact)}, code: 2, errPart: "is given twice"},
		{name: "missing file", args: []string{filepath.Join(t.TempDir(), "nope.log")}, code: 2, errPart: "no such file"},
		{name: "adapter without config", args: []string{intact, "--adapter", "caddyfile"}, code: 2, errPart: "--adapter needs --config"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, err := runAuditCmd(t, auditVerifyCommand, cmdAuditVerify, tt.args...)
			if code != tt.code {
				t.Fatalf("exit %d, want %d (%v)\n%s", code, tt.code, err, out)
			}
			if (err != nil) != (tt.code != 0) {
				t.Errorf("exit %d with error %v: Caddy exits 0 on a code of 1 without an error", code, err)
			}
			if tt.errPart != "" && (err == nil || !strings.Contains(err.Error(), tt.errPart)) {
				t.Errorf("error %v, want one with %q", err, tt.errPart)
			}
			for _, part := range tt.out {
				if !strings.Contains(out, part) {
					t.Errorf("output lacks %q:\n%s", part, out)
				}
			}
		})
	}

	// --json
	code, out, _ := runAuditCmd(t, auditVerifyCommand, cmdAuditVerify, edited, "--json")
	var res audit.ChainVerification
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("--json: %v\n%s", err, out)
	}
	if code != 1 || res.Intact || res.BreakCount != 1 || res.Breaks[0].Line != 4 || res.Breaks[0].File != edited || res.Events != 6 {
		t.Errorf("--json: exit %d, %+v", code, res)
	}
}

func TestAuditVerifyCommandComparesSavedHeads(t *testing.T) {
	dir := t.TempDir()
	caddyfile := auditWriteFile(t, "Caddyfile", []byte(`{
	storage file_system "`+dir+`"
}
`))
	ctx := context.Background()
	st := &certmagic.FileStorage{Path: dir}
	chain, err := audit.LoadChain(ctx, st, "inst-stored")
	if err != nil {
		t.Fatal(err)
	}
	l := newAuditTestLog(chain)
	for i := range 5 {
		l.event(auditTestNow.Add(time.Duration(i)*time.Second), audit.EventKeysRotated, zap.String("kid", "k"), zap.String("by", "op"))
	}
	if err := chain.Save(ctx, st); err != nil {
		t.Fatal(err)
	}
	full := l.write(t, "jit-audit.log")
	lines := strings.SplitAfter(l.buf.String(), "\n")
	cut := auditWriteFile(t, "cut.log", []byte(strings.Join(lines[:3], "")))

	code, out, err := runAuditCmd(t, auditVerifyCommand, cmdAuditVerify, full, "--config", caddyfile)
	if code != 0 || err != nil || !strings.Contains(out, "Compared with the 1 chain head saved in FileStorage:"+dir) || !strings.Contains(out, "The chain is intact.") {
		t.Fatalf("full log: exit %d, %v\n%s", code, err, out)
	}
	code, out, err = runAuditCmd(t, auditVerifyCommand, cmdAuditVerify, cut, "--config", caddyfile, "--adapter", "caddyfile")
	want := "The chain is intact, but events are missing (1 cut):\n  instance inst-stored: seq 4–5 missing (saved head: the head saved in storage is seq 5, the files end at seq 3 (" + cut + ":3): the instance did not stop cleanly"
	if code != 3 || err == nil || !strings.Contains(out, want) {
		t.Fatalf("cut log: exit %d, %v\n%s\nwant %q", code, err, out, want)
	}
	// Without --config the cut is not seen.
	if code, out, _ := runAuditCmd(t, auditVerifyCommand, cmdAuditVerify, cut); code != 0 {
		t.Errorf("cut log without config: exit %d\n%s", code, out)
	}
	// Another storage, with no head: said, not a break.
	empty := auditWriteFile(t, "Caddyfile", []byte("{\n\tstorage file_system \""+t.TempDir()+"\"\n}\n"))
	if code, out, _ := runAuditCmd(t, auditVerifyCommand, cmdAuditVerify, cut, "--config", empty); code != 0 || !strings.Contains(out, "holds no saved chain head") {
		t.Errorf("storage without heads: exit %d\n%s", code, out)
	}
	bad := auditWriteFile(t, "Caddyfile", []byte("{\n\tjit {\n\t\tnonsense\n\t}\n}\n"))
	if code, _, err := runAuditCmd(t, auditVerifyCommand, cmdAuditVerify, full, "--config", bad); code != 2 || err == nil {
		t.Errorf("bad config: exit %d, %v", code, err)
	}
}

func TestAuditSessionCommand(t *testing.T) {
	setAuditNow(t)
	log := sampleAuditLog().write(t, "jit-audit.log")

	code, out, err := runAuditCmd(t, auditSessionCommand, cmdAuditSession, "sess-1", log)
	if code != 0 || err != nil {
		t.Fatalf("exit %d, %v\n%s", code, err, out)
	}
	for _, part := range []string{
		"Session sess-1: alice as db-admin",
		`why:     "restart \"db\"\x1b[31m red"`,
		"from 2026-03-30 10:00:00 UTC to 2026-03-30 11:00:00 UTC (1h0m0s)",
		"Requests (3):",
		"/restart?]0;pwned?",
		strings.Repeat("0f", 32) + " (3 bytes)",
		`Ended      2026-03-30 10:30:00 UTC: deactivated by alice: "done"`,
		"Totals     3 requests, 60 bytes (2xx 1, 4xx 1, 5xx 1), elevated 30m",
	} {
		if !strings.Contains(out, part) {
			t.Errorf("output lacks %q:\n%s", part, out)
		}
	}
	if strings.ContainsAny(out, "\x1b\x07") {
		t.Errorf("the story passes terminal control characters through:\n%q", out)
	}

	code, out, _ = runAuditCmd(t, auditSessionCommand, cmdAuditSession, "sess-1", log, "--json")
	var story audit.Story
	if err := json.Unmarshal([]byte(out), &story); err != nil {
		t.Fatalf("--json: %v\n%s", err, out)
	}
	if code != 0 || story.Totals.Requests != 3 || story.End.How != audit.EndDeactivated || story.Activation == nil || story.Activation.Justification != "restart \"db\"\x1b[31m red" {
		t.Errorf("--json: exit %d, %+v", code, story)
	}

	if code, _, err := runAuditCmd(t, auditSessionCommand, cmdAuditSession, "sess-nope", log); code != 1 || err == nil || !strings.Contains(err.Error(), `no event of session "sess-nope"`) {
		t.Errorf("unknown session: exit %d, %v", code, err)
	}
	if code, _, err := runAuditCmd(t, auditSessionCommand, cmdAuditSession, "sess-1"); code != 2 || err == nil {
		t.Errorf("no file: exit %d, %v", code, err)
	}
	if code, _, err := runAuditCmd(t, auditSessionCommand, cmdAuditSession, "sess-1", filepath.Join(t.TempDir(), "nope")); code != 2 || err == nil {
		t.Errorf("missing file: exit %d, %v", code, err)
	}
}

// reportCaddyfile has one role with allowed hours, break-glass, and an eligibility
// that ends within 14 days of auditTestNow.
func reportCaddyfile(t *testing.T) string {
	return auditWriteFile(t, "Caddyfile", []byte(`{
	storage file_system "`+t.TempDir()+`"
	jit {
		role db-admin {
			max_duration 1h
			break_glass
			eligible alice bob carol dave group:dba
			eligible grace until 2026-04-05
			allowed_hours mon-fri 08:00-18:00
		}
	}
}
`))
}

func TestReportCommand(t *testing.T) {
	setAuditNow(t)
	caddyfile := reportCaddyfile(t)
	l := newAuditTestLog(audit.NewChain("inst-rep"))
	mon := time.Date(2026, 3, 30, 10, 0, 0, 0, time.UTC)
	l.activate("s-a", "alice", "routine work", mon, time.Hour, false)
	l.access(mon.Add(time.Minute), "s-a", "alice", "/", 200, 1)
	l.event(mon.Add(30*time.Minute), audit.EventDeactivated, append(auditSessionFields("s-a", "alice", "db-admin", "x", mon, mon.Add(time.Hour), false),
		zap.String("by", "alice"), zap.String("reason", "done"))...)
	clean := l.write(t, "clean.log")
	bobAt := auditTestNow.Add(-time.Hour) // Tuesday 21:00
	l.activate("s-b", "bob", "outage in the night", bobAt, time.Hour, true)
	l.access(bobAt.Add(time.Minute), "s-b", "bob", "/fix", 200, 1)
	for i := range 5 {
		l.event(mon.Add(-48*time.Hour+time.Duration(i)*time.Minute), audit.EventActivationFailed, zap.String("user", "dave"), zap.String("role", "db-admin"),
			zap.String("reason", "totp_invalid"), zap.String("justification", "j"), zap.String("ticket", ""), zap.String("client_ip", "192.0.2.2"))
	}
	full := l.write(t, "jit-audit.log")

	tests := []struct {
		name    string
		args    []string
		code    int
		out     []string
		notOut  []string
		errPart string
	}{
		{name: "clean, no config", args: []string{clean}, code: 0,
			out: []string{"(30d)", "db-admin  alice  1            0            30m       1         2026-03-30 10:01 UTC", "No alerts.", "Note: no config given (--config)"}},
		{name: "alerts, with config", args: []string{full, "--config", caddyfile}, code: 1, errPart: "7 alerts to review",
			out: []string{"7 alerts:", "totp_failures", "5 wrong or replayed codes for dave", "outside_hours", "bob activated db-admin (break-glass) at 2026-03-31 21:00 UTC, outside its allowed hours",
				"break_glass", "unused_eligibility", "carol is eligible for db-admin but has not activated it in 30 days", "grace is eligible",
				"dave is eligible for db-admin but has not activated it in 30 days",
				"expiring_eligibility", "grace's eligibility for db-admin ends at 2026-04-06 00:00 UTC",
				"db-admin  bob    1            1            1h"},
			notOut: []string{"no config given", "alice is eligible", "bob is eligible"}},
		{name: "alerts, no config", args: []string{full}, code: 1, errPart: "2 alerts to review",
			out: []string{"2 alerts:", "totp_failures", "break_glass"}, notOut: []string{"outside_hours", "unused_eligibility"}},
		{name: "noisy", args: []string{clean, "--noisy", "1"}, code: 0, out: []string{"No alerts."}},
		{name: "short window", args: []string{full, "--since", "12h"}, code: 1, out: []string{"(12h)", "db-admin  bob"}, notOut: []string{"alice"}},
		{name: "bad since", args: []string{full, "--since", "soon"}, code: 2, errPart: "--since"},
		{name: "negative since", args: []string{full, "--since", "-1d"}, code: 2, errPart: "--since"},
		{name: "bad noisy", args: []string{full, "--noisy", "0"}, code: 2, errPart: "--noisy"},
		{name: "no file", args: []string{"--since", "1d"}, code: 2, errPart: "no audit log file"},
		{name: "config without jit", args: []string{full, "--config", auditWriteFile(t, "Caddyfile", []byte("{\n\tadmin off\n}\n"))}, code: 2, errPart: "has no jit app"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, err := runAuditCmd(t, reportCommand, cmdReport, tt.args...)
			if code != tt.code {
				t.Fatalf("exit %d, want %d (%v)\n%s", code, tt.code, err, out)
			}
			if (err != nil) != (tt.code != 0) {
				t.Errorf("exit %d with error %v", code, err)
			}
			if tt.errPart != "" && (err == nil || !strings.Contains(err.Error(), tt.errPart)) {
				t.Errorf("error %v, want one with %q", err, tt.errPart)
			}
			for _, part := range tt.out {
				if !strings.Contains(out, part) {
					t.Errorf("output lacks %q:\n%s", part, out)
				}
			}
			for _, part := range tt.notOut {
				if strings.Contains(out, part) {
					t.Errorf("output has %q:\n%s", part, out)
				}
			}
		})
	}

	code, out, _ := runAuditCmd(t, reportCommand, cmdReport, full, "--config", caddyfile, "--json")
	var rep audit.Report
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("--json: %v\n%s", err, out)
	}
	kinds := map[string]int{}
	for _, a := range rep.Alerts {
		kinds[a.Kind]++
	}
	want := map[string]int{audit.AlertCodeFailures: 1, audit.AlertOutsideHours: 1, audit.AlertBreakGlass: 1,
		audit.AlertUnusedEligibility: 3, audit.AlertExpiringEligibility: 1}
	if code != 1 || !reflect.DeepEqual(kinds, want) || len(rep.Rows) != 2 || !rep.ConfigAware {
		t.Errorf("--json: exit %d, alerts %v, want %v; %+v", code, kinds, want, rep)
	}
}

// TestAuditCommandsThroughCobra runs the commands as Caddy builds them: registered
// under `caddy jit`, with Caddy's exit codes.
func TestAuditCommandsThroughCobra(t *testing.T) {
	setAuditNow(t)
	log := sampleAuditLog().write(t, "jit-audit.log")
	edited := auditWriteFile(t, "edited.log", bytes.Replace(auditMust(os.ReadFile(log)), []byte(`"uri":"/status"`), []byte(`"uri":"/statuz"`), 1))

	exitCode := func(err error) int {
		if err == nil {
			return 0
		}
		// caddycmd's exitError carries codes above 1; any other error exits 1.
		if v := reflect.ValueOf(err); v.Kind() == reflect.Pointer && v.Elem().Kind() == reflect.Struct {
			if f := v.Elem().FieldByName("ExitCode"); f.IsValid() {
				return int(f.Int())
			}
		}
		return 1
	}
	tests := []struct {
		args []string
		code int
		out  string
	}{
		{[]string{"audit", "verify", log}, 0, "The chain is intact."},
		{[]string{"audit", "verify", edited}, 1, "BROKEN"},
		{[]string{"audit", "verify"}, 2, ""},
		{[]string{"audit", "verify", log, "--no-such-flag"}, 2, ""},
		{[]string{"audit", "session", "sess-1", log}, 0, "Session sess-1: alice as db-admin"},
		{[]string{"audit", "session", "sess-x", log}, 1, ""},
		{[]string{"report", log, "--since", "7d"}, 0, "No alerts."},
		{[]string{"report", log, "--noisy", "x"}, 2, ""},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args[:2], " "), func(t *testing.T) {
			out, _, err := runJitStreams(t, tt.args...)
			if got := exitCode(err); got != tt.code {
				t.Fatalf("%q: exit %d, want %d (%v)\n%s", tt.args, got, tt.code, err, out)
			}
			if !strings.Contains(out, tt.out) {
				t.Errorf("%q: output lacks %q:\n%s", tt.args, tt.out, out)
			}
		})
	}
}

func auditMust[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
