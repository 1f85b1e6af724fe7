package audit

import (
	"context"
	"crypto/ed25519"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"
)

// The checkpoint tests write their logs with the real batched writer, chain heads in
// a real file storage and real checkpoints every 10 events, then verify them as an
// auditor would: with the audit keys, the saved heads and a witness's file.

// cpRun is one process writing instance inst-a's chain: audit_started, then events,
// each in its own batch of batch events; with stop, a graceful stop (a last checkpoint,
// the head saved as stopped), else it is abandoned as a crash would.
func cpRun(t *testing.T, st *certmagic.FileStorage, key *AuditKey, out *alWriter, clock *alClock, events, batch int, stop bool) *Chain {
	t.Helper()
	ctx := context.Background()
	c, err := LoadChain(ctx, st, "inst-a")
	if err != nil {
		t.Fatal(err)
	}
	c.SetMarks(Marks{Key: key, Every: 10, Interval: time.Hour})
	c.Batch(Output{Writer: out, FlushInterval: time.Hour, Now: clock.now})
	w := NewWriter(alLogger(io.Discard), c, clock.now)
	w.Started()
	for i := range events {
		w.Event("evt", zap.Int("i", i))
		if (i+1)%batch == 0 {
			c.Flush()
		}
	}
	c.Flush()
	if stop {
		if err := c.Stop(ctx, clock.now()); err != nil {
			t.Fatal(err)
		}
	} else {
		c.Unbatch(clock.now()) // nothing is queued: this only ends the flusher
	}
	return c
}

