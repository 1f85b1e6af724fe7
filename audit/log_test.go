package audit

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/klauspost/compress/zstd"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/caddy-jit/caddy-jit/policy"
)

// The audit log tests write their logs through a real Writer and Chain into zap's
// JSON encoder configured as Caddy's (level, ts as float seconds, logger, msg, and
// here caller too), so that the reader is tested against what the writer produces.

// alClock is a settable clock that moves a second at each reading.
type alClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *alClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := c.t
	c.t = c.t.Add(time.Second)
	return t
}

func (c *alClock) set(t time.Time) {
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
}

// alWriter can be pointed at another file, as log rotation does.
type alWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (w *alWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.w.Write(p)
}

func (w *alWriter) point(to io.Writer) {
	w.mu.Lock()
	w.w = to
	w.mu.Unlock()
}

// alLogger is the audit logger as Caddy builds it, writing to w.
func alLogger(w io.Writer) *zap.Logger {
	core := zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), zapcore.Lock(zapcore.AddSync(w)), zap.InfoLevel)
	return zap.New(core, zap.AddCaller()).Named("http.handlers.jit.audit")
}

// alTricky are strings an encoder or a hash could get wrong.
var alTricky = []string{
	`say "hi" \ back\slash`,
	"line one\nline two\r\ttab",
	"sep\u2028para\u2029end",
	"bad \xff\xfe bytes \xe2\x82",
	"Ünïcödé 日本語 🚀",
	"nul\x00ctl\x1f del\x7f",
	"</script><b>&amp;",
	"",
}

var alT0 = time.Date(2026, 3, 2, 9, 0, 0, 123456789, time.UTC) // a Monday

// alWriteTwelve writes twelve events of one session of user through a, one per line:
// line 5 is an access with "status":200, line 11 the deactivation.
func alWriteTwelve(a *Writer, user, id string) {
	rec := &Record{ID: id, User: user, Role: "db-admin", Justification: strings.Join(alTricky, "|"), Ticket: alTricky[4],
		ClientIP: "192.0.2.1", Start: alT0, Expires: alT0.Add(time.Hour), RequestID: "req-" + id, Approvers: alTricky}
	a.Event(EventActivationSucceeded, append(recordFields(rec),
		zap.String("duration", "1h"), zap.String("start", rec.Start.Format(time.RFC3339)))...)
	holder := Holder{User: user, Role: "db-admin", SessionID: id}
	a.Access(holder, "192.0.2.1", "GET", "/q?x="+alTricky[0], 200, 1234, 5*time.Millisecond, nil)
	a.Access(holder, "192.0.2.1", "POST", "/q", 201, 10, time.Millisecond, &BodyDigest{Size: 99, SHA256: strings.Repeat("ab", 32), Complete: false, Key: "k1"})
	a.Event(EventActivationFailed, zap.String("user", alTricky[3]), zap.String("role", "db-admin"), zap.String("reason", "totp_invalid"),
		zap.String("justification", alTricky[1]), zap.String("ticket", alTricky[2]), zap.String("client_ip", "192.0.2.9"))
	a.Access(holder, "192.0.2.1", "GET", "/five", 200, 5, time.Millisecond, nil)
	a.Event(EventExtended, append(recordFields(rec), zap.String("extension_justification", alTricky[5]),
		zap.String("from", rec.Expires.Format(time.RFC3339)), zap.String("extension_client_ip", "192.0.2.1"))...)
	a.Access(holder, "192.0.2.1", "DELETE", "/"+alTricky[6], 204, 0, time.Millisecond, nil)
	a.Event(EventEnrolled, zap.String("user", user), zap.String("by", "op"), zap.Bool("replaced", true))
	a.Event(EventUnlocked, zap.String("user", user), zap.String("by", "op"), zap.String("reason", alTricky[7]))
	a.Event(EventAccessDenied, zap.String("reason", "no_session"), zap.String("client_ip", "192.0.2.3"), zap.String("method", "GET"),
		zap.String("uri", "/x"), zap.String("user", user), zap.Strings("roles", []string{"db-admin", alTricky[4]}), zap.Bool("eligible", false))
	a.Event(EventDeactivated, append(recordFields(rec), zap.String("by", user), zap.String("reason", "done"))...)
	a.Event(EventKeysRotated, zap.String("kid", "k-2"), zap.String("by", "op"))
}

