package audit

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
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
