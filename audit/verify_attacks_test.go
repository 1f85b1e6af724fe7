package audit

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"
)

// Attacks by someone who can write the log but holds neither the audit key nor the
// storage: they may remove, rewrite and re-link lines, forge audit_started events and
// whole chains. With the saved heads and a witness, each must show as a break or a cut.

// attackedLog is the genuine log of TestVerifyCheckpointsAndCuts: 28 lines of inst-a,
// checkpoints at seq 11, 22 and 28, the head saved as stopped at 28, and all the
// evidence an auditor has: keys, saved heads and the witness's checkpoints.
func attackedLog(t *testing.T) ([]string, VerifyOptions) {
	t.Helper()
	st := &certmagic.FileStorage{Path: t.TempDir()}
	key := testAuditKey(t)
	var log strings.Builder
	cpRun(t, st, key, &alWriter{w: &log}, &alClock{t: alT0}, 24, 4, true)
	lines := alLines(log.String())
	heads, err := LoadChainHeads(context.Background(), st)
	if err != nil || len(lines) != 28 || len(heads) != 1 || heads[0].Seq != 28 {
		t.Fatalf("%d lines, heads %v, %v", len(lines), heads, err)
	}
	_, witnessed := cpWitnessFile(t, lines)
	return lines, VerifyOptions{AuditKeys: AuditKeys{key.ID: key.Private.Public().(ed25519.PublicKey)},
		Heads: heads, CheckHeads: true, Witnessed: witnessed}
}

var (
	attackSeq  = regexp.MustCompile(`,"seq":\d+,`)
	attackPrev = regexp.MustCompile(`,"prev":"[0-9a-f]*",`)
)

// relink sets a line's seq and prev, as anyone who can write the log can.
func relink(line string, seq int64, prev string) string {
	line = attackSeq.ReplaceAllLiteralString(line, fmt.Sprintf(`,"seq":%d,`, seq))
	return attackPrev.ReplaceAllLiteralString(line, `,"prev":"`+prev+`",`)
}

// forgedCrash turns the log's first audit_started into the start of a process at seq
// after an unclean stop, claiming the head seq-1 was saved: the gap before looks lost.
func forgedCrash(t *testing.T, started string, seq int64) string {
	t.Helper()
	const genuine = `"previous_stop":"none","saved_seq":0`
	if !strings.Contains(started, genuine) {
		t.Fatalf("not the first audit_started: %s", started)
	}
	l := strings.Replace(started, genuine, fmt.Sprintf(`"previous_stop":"unclean","saved_seq":%d`, seq-1), 1)
	return relink(l, seq, strings.Repeat("0", 64))
}

// verifyOutcome is what a verification tells an auditor, in brief.
func verifyOutcome(res *ChainVerification) string {
	switch {
	case !res.Intact:
		return "break: " + res.FirstBreak().String()
	case res.Cut:
		return "cut: " + res.Cuts[0].String()
	}
	return "intact"
}