// alLines splits a log into its lines, newlines kept.
func alLines(s string) []string {
	lines := strings.SplitAfter(s, "\n")
	if lines[len(lines)-1] == "" {
		lines = lines[:len(lines)-1]
	}
	return lines
}

func alHash(t *testing.T, line string) string {
	t.Helper()
	l := ParseLine("x", 1, []byte(strings.TrimSuffix(line, "\n")))
	h, err := l.Hash()
	if err != nil {
		t.Fatalf("hashing %q: %v", line, err)
	}
	return h
}

func alVerify(t *testing.T, opts VerifyOptions, inputs ...Input) *ChainVerification {
	t.Helper()
	res, err := VerifyChain(inputs, opts)
	if err != nil {
		t.Fatal(err)
	}
	if res.Intact != (res.BreakCount == 0) || (res.FirstBreak() == nil) != res.Intact {
		t.Fatalf("inconsistent result: %+v", res)
	}
	return res
}

func TestAuditLineReadsWhatTheWriterWrote(t *testing.T) {
	var buf bytes.Buffer
	chain := NewChain("inst-a")
	clock := &alClock{t: alT0}
	alWriteTwelve(NewWriter(alLogger(&buf), chain, clock.now), "alice", "s1")
	lines := alLines(buf.String())
	if len(lines) != 12 {
		t.Fatalf("%d lines, want 12:\n%s", len(lines), buf.String())
	}
	for i, raw := range lines {
		l := ParseLine("log", i+1, []byte(strings.TrimSuffix(raw, "\n")))
		if l.Problem != "" {
			t.Fatalf("line %d: %s", i+1, l.Problem)
		}
		// The envelope is there, and not hashed.
		for _, key := range []string{"level", "ts", "logger", "msg", "caller"} {
			if !l.Has(key) {
				t.Errorf("line %d has no %s: %s", i+1, key, raw)
			}
		}
		canon, err := l.Canonical(nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, key := range EnvelopeKeys {
			if bytes.Contains(canon, fmt.Appendf(nil, "%d:%s", len(key), key)) {
				t.Errorf("line %d: canonical bytes hold the envelope's %s: %q", i+1, key, canon)
			}
		}
		// The contract's format, written again from its text, from the line's JSON.
		if spec := alSpecCanonical(t, raw); !bytes.Equal(canon, spec) {
			t.Errorf("line %d: canonical bytes\n%q\nthe contract's\n%q", i+1, canon, spec)
		}
		if seq, _ := l.Int(FieldSeq); seq != int64(i+1) {
			t.Errorf("line %d has seq %d", i+1, seq)
		}
	}
	// What the writer hashed is what the reader hashes: its head is the last line's hash.
	if got, want := alHash(t, lines[11]), chain.Head().Hash; got != want {
		t.Fatalf("the reader's hash of the last line %s differs from the writer's head %s", got, want)
	}
	// ChainHash and VerifyLine, line by line.
	prev := ""
	for i, raw := range lines {
		h, err := VerifyLine([]byte(raw), prev)
		if err != nil {
			t.Fatalf("VerifyLine, line %d: %v", i+1, err)
		}
		if ch, err := ChainHash([]byte(raw)); err != nil || ch != h {
			t.Fatalf("ChainHash, line %d: %s, %v; VerifyLine said %s", i+1, ch, err, h)
		}
		prev = h
	}
	if _, err := VerifyLine([]byte(lines[2]), alHash(t, lines[0])); err == nil {
		t.Error("VerifyLine accepts line 3 after line 1")
	}
	first := ParseLine("log", 1, []byte(lines[0]))
	if got, want := first.Text("justification"), validUTF8(strings.Join(alTricky, "|")); got != want {
		t.Errorf("justification read back as %q", got)
	}
	if got := first.Strings("approvers"); len(got) != len(alTricky) || got[2] != alTricky[2] || got[3] != validUTF8(alTricky[3]) {
		t.Errorf("approvers read back as %q", got)
	}
	if got := ParseLine("log", 3, []byte(lines[2])); got.Bool("body_complete") || !got.Has("body_complete") {
		t.Errorf("body_complete read back wrong: %v", got.Fields())
	}
	if n, ok := ParseLine("log", 5, []byte(lines[4])).Int("status"); !ok || n != 200 {
		t.Errorf("status read back as %d, %v", n, ok)
	}
}

// alSpecCanonical computes the canonical bytes of a line as the contract states them
// (docs, not code): every field but the envelope, sorted by key, each as
// len(key) ":" key TYPE len(value) ":" value.
func alSpecCanonical(t *testing.T, line string) []byte {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(line))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		t.Fatal(err)
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		if !slices.Contains([]string{"level", "ts", "logger", "msg", "caller", "stacktrace"}, k) {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	var b []byte
	for _, k := range keys {
		b = fmt.Appendf(b, "%d:%s", len(k), k)
		switch v := m[k].(type) {
		case string:
			b = fmt.Appendf(b, "s%d:%s", len(v), v)
		case json.Number:
			b = fmt.Appendf(b, "n%d:%s", len(v), v)
		case bool:
			b = fmt.Appendf(b, "b%d:%t", len(fmt.Sprint(v)), v)
		case []any:
			b = fmt.Appendf(b, "a%d:", len(v))
			for _, item := range v {
				b = fmt.Appendf(b, "%d:%s", len(item.(string)), item)
			}
		default:
			t.Fatalf("field %s: %T", k, v)
		}
	}
	return b
}

// alFixture is a verified twelve-line log of instance inst-a.
type alFixture struct {
	lines []string
	head  ChainHead
}

func newAlFixture(t *testing.T) alFixture {
	t.Helper()
	var buf bytes.Buffer
	chain := NewChain("inst-a")
	alWriteTwelve(NewWriter(alLogger(&buf), chain, (&alClock{t: alT0}).now), "alice", "s1")
	return alFixture{lines: alLines(buf.String()), head: chain.Head()}
}

func TestVerifyChainFindsTampering(t *testing.T) {
	fx := newAlFixture(t)
	h := func(n int) string { return alHash(t, fx.lines[n-1]) }
	replace := func(s, old, new string) string {
		if !strings.Contains(s, old) {
			t.Fatalf("%q is not in %s", old, s)
		}
		return strings.Replace(s, old, new, 1)
	}
	withHeads := VerifyOptions{Heads: []ChainHead{fx.head}, CheckHeads: true}
	tests := []struct {
		name   string
		edit   func(lines []string) []string
		opts   VerifyOptions
		line   int    // of the first break; 0 for an intact chain
		reason string // a part of its reason
		breaks int    // how many breaks in all, when it matters
		// suspect is the line the break points at as most likely changed, if any.
		suspect int
		// cut is the one cut expected, as ChainCut.String begins, for an intact chain.
		cut string
	}{
		{name: "intact", edit: func(l []string) []string { return l }},
		{name: "intact with heads", edit: func(l []string) []string { return l }, opts: withHeads},
		{name: "edited value", edit: func(l []string) []string {
			l[4] = replace(l[4], `"status":200`, `"status":299`)
			return l
		}, line: 6, reason: "prev does not match the hash of line 5 (seq 5): line 5 was edited, or a line was removed or inserted", breaks: 1, suspect: 5},
		{name: "edited string with escapes", edit: func(l []string) []string {
			l[0] = replace(l[0], `say \"hi\"`, `say \"ho\"`)
			return l
		}, line: 2, reason: "line 1 was edited", breaks: 1},
		{name: "duplicate key smuggled in", edit: func(l []string) []string {
			l[2] = replace(l[2], `{"level"`, `{"user":"mallory","level"`)
			return l
		}, line: 4, reason: "line 3 was edited", breaks: 1},
		{name: "edited envelope msg", edit: func(l []string) []string {
			l[6] = replace(l[6], `"msg":"access"`, `"msg":"deactivated"`)
			return l
		}, line: 7, reason: `its msg "deactivated" differs from its event "access"`, breaks: 1},
		{name: "edited last line: seen only against the saved head", edit: func(l []string) []string {
			l[11] = replace(l[11], `"kid":"k-2"`, `"kid":"k-3"`)
			return l
		}, opts: withHeads, line: 12, reason: "seq 12 of instance inst-a is not the event saved as its chain head", breaks: 1},
		{name: "float value", edit: func(l []string) []string {
			l[4] = replace(l[4], `"status":200`, `"status":200.0`)
			return l
		}, line: 5, reason: `its field "status" holds a number with a fraction`, breaks: 1},
		{name: "object value", edit: func(l []string) []string {
			l[4] = replace(l[4], `"status":200`, `"status":{"code":200}`)
			return l
		}, line: 5, reason: `its field "status" holds an object`, breaks: 1},
		{name: "deleted line", edit: func(l []string) []string {
			return slices.Delete(l, 4, 5)
		}, line: 5, reason: "seq 6 of instance inst-a follows seq 4 (line 4): 1 event missing", breaks: 1},
		{name: "deleted lines", edit: func(l []string) []string {
			return slices.Delete(l, 3, 6)
		}, line: 4, reason: "seq 7 of instance inst-a follows seq 3 (line 3): 3 events missing", breaks: 1},
		{name: "copied line inserted", edit: func(l []string) []string {
			return slices.Insert(l, 7, l[2])
		}, line: 8, reason: "seq 3 of instance inst-a repeats line 3: a copy of that line was inserted", breaks: 1},
		{name: "forged line with a wrong prev", edit: func(l []string) []string {
			forged := replace(replace(l[6], `"seq":7`, `"seq":8`), `"uri":"/`, `"uri":"/forged`)
			return slices.Insert(l, 7, forged)
		}, line: 8, reason: "prev does not match the hash of line 7 (seq 7)"},
		{name: "forged line with a computed prev", edit: func(l []string) []string {
			forged := replace(replace(l[6], `"seq":7`, `"seq":8`), `"prev":"`+h(6), `"prev":"`+h(7))
			forged = replace(forged, `"method":"DELETE"`, `"method":"GET"`)
			return slices.Insert(l, 7, forged)
		}, line: 9, reason: "seq 8 of instance inst-a was used before (the event after line 7): the chain forks here", breaks: 1},
		{name: "two lines swapped", edit: func(l []string) []string {
			l[4], l[5] = l[5], l[4]
			return l
		}, line: 5, reason: "seq 6 of instance inst-a follows seq 4 (line 4): 1 event missing; seq 5 appears later, at log:6: lines reordered"},
		{name: "a line moved down", edit: func(l []string) []string {
			moved := l[2]
			l = slices.Delete(l, 2, 3)
			return slices.Insert(l, 8, moved)
		}, line: 3, reason: "seq 4 of instance inst-a follows seq 2 (line 2): 1 event missing; seq 3 appears later, at log:9: lines reordered"},
		{name: "truncated, no heads: not seen", edit: func(l []string) []string { return l[:9] }},
		{name: "truncated, seen against the saved head", edit: func(l []string) []string { return l[:9] }, opts: withHeads,
			cut: "instance inst-a: seq 10–12 missing (saved head: the head saved in storage is seq 12, the files end at seq 9 (log:9)"},
		{name: "one line truncated", edit: func(l []string) []string { return l[:11] }, opts: withHeads,
			cut: "instance inst-a: seq 12 missing (saved head: "},
		{name: "half a line at the end", edit: func(l []string) []string {
			l[11] = l[11][:len(l[11])/2]
			return l
		}, line: 12, reason: "not a JSON object (a cut or edited line): the file ends in the middle of it", breaks: 1},
		{name: "cut line in the middle", edit: func(l []string) []string {
			l[3] = l[3][:40] + "\n"
			return l
		}, line: 4, reason: "not a JSON object (a cut or edited line)"},
		{name: "empty line", edit: func(l []string) []string { return slices.Insert(l, 2, "\n") }, line: 3, reason: "an empty line"},
		{name: "two objects on a line", edit: func(l []string) []string {
			l[1] = strings.TrimSuffix(l[1], "\n") + "{}\n"
			return l
		}, line: 2, reason: "more than one JSON value on the line"},
		{name: "foreign log line", edit: func(l []string) []string {
			return slices.Insert(l, 2, `{"level":"info","ts":1772442000.5,"logger":"http.log","msg":"hello"}`+"\n")
		}, line: 3, reason: "not a chained caddy-jit audit event: it has no event field", breaks: 1},
		{name: "seq as a string", edit: func(l []string) []string {
			l[1] = replace(l[1], `"seq":2`, `"seq":"2"`)
			return l
		}, line: 2, reason: "not a chained caddy-jit audit event: its seq is not an integer"},
		{name: "first event with a prev", edit: func(l []string) []string {
			l[0] = replace(l[0], `"prev":""`, `"prev":"`+strings.Repeat("0", 64)+`"`)
			return l
		}, line: 1, reason: "seq 1 of instance inst-a links to a previous event"},
		{name: "a log that starts later", edit: func(l []string) []string { return l[4:] }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lines := tt.edit(slices.Clone(fx.lines))
			res := alVerify(t, tt.opts, Data("log", []byte(strings.Join(lines, ""))))
			if tt.line == 0 {
				if !res.Intact {
					t.Fatalf("want intact, got %v", res.Breaks)
				}
				switch {
				case tt.cut == "" && res.Cut:
					t.Fatalf("want no cut, got %v", res.Cuts)
				case tt.cut != "" && (len(res.Cuts) != 1 || !res.Cut || !strings.HasPrefix(res.Cuts[0].String(), tt.cut)):
					t.Fatalf("cuts %v, want one beginning %q", res.Cuts, tt.cut)
				}
				return
			}
			b := res.FirstBreak()
			if b == nil {
				t.Fatalf("want a break at line %d, got an intact chain", tt.line)
			}
			if b.File != "log" || b.Line != tt.line || !strings.Contains(b.Reason, tt.reason) {
				t.Fatalf("first break\n  %s\nwant at log:%d with\n  %s", b, tt.line, tt.reason)
			}
			if tt.suspect != 0 && b.Suspect != fmt.Sprintf("log:%d", tt.suspect) {
				t.Errorf("suspect %q, want log:%d", b.Suspect, tt.suspect)
			}
			if tt.breaks > 0 && res.BreakCount != tt.breaks {
				t.Errorf("%d breaks, want %d: %v", res.BreakCount, tt.breaks, res.Breaks)
			}
		})
	}
}

