package audit

import (
	"bytes"
	"fmt"
	"os"
	"strings"

	"github.com/caddy-jit/caddy-jit/internal/words"
)

// Verifying what the chain's own events claim (marks.go): each checkpoint's signature
// and arithmetic, the gaps a crash explains (audit_started), and the checkpoints a
// witness holds, which tell a log cut short at its end from a complete one even when
// the host that keeps the saved heads is not to be trusted.

// Sources of a cut: what tells that the events are missing.
const (
	// CutCrash: an audit_started after an unclean stop goes on from a saved head past
	// the last event written; the batch in between was lost.
	CutCrash = "crash"
	// CutSavedHead: the head saved in storage is past the files' last event.
	CutSavedHead = "saved head"
	// CutWitness: a witness holds a checkpoint past the files' last event.
	CutWitness = "witness"
)

// ChainCut is a run of an instance's events missing from the files: lost or cut off,
// not edited. The events that remain still verify.
type ChainCut struct {
	Instance string `json:"instance"`
	FromSeq  int64  `json:"from_seq"`
	ToSeq    int64  `json:"to_seq"`
	Source   string `json:"source"`
	Detail   string `json:"detail"`
}

// String is "instance X: seq A–B missing (source: detail)".
func (c ChainCut) String() string {
	seqs := fmt.Sprintf("seq %d–%d", c.FromSeq, c.ToSeq)
	if c.FromSeq == c.ToSeq {
		seqs = fmt.Sprintf("seq %d", c.FromSeq)
	}
	return fmt.Sprintf("instance %s: %s missing (%s: %s)", c.Instance, seqs, c.Source, c.Detail)
}

// CheckpointTotals count the checkpoint events in the files and the witnessed ones.
type CheckpointTotals struct {
	// SignaturesChecked: audit keys were given, so every checkpoint's signature was
	// checked (a failing one is a break).
	SignaturesChecked    bool  `json:"signatures_checked"`
	Checkpoints          int64 `json:"checkpoints"`
	CheckpointsVerified  int64 `json:"checkpoints_verified"`
	CheckpointsUnchecked int64 `json:"checkpoints_unchecked"`
	// Witnessed counts the witnessed checkpoints compared with the files;
	// WitnessedNotInFiles are those of instances with no event in the files.
	Witnessed           int                   `json:"witnessed"`
	WitnessedNotInFiles []WitnessedCheckpoint `json:"witnessed_not_in_files,omitempty"`
}

// WitnessedCheckpoint is one checkpoint a witness received, as its file holds it.
type WitnessedCheckpoint struct {
	File string `json:"file"`
	Line int    `json:"line"`
	// Seq is the checkpoint event's own seq (Checkpoint.Seq + 1), Hash its hash.
	Seq        int64      `json:"seq"`
	Hash       string     `json:"hash"`
	Checkpoint Checkpoint `json:"checkpoint"`
	Signature  string     `json:"-"`
}

func (w WitnessedCheckpoint) place() string { return fmt.Sprintf("%s:%d", w.File, w.Line) }

// ReadWitnessFile reads the checkpoints a witness kept: one checkpoint event (the JSON
// object the server POSTed) per line; blank lines are skipped. Anything else is an
// error naming its file and line, as the file is evidence and must hold only that.
func ReadWitnessFile(path string) ([]WitnessedCheckpoint, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading the witness file: %w", err)
	}
	var out []WitnessedCheckpoint
	for i, raw := range bytes.Split(data, []byte{'\n'}) {
		raw = bytes.TrimSuffix(raw, []byte{'\r'})
		if len(bytes.TrimSpace(raw)) == 0 {
			continue
		}
		l := ParseLine(path, i+1, raw)
		w, err := witnessedOf(l)
		if err != nil {
			return nil, fmt.Errorf("%s: %s (a witness file holds one checkpoint event per line, as the server sent them)", l.Where(), err)
		}
		out = append(out, w)
	}
	return out, nil
}