func TestVerifyFailsClosedOnInstancesTheEvidenceDoesNotMatch(t *testing.T) {
	lines, all := attackedLog(t)
	// A chain of inst-z, which wrote nothing with this storage.
	var forged strings.Builder
	w := NewWriter(alLogger(&forged), NewChain("inst-z"), (&alClock{t: alT0.Add(time.Minute)}).now)
	w.Event(EventDeactivated, zap.String("session_id", "s-evil"), zap.String("user", "mallory"), zap.String("by", "mallory"), zap.String("reason", "done"))
	inserted := strings.Join(slices.Insert(slices.Clone(lines), 5, alLines(forged.String())...), "")
	headsOnly, witnessOnly := all, all
	headsOnly.Witnessed = nil
	witnessOnly.Heads, witnessOnly.CheckHeads = nil, false
	scoped := func(opts VerifyOptions, instances ...string) VerifyOptions { opts.Instances = instances; return opts }

	for _, tc := range []struct {
		name string
		log  string
		opts VerifyOptions
		want string // the beginning of verifyOutcome
	}{
		{"emptied log, seen by the saved head", "", headsOnly,
			"cut: instance inst-a: seq 1–28 missing (saved head: the head saved in storage is seq 28, and the files hold no event of the instance: its log was emptied"},
		{"emptied log, seen by the witness", "", witnessOnly,
			"cut: instance inst-a: seq 1–28 missing (witness: the witness holds the checkpoint at seq 28 ("},
		{"log replaced by a chain of an unknown instance", forged.String(), all,
			"break: log:1: instance inst-z has no saved head in this storage: not written by this config's instances, or storage was reset"},
		{"forged line of an unknown instance inserted", inserted, all,
			"break: log:6: instance inst-z has no saved head in this storage"},
		{"an event of an instance not named", strings.Join(lines, ""), scoped(all, "inst-b"),
			"break: log:1: instance inst-a is not one of the instances named (--instance)"},
		{"another instance's head and checkpoints, not named, are not expected", "", scoped(all, "inst-b"), "intact"},
		{"the genuine log", strings.Join(lines, ""), all, "intact"},
		{"the genuine log, named", strings.Join(lines, ""), scoped(all, "inst-a"), "intact"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := alVerify(t, tc.opts, Data("log", []byte(tc.log)))
			if got := verifyOutcome(res); !strings.HasPrefix(got, tc.want) {
				t.Fatalf("got  %s\nwant %s…", got, tc.want)
			}
		})
	}
	res := alVerify(t, scoped(all, "inst-b"), Data("log", nil))
	if len(res.HeadsNotInFiles) != 1 || len(res.WitnessedNotInFiles) != 3 {
		t.Errorf("the heads and checkpoints not compared are listed: %v, %v", res.HeadsNotInFiles, res.WitnessedNotInFiles)
	}
}

// A real crash gap never holds a witnessed checkpoint (sent after its batch is
// written) nor the saved head (always newer): forged audit_started lines that pass a
// deletion off as crashes are breaks where they jump over one.
func TestVerifyForgedCrashCannotHideWitnessedOrSavedEvents(t *testing.T) {
	lines, all := attackedLog(t)
	// seq 1…12 genuine; "crash" over 13…16; 18…20 genuine and re-linked; "crash"
	// over 21 and the checkpoint 22; 24…26; "crash" over 27, the checkpoint 28 and
	// the saved head 28.
	out := slices.Clone(lines[:12])
	prev := ""
	add := func(l string) { out = append(out, l); prev = alHash(t, l) }
	add(forgedCrash(t, lines[0], 17))
	for seq := int64(18); seq <= 20; seq++ {
		add(relink(lines[seq-1], seq, prev))
	}
	add(forgedCrash(t, lines[0], 23))
	for seq := int64(24); seq <= 26; seq++ {
		add(relink(lines[seq-1], seq, prev))
	}
	add(forgedCrash(t, lines[0], 29))
	log := strings.Join(out, "")
	headsOnly, witnessOnly := all, all
	headsOnly.Witnessed = nil
	witnessOnly.Heads, witnessOnly.CheckHeads = nil, false

	for _, tc := range []struct {
		name  string
		opts  VerifyOptions
		wants []string // the breaks, in order
	}{
		{"against the saved head and the witness", all, []string{
			"log:21: seq 28 of instance inst-a is the chain head saved in storage, but this audit_started says seq 27–28 were lost in a crash: a crash never loses a saved head or a witnessed checkpoint, so this line is forged",
			"log:17: seq 22 of instance inst-a is a checkpoint the witness holds (witness ",
			"log:21: seq 28 of instance inst-a is a checkpoint the witness holds (witness ",
		}},
		{"against the saved head only", headsOnly, []string{"log:21: seq 28 of instance inst-a is the chain head saved in storage, but this audit_started says seq 27–28"}},
		{"against the witness only", witnessOnly, []string{"log:17: seq 22 of instance inst-a is a checkpoint the witness holds", "log:21: seq 28 "}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := alVerify(t, tc.opts, Data("log", []byte(log)))
			if len(res.Breaks) != len(tc.wants) {
				t.Fatalf("breaks %v, want %d", res.Breaks, len(tc.wants))
			}
			for i, want := range tc.wants {
				if !strings.HasPrefix(res.Breaks[i].String(), want) {
					t.Errorf("break %d: %s\nwant %s…", i, res.Breaks[i], want)
				}
			}
		})
	}
}