func TestVerifyChainTotals(t *testing.T) {
	fx := newAlFixture(t)
	res := alVerify(t, VerifyOptions{Heads: []ChainHead{fx.head, {Instance: "elsewhere", Seq: 7, Hash: strings.Repeat("a", 64)}}, CheckHeads: true},
		Data("a.log", []byte(strings.Join(fx.lines[:5], ""))), Data("b.log", []byte(strings.Join(fx.lines[5:], ""))))
	if !res.Intact || res.Lines != 12 || res.Events != 12 || len(res.Instances) != 1 {
		t.Fatalf("%+v", res)
	}
	in := res.Instances[0]
	if in.Instance != "inst-a" || in.FirstSeq != 1 || in.LastSeq != 12 || in.Events != 12 || in.First != "a.log:1" || in.Last != "b.log:7" ||
		in.SavedHeadSeq == nil || *in.SavedHeadSeq != 12 {
		t.Errorf("%+v", in)
	}
	if len(res.HeadsNotInFiles) != 1 || res.HeadsNotInFiles[0].Instance != "elsewhere" {
		t.Errorf("heads not in the files: %v", res.HeadsNotInFiles)
	}
	if !slices.Equal(res.Files, []string{"a.log", "b.log"}) {
		t.Errorf("files %v", res.Files)
	}
}