func witnessedOf(l *Line) (WitnessedCheckpoint, error) {
	if l.Problem != "" {
		return WitnessedCheckpoint{}, fmt.Errorf("%s", l.Problem)
	}
	_, seq, _, problem := chainFields(l)
	if problem != "" {
		return WitnessedCheckpoint{}, fmt.Errorf("%s", problem)
	}
	if l.Event() != EventCheckpoint {
		return WitnessedCheckpoint{}, fmt.Errorf("a %q event, not a %s", l.Event(), EventCheckpoint)
	}
	cp, signature, err := checkpointOf(l)
	if err != nil {
		return WitnessedCheckpoint{}, err
	}
	hash, err := l.Hash()
	if err != nil {
		return WitnessedCheckpoint{}, err
	}
	return WitnessedCheckpoint{File: l.File, Line: l.Line, Seq: seq, Hash: hash, Checkpoint: cp, Signature: signature}, nil
}

type instanceSeq struct {
	instance string
	seq      int64
}

type heldEvent struct {
	hash string
	at   logPlace
}

// prepareCheckpoints notes the keys and the events the witnessed checkpoints name.
func (v *chainVerifier) prepareCheckpoints(opts VerifyOptions) {
	if len(opts.AuditKeys) > 0 {
		v.keys = opts.AuditKeys
		v.res.SignaturesChecked = true
	}
	v.wanted = make(map[instanceSeq]bool, 2*len(opts.Witnessed))
	v.held = make(map[instanceSeq]heldEvent)
	for _, w := range opts.Witnessed {
		v.wanted[instanceSeq{w.Checkpoint.Instance, w.Checkpoint.Seq}] = true
		v.wanted[instanceSeq{w.Checkpoint.Instance, w.Seq}] = true
	}
}

// hold keeps the hash of an event a witnessed checkpoint names, as first seen.
func (v *chainVerifier) hold(instance string, seq int64, hash string, at logPlace) {
	key := instanceSeq{instance, seq}
	if _, seen := v.held[key]; v.wanted[key] && !seen {
		v.held[key] = heldEvent{hash: hash, at: at}
	}
}

// crashCut records a cut and reports true when the line after a gap is the
// audit_started of a process that went on, after an unclean stop, from a head saved
// at the gap's end: the head is saved before each batch is written (batch.go), so a
// crash between the two loses that batch, and this is what it looks like.
func (v *chainVerifier) crashCut(l *Line, instance string, last, seq int64, here logPlace) bool {
	saved, ok := l.Int("saved_seq")
	if l.Event() != EventAuditStarted || l.Text("previous_stop") != StopUnclean || !ok || saved+1 != seq {
		return false
	}
	v.res.Cuts = append(v.res.Cuts, ChainCut{Instance: instance, FromSeq: last + 1, ToSeq: saved, Source: CutCrash,
		Detail: fmt.Sprintf("the process writing them stopped uncleanly; the next one went on from the head saved before their write, at %s", here)})
	return true
}

// savedHeadCut is the cut between the files' last event of an instance and its saved
// head; the head's state says whether the instance was still writing.
func savedHeadCut(h ChainHead, last int64, lastAt logPlace) ChainCut {
	detail := fmt.Sprintf("the head saved in storage is seq %d, the files end at seq %d (%s): ", h.Seq, last, lastAt)
	if h.State == headRunning {
		detail += "the instance did not stop cleanly (a crash loses its last batch), is still writing to a file not given, or the log was cut short"
	} else {
		detail += "the instance stopped cleanly after writing them, so the newest file is not given, or the log was cut short"
	}
	return ChainCut{Instance: h.Instance, FromSeq: last + 1, ToSeq: h.Seq, Source: CutSavedHead, Detail: detail}
}

