package audit

import (
	"bytes"
	"fmt"
	"os"
	"strings"
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
	// WitnessLinesEdited are witnessed checkpoints whose signature verifies but whose
	// line's unsigned fields (seq, prev, kid) do not match it: the witness file was
	// edited. Not a break of the log; their signed statement is still compared.
	WitnessLinesEdited []WitnessedCheckpoint `json:"witness_lines_edited,omitempty"`
}

// WitnessedCheckpoint is one checkpoint a witness received, as its file holds it.
type WitnessedCheckpoint struct {
	File string `json:"file"`
	Line int    `json:"line"`
	// Seq is the checkpoint event's own seq, Checkpoint.Seq + 1: taken from the signed
	// statement, never from the line's unsigned seq. Hash is the line's hash.
	Seq        int64      `json:"seq"`
	Hash       string     `json:"hash"`
	Checkpoint Checkpoint `json:"checkpoint"`
	Signature  string     `json:"-"`
	// Problem says how the line's unsigned fields contradict its signed statement
	// (the line was edited after the server sent it), or is "".
	Problem string `json:"problem,omitempty"`
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
	_, seq, prev, problem := chainFields(l)
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
	w := WitnessedCheckpoint{File: l.File, Line: l.Line, Seq: cp.Seq + 1, Hash: hash, Checkpoint: cp, Signature: signature}
	// The line's seq, prev and kid are not signed: they must agree with what is, or
	// the line was edited; its place is then the signed one.
	var edited []string
	if seq != w.Seq {
		edited = append(edited, fmt.Sprintf("its seq %d is not head_seq + 1 = %d", seq, w.Seq))
	}
	if prev != "" && prev != cp.Head {
		edited = append(edited, "its prev is not the signed head")
	}
	if p := checkpointKeyProblem(l, signature); p != "" {
		edited = append(edited, p)
	}
	if len(edited) > 0 {
		w.Problem = "witness line edited: " + strings.Join(edited, "; ") + " (the signed statement is compared, not the line)"
	}
	return w, nil
}

// checkpointKeyProblem says how a checkpoint line's kid field, which is not signed,
// differs from the kid its signature's protected header names, or "". A signature
// that cannot be read is left to VerifyCheckpoint to report.
func checkpointKeyProblem(l *Line, signature string) string {
	kid, err := CheckpointKeyID(signature)
	if err != nil {
		return ""
	}
	if field := l.Text(FieldKeyID); field != kid {
		return fmt.Sprintf("its kid %q is not the signing key %q", field, kid)
	}
	return ""
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
	detail := fmt.Sprintf("the process writing them stopped uncleanly; the next one went on from the head saved before their write, at %s", here)
	if v.tornAt != nil {
		detail += ", after a torn line (the start of the lost write)"
	}
	v.res.Cuts = append(v.res.Cuts, ChainCut{Instance: instance, FromSeq: last + 1, ToSeq: saved, Source: CutCrash, Detail: detail})
	return true
}

// tornBeforeCrash reports whether a line that is not JSON is the fragment a kill -9
// leaves of a batched write, followed on the same line by the next process's
// audit_started, which says it went on past the fragment's events after an unclean
// stop. Anything else not JSON stays a break.
func (v *chainVerifier) tornBeforeCrash(l *Line) bool {
	rest := l.torn
	if rest == nil || rest.Event() != EventAuditStarted || rest.Text("previous_stop") != StopUnclean {
		return false
	}
	instance, seq, _, problem := chainFields(rest)
	saved, ok := rest.Int("saved_seq")
	st := v.states[instance]
	return problem == "" && ok && st != nil && saved+1 == seq && seq > st.last+1
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
	if p := checkpointKeyProblem(l, signature); p != "" {
		problems = append(problems, p+": the line was edited")
	}
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