func TestVerifyChainInterleavedInstances(t *testing.T) {
	var buf bytes.Buffer
	w := alLogger(&buf)
	ca, cb := NewChain("inst-a"), NewChain("inst-b")
	aa, ab := NewWriter(w, ca, (&alClock{t: alT0}).now), NewWriter(w, cb, (&alClock{t: alT0}).now)
	for i := range 10 {
		aa.Event(EventKeysRotated, zap.String("kid", fmt.Sprint("a", i)), zap.String("by", alTricky[i%len(alTricky)]))
		if i%3 != 0 {
			ab.Event(EventUnlocked, zap.String("user", alTricky[i%len(alTricky)]), zap.String("by", "op"), zap.String("reason", "r"))
		}
	}
	lines := alLines(buf.String())
	tests := []struct {
		name     string
		edit     func([]string) []string
		line     int
		instance string
	}{
		{name: "intact", edit: func(l []string) []string { return l }},
		{name: "a line of b removed", edit: func(l []string) []string {
			// lines: a0 a1 b1 a2 b2 a3 a4 b4 ...: remove b2 (line 5)
			return slices.Delete(l, 4, 5)
		}, line: 7, instance: "inst-b"},
		{name: "a line of a edited", edit: func(l []string) []string {
			l[3] = strings.Replace(l[3], `"kid":"a2"`, `"kid":"a9"`, 1)
			return l
		}, line: 6, instance: "inst-a"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := alVerify(t, VerifyOptions{Heads: []ChainHead{ca.Head(), cb.Head()}, CheckHeads: true},
				Data("log", []byte(strings.Join(tt.edit(slices.Clone(lines)), ""))))
			if tt.line == 0 {
				if !res.Intact || len(res.Instances) != 2 || res.Instances[0].LastSeq != 10 || res.Instances[1].LastSeq != 6 || res.Events != 16 {
					t.Fatalf("%+v", res)
				}
				return
			}
			b := res.FirstBreak()
			if b == nil || b.Line != tt.line || b.Instance != tt.instance {
				t.Fatalf("first break %v, want at line %d of %s", b, tt.line, tt.instance)
			}
		})
	}
}

