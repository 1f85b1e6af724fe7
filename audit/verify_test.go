package audit

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/caddyserver/certmagic"
	"github.com/klauspost/compress/zstd"
	"go.uber.org/zap"
)

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
		}, line: 3, reason: `its key "user" appears twice`, breaks: 2},
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
	res := alVerify(t, VerifyOptions{Heads: []ChainHead{fx.head, {Instance: "elsewhere", Seq: 7, Hash: strings.Repeat("a", 64)}}, CheckHeads: true,
		Instances: []string{"inst-a"}},
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
	// A damaged compressed file is a break where the damage begins, and the files
	// after it are still verified.
	res, err = VerifyChain([]Input{Data("cut.log.gz", gz.Bytes()[:gz.Len()-20]), Data("b.log.zst", zst), Data("third.log", third.Bytes())}, VerifyOptions{})
	if err != nil {
		t.Fatalf("a cut gzip file before others: %v, want a break, not an error", err)
	}
	cut := res.FirstBreak()
	if res.Intact || cut == nil || cut.File != "cut.log.gz" || !strings.Contains(cut.Reason, "the gzip file cannot be read past line") {
		t.Errorf("a cut gzip file: first break %v, want one in cut.log.gz saying where it cannot be read", cut)
	}
	if res.Events < 24 {
		t.Errorf("after a cut gzip file, %d events read, want the 24 of the files after it at least", res.Events)
	}
	// Cut inside its header, the file yields no line at all.
	res, err = VerifyChain([]Input{Data("header.log.gz", gz.Bytes()[:5]), Data("third.log", third.Bytes())}, VerifyOptions{})
	if cut := res.FirstBreak(); err != nil || cut == nil || cut.File != "header.log.gz" || cut.Line != 1 {
		t.Errorf("a gzip file cut in its header: %v, first break %v; want a break at header.log.gz:1", err, cut)
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