// checkpointLine checks a checkpoint event: its statement must match its own place in
// the chain and the event it covers, and with keys its signature must verify. It
// returns what is wrong, or "".
func (v *chainVerifier) checkpointLine(l *Line, st *instanceState, seq int64) string {
	v.res.Checkpoints++
	cp, signature, err := checkpointOf(l)
	if err != nil {
		return err.Error() + ": the line was edited"
	}
	var problems []string
	if cp.Seq != seq-1 {
		problems = append(problems, fmt.Sprintf("the checkpoint at seq %d says its head is seq %d, not the event just before it (seq %d)", seq, cp.Seq, seq-1))
	}
	if want := cp.Seq - cp.FromSeq + 1; cp.Count != want {
		problems = append(problems, fmt.Sprintf("its count %d is not head_seq − from_seq + 1 = %d", cp.Count, want))
	}
	if r, ok := st.recall(cp.Seq); ok && r.hash != cp.Head {
		problems = append(problems, fmt.Sprintf("its head is not the hash of seq %d (%s): that line or this one was edited", cp.Seq, relPlace(r.at, logPlace{l.File, l.Line})))
	}
	if v.keys == nil {
		v.res.CheckpointsUnchecked++
	} else if err := VerifyCheckpoint(v.keys, cp, signature); err != nil {
		problems = append(problems, err.Error())
	} else if len(problems) == 0 {
		v.res.CheckpointsVerified++
	}
	if len(problems) == 0 {
		return ""
	}
	return "checkpoint: " + strings.Join(problems, "; ")
}

// finishWitnessed compares the witnessed checkpoints with the files, after the scan:
// each must verify; the events it names must be the files' own; one past the files'
// end of its instance is a cut up to it.
func (v *chainVerifier) finishWitnessed(witnessed []WitnessedCheckpoint) {
	furthest := make(map[string]WitnessedCheckpoint)
	for _, w := range witnessed {
		cp := w.Checkpoint
		if err := VerifyCheckpoint(v.keys, cp, w.Signature); err != nil {
			v.brk(logPlace{w.File, w.Line}, cp.Instance, w.Seq, "witness "+w.place()+": "+err.Error()+": the witness file was edited, or holds a forged checkpoint")
			continue
		}
		v.res.Witnessed++
		st := v.states[cp.Instance]
		if st == nil {
			v.res.WitnessedNotInFiles = append(v.res.WitnessedNotInFiles, w)
			continue
		}
		if h, ok := v.held[instanceSeq{cp.Instance, cp.Seq}]; ok && h.hash != cp.Head {
			v.brk(h.at, cp.Instance, cp.Seq, fmt.Sprintf("seq %d of instance %s is not the event the witness saw as a checkpoint's head (witness %s, %s): the log was rewritten after the witness saw it",
				cp.Seq, cp.Instance, w.place(), cp.Time))
		} else if h, ok := v.held[instanceSeq{cp.Instance, w.Seq}]; ok && h.hash != w.Hash {
			v.brk(h.at, cp.Instance, w.Seq, fmt.Sprintf("the checkpoint at seq %d of instance %s is not the one the witness holds (witness %s): this line was edited",
				w.Seq, cp.Instance, w.place()))
		}
		if f, ok := furthest[cp.Instance]; st.last < w.Seq && (!ok || w.Seq > f.Seq) {
			furthest[cp.Instance] = w
		}
	}
	for _, instance := range v.order {
		w, ok := furthest[instance]
		if !ok {
			continue
		}
		st := v.states[instance]
		v.res.Cuts = append(v.res.Cuts, ChainCut{Instance: instance, FromSeq: st.last + 1, ToSeq: w.Seq, Source: CutWitness,
			Detail: fmt.Sprintf("the witness holds the checkpoint at seq %d (witness %s, %s), covering %s up to seq %d; the files end at seq %d (%s)",
				w.Seq, w.place(), w.Checkpoint.Time, words.Plural(w.Checkpoint.Count, "event"), w.Checkpoint.Seq, st.last, st.lastAt)})
	}
}