// cpWitnessFile keeps the checkpoint lines of a log as a witness would have received
// them, and reads them back.
func cpWitnessFile(t *testing.T, lines []string) (string, []WitnessedCheckpoint) {
	t.Helper()
	var kept strings.Builder
	for i, line := range lines {
		if ParseLine("log", i+1, []byte(strings.TrimSuffix(line, "\n"))).Event() == EventCheckpoint {
			kept.WriteString(line)
		}
	}
	path := filepath.Join(t.TempDir(), "witness.jsonl")
	if err := os.WriteFile(path, []byte(kept.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	witnessed, err := ReadWitnessFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return path, witnessed
}

// cpResign replaces a checkpoint line's signature with by's signature of what the
// line says.
func cpResign(t *testing.T, line string, by *AuditKey) string {
	t.Helper()
	cp, old, err := checkpointOf(ParseLine("log", 1, []byte(strings.TrimSuffix(line, "\n"))))
	if err != nil {
		t.Fatal(err)
	}
	forged, err := by.SignCheckpoint(cp)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Replace(line, old, forged, 1)
}

func TestVerifyCheckpointsAndCuts(t *testing.T) {
	ctx := context.Background()
	st := &certmagic.FileStorage{Path: t.TempDir()}
	key, other := testAuditKey(t), testAuditKey(t)
	keys := AuditKeys{key.ID: key.Private.Public().(ed25519.PublicKey)}
	var log strings.Builder
	// audit_started (1), events 2…10, checkpoint 11 (10 over 1…10), events 12…21,
	// checkpoint 22 (21 over 12…21), events 23…27, checkpoint 28 at the stop.
	cpRun(t, st, key, &alWriter{w: &log}, &alClock{t: alT0}, 24, 4, true)
	lines := alLines(log.String())
	if len(lines) != 28 {
		t.Fatalf("%d lines, want 28:\n%s", len(lines), log.String())
	}
	heads, err := LoadChainHeads(ctx, st)
	if err != nil || len(heads) != 1 || heads[0].Seq != 28 {
		t.Fatalf("heads %v, %v", heads, err)
	}
	_, witnessed := cpWitnessFile(t, lines)
	if len(witnessed) != 3 || witnessed[1].Seq != 22 || witnessed[1].Checkpoint.Seq != 21 {
		t.Fatalf("witnessed %+v, want the checkpoints at 11, 22 and 28", witnessed)
	}
	replace := func(s, old, new string) string {
		if !strings.Contains(s, old) {
			t.Fatalf("%q is not in %s", old, s)
		}
		return strings.Replace(s, old, new, 1)
	}
	// rewritten is the log as someone without the audit key would rewrite it from
	// seq 21 on: a chain that links, but no event the witness saw.
	rewritten := func() []string {
		var tail strings.Builder
		c := NewChain("inst-a")
		c.head = ChainHead{Instance: "inst-a", Seq: 20, Hash: alHash(t, lines[19])}
		w := NewWriter(alLogger(&tail), c, (&alClock{t: alT0.Add(time.Minute)}).now)
		for i := range 10 {
			w.Event("evt", zap.Int("i", 100+i))
		}
		return append(slices.Clone(lines[:20]), alLines(tail.String())...)
	}
	withKeys := VerifyOptions{AuditKeys: keys}
	tests := []struct {
		name  string
		lines []string
		opts  VerifyOptions
		// breakAt is the file:line of the first break and breakWhy a part of its
		// reason; "" for an intact chain.
		breakAt, breakWhy string
		// cut is how the one cut expected begins (ChainCut.String), if any.
		cut                 string
		verified, unchecked int64
	}{
		{name: "intact, checkpoints verified", lines: lines, opts: withKeys, verified: 3},
		{name: "intact, without keys the checkpoints are unchecked", lines: lines, unchecked: 3},
		{name: "intact against heads and witness", lines: lines,
			opts: VerifyOptions{AuditKeys: keys, Heads: heads, CheckHeads: true, Witnessed: witnessed}, verified: 3},
		{name: "checkpoint signed by another key", lines: edit(lines, 10, func(l string) string { return cpResign(t, l, other) }),
			opts: withKeys, breakAt: "log:11", breakWhy: "which is not a trusted key", verified: 2},
		{name: "checkpoint's head_seq edited", lines: edit(lines, 10, func(l string) string { return replace(l, `"head_seq":10`, `"head_seq":9`) }),
			opts: withKeys, breakAt: "log:11", breakWhy: "says its head is seq 9, not the event just before it (seq 10)", verified: 2},
		{name: "checkpoint's head edited", lines: edit(lines, 10, func(l string) string {
			return replace(l, `"head":"`+alHash(t, lines[9]), `"head":"`+alHash(t, lines[8]))
		}), opts: withKeys, breakAt: "log:11", breakWhy: "its head is not the hash of seq 10 (line 10)", verified: 2},
		{name: "checkpoint's count edited", lines: edit(lines, 21, func(l string) string { return replace(l, `"count":10`, `"count":11`) }),
			opts: withKeys, breakAt: "log:22", breakWhy: "its count 11 is not head_seq − from_seq + 1 = 10; the checkpoint's fields are not what audit key", verified: 2},
		{name: "checkpoint's kid edited", lines: edit(lines, 10, func(l string) string { return replace(l, `"kid":"`, `"kid":"audit-not-the-signer`) }),
			opts: withKeys, breakAt: "log:11", breakWhy: `checkpoint: its kid "audit-not-the-signer`, verified: 2},
		{name: "checkpoint's kid edited, seen without keys", lines: edit(lines, 10, func(l string) string { return replace(l, `"kid":"`, `"kid":"audit-not-the-signer`) }),
			breakAt: "log:11", breakWhy: `is not the signing key`, unchecked: 3},
		{name: "checkpoint's count edited, seen without keys", lines: edit(lines, 21, func(l string) string { return replace(l, `"count":10`, `"count":11`) }),
			breakAt: "log:22", breakWhy: "its count 11 is not head_seq − from_seq + 1 = 10", unchecked: 3},
		{name: "newest lines cut off, seen against the saved head", lines: lines[:22], opts: VerifyOptions{AuditKeys: keys, Heads: heads, CheckHeads: true},
			cut: "instance inst-a: seq 23–28 missing (saved head: the head saved in storage is seq 28, the files end at seq 22 (log:22): the instance stopped cleanly", verified: 2},
		{name: "newest lines cut off, seen by the witness", lines: lines[:15], opts: VerifyOptions{AuditKeys: keys, Witnessed: witnessed},
			cut: "instance inst-a: seq 16–28 missing (witness: the witness holds the checkpoint at seq 28 (", verified: 1},
		{name: "newest lines cut off, unseen without heads or witness", lines: lines[:15], opts: withKeys, verified: 1},
		{name: "log rewritten after the witness saw it", lines: rewritten(), opts: VerifyOptions{AuditKeys: keys, Witnessed: witnessed},
			breakAt: "log:21", breakWhy: "seq 21 of instance inst-a is not the event the witness saw as a checkpoint's head (witness ", verified: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := alVerify(t, tt.opts, Data("log", []byte(strings.Join(tt.lines, ""))))
			if b := res.FirstBreak(); tt.breakAt == "" && b != nil {
				t.Fatalf("want intact, got %v", res.Breaks)
			} else if tt.breakAt != "" && (b == nil || b.File+":"+strconv.Itoa(b.Line) != tt.breakAt || !strings.Contains(b.Reason, tt.breakWhy)) {
				t.Fatalf("first break %v, want at %s with %q", b, tt.breakAt, tt.breakWhy)
			}
			switch {
			case tt.cut == "" && (res.Cut || len(res.Cuts) > 0):
				t.Errorf("want no cut, got %v", res.Cuts)
			case tt.cut != "" && (!res.Cut || len(res.Cuts) != 1 || !strings.HasPrefix(res.Cuts[0].String(), tt.cut)):
				t.Errorf("cuts %v, want one beginning %q", res.Cuts, tt.cut)
			}
			if res.CheckpointsVerified != tt.verified || res.CheckpointsUnchecked != tt.unchecked || res.SignaturesChecked != (tt.opts.AuditKeys != nil) {
				t.Errorf("checkpoints %+v, want %d verified, %d unchecked", res.CheckpointTotals, tt.verified, tt.unchecked)
			}
		})
	}
}

// A crash loses the batch whose head was saved before its write: the next process
// goes on from that head, and the events in between are a cut, not a break.
func TestVerifyCrashIsACut(t *testing.T) {
	ctx := context.Background()
	st := &certmagic.FileStorage{Path: t.TempDir()}
	key := testAuditKey(t)
	keys := AuditKeys{key.ID: key.Private.Public().(ed25519.PublicKey)}
	var log strings.Builder
	out, clock := &alWriter{w: &log}, &alClock{t: alT0}
	// Run 1: audit_started (1), events 2…10, checkpoint 11, then events 12…16 whose
	// write is lost (the head, 16, was saved before it).
	c1, err := LoadChain(ctx, st, "inst-a")
	if err != nil {
		t.Fatal(err)
	}
	c1.SetMarks(Marks{Key: key, Every: 10, Interval: time.Hour})
	c1.Batch(Output{Writer: out, FlushInterval: time.Hour, Now: clock.now})
	w1 := NewWriter(alLogger(io.Discard), c1, clock.now)
	w1.Started()
	for i := range 14 {
		if i == 9 {
			c1.Flush()
			out.point(io.Discard)
		}
		w1.Event("evt", zap.Int("i", i))
	}
	c1.Flush()
	c1.Unbatch(clock.now())
	out.point(&log)
	// Run 2: audit_started (17, unclean, saved_seq 16), events 18…20, checkpoint 21.
	cpRun(t, st, key, out, clock, 3, 10, true)
	lines := alLines(log.String())
	if len(lines) != 16 || !strings.Contains(lines[11], `"previous_stop":"unclean","saved_seq":16`) {
		t.Fatalf("the log is not as planned:\n%s", log.String())
	}
	heads, err := LoadChainHeads(ctx, st)
	if err != nil {
		t.Fatal(err)
	}

	all := VerifyOptions{AuditKeys: keys, Heads: heads, CheckHeads: true}
	res := alVerify(t, all, Data("log", []byte(log.String())))
	want := "instance inst-a: seq 12–16 missing (crash: the process writing them stopped uncleanly; the next one went on from the head saved before their write, at log:12)"
	if !res.Intact || !res.Cut || len(res.Cuts) != 1 || res.Cuts[0].String() != want {
		t.Fatalf("breaks %v, cuts %v, want the cut %q", res.Breaks, res.Cuts, want)
	}
	if res.CheckpointsVerified != 2 {
		t.Errorf("%d checkpoints verified, want 2", res.CheckpointsVerified)
	}
	// A gap that no unclean start explains stays a break.
	res = alVerify(t, all, Data("log", []byte(strings.Join(slices.Delete(slices.Clone(lines), 13, 14), ""))))
	if b := res.FirstBreak(); b == nil || b.Line != 14 || !strings.Contains(b.Reason, "seq 20 of instance inst-a follows seq 18 (line 13): 1 event missing") {
		t.Fatalf("a gap after the restart: %v", res.Breaks)
	}
	// An audit_started that claims a saved head short of the gap does not explain it.
	short := edit(lines, 11, func(l string) string { return strings.Replace(l, `"saved_seq":16`, `"saved_seq":15`, 1) })
	if res := alVerify(t, all, Data("log", []byte(strings.Join(short, "")))); res.Intact {
		t.Fatalf("an edited saved_seq explains the gap: cuts %v", res.Cuts)
	}
}

func TestReadWitnessFile(t *testing.T) {
	st := &certmagic.FileStorage{Path: t.TempDir()}
	key, other := testAuditKey(t), testAuditKey(t)
	keys := AuditKeys{key.ID: key.Private.Public().(ed25519.PublicKey)}
	var log strings.Builder
	cpRun(t, st, key, &alWriter{w: &log}, &alClock{t: alT0}, 12, 12, true)
	lines := alLines(log.String())
	checkpoint := lines[10] // seq 11, over 1…10
	write := func(content string) string {
		path := filepath.Join(t.TempDir(), "witness.jsonl")
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	for _, tc := range []struct {
		name, content, wantErr string
		count                  int
	}{
		{name: "blank lines skipped", content: "\n" + checkpoint + "\n  \r\n" + lines[len(lines)-1], count: 2},
		{name: "an event that is not a checkpoint", content: checkpoint + lines[3], wantErr: `witness.jsonl:2: a "evt" event, not a checkpoint`},
		{name: "not JSON", content: "hello\n", wantErr: "witness.jsonl:1: not a JSON object"},
		{name: "a checkpoint without its signature", content: strings.Replace(checkpoint, `"signature"`, `"sig"`, 1), wantErr: "witness.jsonl:1: a checkpoint without"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ReadWitnessFile(write(tc.content))
			switch {
			case tc.wantErr == "" && (err != nil || len(got) != tc.count):
				t.Fatalf("%d checkpoints (%v), want %d", len(got), err, tc.count)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("error %v, want %q", err, tc.wantErr)
			}
		})
	}

	// A forged witness line is a break at its place; a witnessed instance with no
	// event in the files, left out by Instances, is listed.
	path := write(cpResign(t, checkpoint, other))
	forged, err := ReadWitnessFile(path)
	if err != nil {
		t.Fatal(err)
	}
	res := alVerify(t, VerifyOptions{AuditKeys: keys, Witnessed: forged}, Data("log", []byte(log.String())))
	if b := res.FirstBreak(); b == nil || b.File != path || b.Line != 1 || !strings.Contains(b.Reason, "witness "+path+":1: ") {
		t.Fatalf("a forged witnessed checkpoint: %v", res.Breaks)
	}
	good, _ := ReadWitnessFile(write(checkpoint))
	res = alVerify(t, VerifyOptions{AuditKeys: keys, Witnessed: good, Instances: []string{"inst-b"}}, Data("other", []byte(strings.ReplaceAll(log.String(), `"inst-a"`, `"inst-b"`))))
	if len(res.WitnessedNotInFiles) != 1 || res.WitnessedNotInFiles[0].Checkpoint.Instance != "inst-a" || res.Cut {
		t.Fatalf("a witnessed instance not in the files: %+v", res.CheckpointTotals)
	}
	if _, err := VerifyChain([]Input{Data("log", []byte(log.String()))}, VerifyOptions{Witnessed: good}); err == nil {
		t.Fatal("witnessed checkpoints without keys verified")
	}
}

// edit returns a copy of lines with line i (from 0) changed by f.
func edit(lines []string, i int, f func(string) string) []string {
	out := slices.Clone(lines)
	out[i] = f(out[i])
	return out
}

// tornWriter writes only the first half of each write, as a kill -9 in the middle of
// a write may leave it, and says it wrote all.
type tornWriter struct{ to io.Writer }

func (w tornWriter) Write(p []byte) (int, error) {
	_, err := w.to.Write(p[:len(p)/2])
	return len(p), err
}

// A kill -9 may tear the batch's write mid-line: the next process's audit_started
// then follows the fragment on the same line. That is part of the crash cut.
func TestVerifyTornWriteBeforeACrashIsACut(t *testing.T) {
	ctx := context.Background()
	st := &certmagic.FileStorage{Path: t.TempDir()}
	key := testAuditKey(t)
	keys := AuditKeys{key.ID: key.Private.Public().(ed25519.PublicKey)}
	var log strings.Builder
	out, clock := &alWriter{w: &log}, &alClock{t: alT0}
	c1, err := LoadChain(ctx, st, "inst-a")
	if err != nil {
		t.Fatal(err)
	}
	c1.SetMarks(Marks{Key: key, Every: 10, Interval: time.Hour})
	c1.Batch(Output{Writer: out, FlushInterval: time.Hour, Now: clock.now})
	w1 := NewWriter(alLogger(io.Discard), c1, clock.now)
	w1.Started()
	for i := range 14 {
		if i == 9 {
			c1.Flush()
			out.point(tornWriter{&log}) // the batch of events 12…16 is torn
		}
		w1.Event("evt", zap.Int("i", i))
	}
	c1.Flush()
	c1.Unbatch(clock.now())
	out.point(&log)
	cpRun(t, st, key, out, clock, 3, 10, true)
	heads, err := LoadChainHeads(ctx, st)
	if err != nil {
		t.Fatal(err)
	}
	lines := alLines(log.String())
	torn := slices.IndexFunc(lines, func(l string) bool { return strings.Contains(l, `"previous_stop":"unclean"`) })
	if torn < 0 || strings.LastIndex(lines[torn], `{"level"`) < 1 || !strings.Contains(lines[torn], `"saved_seq":16`) {
		t.Fatalf("the write is not torn as planned:\n%s", log.String())
	}
	opts := VerifyOptions{AuditKeys: keys, Heads: heads, CheckHeads: true}
	res := alVerify(t, opts, Data("log", []byte(log.String())))
	if got := verifyOutcome(res); !strings.HasPrefix(got, "cut: instance inst-a: seq ") || !strings.HasSuffix(got, ", after a torn line (the start of the lost write))") {
		t.Fatalf("a torn write before a crash: %s (breaks %v)", got, res.Breaks)
	}
	// A fragment followed by anything but the audit_started that explains it stays a
	// break.
	fragment := lines[torn][:strings.LastIndex(lines[torn], `{"level"`)]
	for name, line := range map[string]string{
		"a fragment alone":                         fragment + "\n",
		"a fragment before a clean start":          strings.Replace(lines[torn], `"previous_stop":"unclean"`, `"previous_stop":"clean"`, 1),
		"a fragment before another event":          fragment + lines[torn+1],
		"a fragment before a start that misplaces": strings.Replace(lines[torn], `"saved_seq":16`, `"saved_seq":15`, 1),
	} {
		res := alVerify(t, opts, Data("log", []byte(strings.Join(edit(lines, torn, func(string) string { return line }), ""))))
		if res.Intact {
			t.Errorf("%s: intact, cuts %v", name, res.Cuts)
		}
	}
}