func TestVerifyChainAcrossRotatedFiles(t *testing.T) {
	dir := t.TempDir()
	older, newer := filepath.Join(dir, "jit-audit-2026-03-01T00-00-00.000.log"), filepath.Join(dir, "jit-audit.log")
	var first, second bytes.Buffer
	w := &alWriter{w: &first}
	chain := NewChain("inst-a")
	a := NewWriter(alLogger(w), chain, (&alClock{t: alT0}).now)
	alWriteTwelve(a, "alice", "s1")
	w.point(&second)
	alWriteTwelve(a, "bob", "s2")
	for name, data := range map[string][]byte{older: first.Bytes(), newer: second.Bytes()} {
		if err := os.WriteFile(name, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	heads := VerifyOptions{Heads: []ChainHead{chain.Head()}, CheckHeads: true}

	res := alVerify(t, heads, Files(older, newer)...)
	if !res.Intact || res.Instances[0].LastSeq != 24 || res.Instances[0].Last != newer+":12" {
		t.Fatalf("in order: %+v", res)
	}
	// The newer file alone verifies (its chain starts anywhere) ...
	if res := alVerify(t, heads, Files(newer)...); !res.Intact || res.Instances[0].FirstSeq != 13 {
		t.Fatalf("newer alone: %+v", res)
	}
	// ... the older alone is cut short of the saved head ...
	res = alVerify(t, heads, Files(older)...)
	if want := "instance inst-a: seq 13–24 missing (saved head: the head saved in storage is seq 24, the files end at seq 12 (" + older + ":12)"; !res.Intact || len(res.Cuts) != 1 || !strings.HasPrefix(res.Cuts[0].String(), want) {
		t.Fatalf("older alone: breaks %v, cuts %v, want %q", res.Breaks, res.Cuts, want)
	}
	// ... and out of order they break where the older file begins.
	res = alVerify(t, VerifyOptions{}, Files(newer, older)...)
	b := res.FirstBreak()
	if b == nil || b.File != older || b.Line != 1 || !strings.Contains(b.Reason, "seq 1 of instance inst-a follows seq 24 ("+newer+":12)") ||
		!strings.Contains(b.Reason, "are the files in order?") {
		t.Fatalf("out of order: %v", b)
	}
	if res.BreakCount != 1 {
		t.Errorf("out of order: %d breaks, want 1: %v", res.BreakCount, res.Breaks)
	}
	// A missing file from the middle shows as a gap at the next file.
	var third bytes.Buffer
	w.point(&third)
	alWriteTwelve(a, "carol", "s3")
	res = alVerify(t, VerifyOptions{}, Files(older)[0], Data("third.log", third.Bytes()))
	if b := res.FirstBreak(); b == nil || b.String() != "third.log:1: seq 25 of instance inst-a follows seq 12 ("+older+":12): 12 events missing (is a rotated file missing from the list, or are the files out of order?)" {
		t.Fatalf("missing middle file: %v", b)
	}

	if _, err := VerifyChain(Files(filepath.Join(dir, "nonexistent.log")), VerifyOptions{}); err == nil {
		t.Error("a missing file is no error")
	}

	// Rotated files compressed, as Caddy does by default (gzip) or on request (zstd).
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	if _, err := zw.Write(first.Bytes()); err != nil || zw.Close() != nil {
		t.Fatal(err)
	}
	enc, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	zst := enc.EncodeAll(second.Bytes(), nil)
	res = alVerify(t, heads, Data("a.log.gz", gz.Bytes()), Data("b.log.zst", zst), Data("third.log", third.Bytes()))
	if !res.Intact || res.Events != 36 {
		t.Fatalf("compressed rotated files: %+v", res)
	}
	_, err = VerifyChain([]Input{Data("cut.log.gz", gz.Bytes()[:gz.Len()-20])}, VerifyOptions{})
	if err == nil || !strings.Contains(err.Error(), "cut.log.gz (gzip)") {
		t.Errorf("a cut gzip file: %v", err)
	}
}

func TestVerifyChainResumedFromStorage(t *testing.T) {
	ctx := context.Background()
	st := &certmagic.FileStorage{Path: t.TempDir()}
	var buf bytes.Buffer
	log := alLogger(&buf)
	clock := &alClock{t: alT0}

	c1, err := LoadChain(ctx, st, "inst-a")
	if err != nil {
		t.Fatal(err)
	}
	alWriteTwelve(NewWriter(log, c1, clock.now), "alice", "s1")
	if err := c1.Save(ctx, st); err != nil {
		t.Fatal(err)
	}
	// A restart: a new chain loaded from storage, a new Writer.
	c2, err := LoadChain(ctx, st, "inst-a")
	if err != nil {
		t.Fatal(err)
	}
	alWriteTwelve(NewWriter(log, c2, clock.now), "bob", "s2")
	if err := c2.Save(ctx, st); err != nil {
		t.Fatal(err)
	}
	heads, err := LoadChainHeads(ctx, st)
	if err != nil || len(heads) != 1 || heads[0].Seq != 24 {
		t.Fatalf("heads %v, %v", heads, err)
	}
	opts := VerifyOptions{Heads: heads, CheckHeads: true}
	if res := alVerify(t, opts, Data("log", buf.Bytes())); !res.Intact || res.Events != 24 {
		t.Fatalf("resumed chain: %+v", res)
	}
	lines := alLines(buf.String())
	res := alVerify(t, opts, Data("log", []byte(strings.Join(lines[:20], ""))))
	if !res.Intact || len(res.Cuts) != 1 || !strings.HasPrefix(res.Cuts[0].String(), "instance inst-a: seq 21–24 missing (saved head: ") {
		t.Fatalf("truncated resumed chain: breaks %v, cuts %v", res.Breaks, res.Cuts)
	}

	// A crash: events written after the last save are numbered again by the next
	// start, which shows as a fork where the second start begins.
	alWriteTwelve(NewWriter(log, c2, clock.now), "carol", "s3") // seq 25..36, not saved
	c3, err := LoadChain(ctx, st, "inst-a")
	if err != nil {
		t.Fatal(err)
	}
	alWriteTwelve(NewWriter(log, c3, clock.now), "dave", "s4") // seq 25..36 again
	res = alVerify(t, VerifyOptions{}, Data("log", buf.Bytes()))
	if b := res.FirstBreak(); b == nil || b.Line != 37 || !strings.Contains(b.Reason, "seq 25 of instance inst-a was used before (the event after line 24): the chain forks here") {
		t.Fatalf("crash: %v", res.Breaks)
	}
	if res.BreakCount != 1 {
		t.Errorf("crash: %d breaks, want 1 (the chain goes on from the fork): %v", res.BreakCount, res.Breaks)
	}
}

func TestScanAuditLongAndUnterminatedLines(t *testing.T) {
	fx := newAlFixture(t)
	long := strings.Repeat("x", maxAuditLine+10) + "\n"
	data := fx.lines[0] + long + strings.TrimSuffix(fx.lines[1], "\n")
	var got []string
	err := Scan([]Input{Data("log", []byte(data))}, func(l *Line) error {
		got = append(got, fmt.Sprintf("%d:%s:%d", l.Line, l.Problem, len(l.fields)))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || !strings.HasPrefix(got[1], "2:a line longer than 16 MiB") || !strings.HasPrefix(got[2], "3::") || got[2] == "3::0" {
		t.Fatalf("%q", got)
	}
	stop := errors.New("stop")
	if err := Scan([]Input{Data("log", []byte(data))}, func(*Line) error { return stop }); !errors.Is(err, stop) {
		t.Errorf("the callback's error is lost: %v", err)
	}
}

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