// A witness line's seq, prev and kid are not signed: an edited one must not move the
// checkpoint (a false cut, or a false break) but be said as the edit it is.
func TestVerifyWitnessLineTakesItsPlaceFromTheSignature(t *testing.T) {
	lines, all := attackedLog(t)
	log := Data("log", []byte(strings.Join(lines, "")))
	checkpoint := lines[10] // seq 11, over 1…10
	for _, tc := range []struct {
		name, old, new, problem string
	}{
		{"seq raised", `,"seq":11,`, `,"seq":999999,`, "its seq 999999 is not head_seq + 1 = 11"},
		{"seq lowered", `,"seq":11,`, `,"seq":5,`, "its seq 5 is not head_seq + 1 = 11"},
		{"prev edited", `,"prev":"`, `,"prev":"0` + strings.Repeat("1", 63) + `","was":"`, "its prev is not the signed head"},
		{"kid edited", `"kid":"`, `"kid":"x`, `its kid "x`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if !strings.Contains(checkpoint, tc.old) {
				t.Fatalf("%q is not in %s", tc.old, checkpoint)
			}
			path := filepath.Join(t.TempDir(), "witness.jsonl")
			if err := os.WriteFile(path, []byte(strings.Replace(checkpoint, tc.old, tc.new, 1)), 0o600); err != nil {
				t.Fatal(err)
			}
			witnessed, err := ReadWitnessFile(path)
			if err != nil {
				t.Fatal(err)
			}
			opts := all
			opts.Witnessed = witnessed
			res := alVerify(t, opts, log)
			if got := verifyOutcome(res); got != "intact" {
				t.Fatalf("an edited witness line accuses the genuine log: %s", got)
			}
			if len(res.WitnessLinesEdited) != 1 || !strings.HasPrefix(res.WitnessLinesEdited[0].Problem, "witness line edited: "+tc.problem) {
				t.Fatalf("the edit is not said: %+v", res.WitnessLinesEdited)
			}
		})
	}
}

// Files out of order are a break; the cuts still count from the highest seq seen.
func TestVerifyOutOfOrderFilesCutFromTheHighestSeq(t *testing.T) {
	lines, all := attackedLog(t)
	for _, tc := range []struct {
		name string
		new  []string
		want string // the one cut, or ""
	}{
		{"every event given", lines[14:], ""},
		{"the newest two missing", lines[14:26], "instance inst-a: seq 27–28 missing"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := alVerify(t, all, Data("new", []byte(strings.Join(tc.new, ""))), Data("old", []byte(strings.Join(lines[:14], ""))))
			if res.Intact {
				t.Fatal("files out of order are intact")
			}
			var cuts []string
			for _, c := range res.Cuts {
				if !strings.HasPrefix(c.String(), tc.want) || tc.want == "" {
					cuts = append(cuts, c.String())
				}
			}
			if len(cuts) > 0 {
				t.Errorf("cuts %v, want only %q", cuts, tc.want)
			}
		})
	}
}

// Rotated-away files may be left out, so a log's beginning missing is only known from
// a witnessed checkpoint before it.
func TestVerifyWitnessBeforeTheFirstEventIsACutAtTheStart(t *testing.T) {
	lines, all := attackedLog(t)
	headsOnly := all
	headsOnly.Witnessed = nil
	for _, tc := range []struct {
		name string
		opts VerifyOptions
		want string
	}{
		{"with the witness", all, "cut: instance inst-a: seq 1–15 missing (witness: the witness holds the checkpoint at seq 11 (witness "},
		{"without it, a start anywhere is fine", headsOnly, "intact"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := alVerify(t, tc.opts, Data("log", []byte(strings.Join(lines[15:], ""))))
			if got := verifyOutcome(res); !strings.HasPrefix(got, tc.want) {
				t.Fatalf("got  %s\nwant %s…", got, tc.want)
			}
			if tc.want != "intact" && !strings.Contains(res.Cuts[0].Detail, "the files begin at seq 16 (log:1): the events before are not in the files given") {
				t.Errorf("detail %q", res.Cuts[0].Detail)
			}
		})
	}
}
