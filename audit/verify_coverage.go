package audit

import (
	"fmt"
	"slices"

	"github.com/caddy-jit/caddy-jit/internal/words"
)

// What the saved heads and the witness say the files must hold, compared after the
// scan. The files alone cannot tell an emptied log, or one replaced by a chain of a new
// instance, from a log that never was: the heads and the witness can, so with them
// verification fails closed. An instance they know with no event in the files is a cut
// of its whole chain, an event of an instance the heads do not know is a break, and an
// event they name must be in the files wherever later events of its instance are.

// inScope reports whether the heads and the witness of instance are compared with the
// files: all instances, or those VerifyOptions.Instances names.
func (v *chainVerifier) inScope(instance string) bool { return v.scope == nil || v.scope[instance] }

// unknownInstance says why the first event of an instance is a break when the heads or
// the instances given do not know it, or "".
func (v *chainVerifier) unknownInstance(instance string) string {
	if v.scope != nil && !v.scope[instance] {
		return fmt.Sprintf("instance %s is not one of the instances named (--instance): name it too, or leave out the files of other instances", instance)
	}
	if _, ok := v.heads[instance]; len(v.heads) > 0 && !ok {
		// Every instance saves its head before it writes a batch and at every stop: one
		// unknown to the storage did not write with it.
		return fmt.Sprintf("instance %s has no saved head in this storage: not written by this config's instances, or storage was reset", instance)
	}
	return ""
}

// finish compares the saved heads with the files and sums up each instance.
func (v *chainVerifier) finish(opts VerifyOptions) {
	for _, instance := range v.order {
		st := v.states[instance]
		if h, ok := v.heads[instance]; ok {
			seq := h.Seq
			st.sum.SavedHeadSeq = &seq
			if st.max < h.Seq {
				v.res.Cuts = append(v.res.Cuts, savedHeadCut(h, st.max, st.maxAt))
			} else {
				v.mustHold(st, h.Seq, "the chain head saved in storage")
			}
		}
		v.res.Instances = append(v.res.Instances, st.sum)
	}
	if opts.CheckHeads {
		for _, h := range opts.Heads {
			switch {
			case v.states[h.Instance] != nil:
			case v.inScope(h.Instance):
				v.res.Cuts = append(v.res.Cuts, ChainCut{Instance: h.Instance, FromSeq: 1, ToSeq: h.Seq, Source: CutSavedHead,
					Detail: fmt.Sprintf("the head saved in storage is seq %d, and the files hold no event of the instance: its log was emptied or replaced, or is not in the files given (a cluster's machines: name the instances whose logs these are with --instance)", h.Seq)})
			default:
				v.res.HeadsNotInFiles = append(v.res.HeadsNotInFiles, h)
			}
		}
	}
	if v.res.Instances == nil {
		v.res.Instances = []InstanceChain{}
	}
}

// mustHold checks that the event at seq, which what names (a saved head, a witnessed
// checkpoint), is in the files when later events of the instance are. A crash gap
// cannot hold it: the head is saved before each batch is written and a checkpoint is
// sent after its batch is, so the saved head is always past a crash's gap and a
// witnessed checkpoint always written; an audit_started that says otherwise is forged
// to hide a deletion. A gap already reported as a break is not reported twice.
// It reports whether the event is there (or cannot be expected).
func (v *chainVerifier) mustHold(st *instanceState, seq int64, what string) bool {
	instance := st.sum.Instance
	if _, ok := v.held[instanceSeq{instance, seq}]; ok || seq < st.min || seq > st.max {
		return true
	}
	for _, g := range st.gaps {
		if seq < g.from || seq > g.to {
			continue
		}
		if g.crash {
			v.brk(g.at, instance, seq, fmt.Sprintf("seq %d of instance %s is %s, but this audit_started says seq %d–%d were lost in a crash: a crash never loses a saved head or a witnessed checkpoint, so this line is forged to hide events removed",
				seq, instance, what, g.from, g.to))
		}
		return false
	}
	v.brk(st.maxAt, instance, seq, fmt.Sprintf("seq %d of instance %s is %s, but it is not in the files though later events of the instance are (up to seq %d, here): it was removed",
		seq, instance, what, st.max))
	return false
}

// finishWitnessed compares the witnessed checkpoints with the files, after the scan:
// each must verify; the events it names must be the files' own; one past the files'
// end of its instance is a cut up to it, and one before their start a cut at the start.
func (v *chainVerifier) finishWitnessed(witnessed []WitnessedCheckpoint) {
	furthest := make(map[string]WitnessedCheckpoint)
	earliest := make(map[string]WitnessedCheckpoint)
	var absent []string // instances witnessed, in scope, with no event in the files
	for _, w := range witnessed {
		cp := w.Checkpoint
		if err := VerifyCheckpoint(v.keys, cp, w.Signature); err != nil {
			v.brk(logPlace{w.File, w.Line}, cp.Instance, w.Seq, "witness "+w.place()+": "+err.Error()+": the witness file was edited, or holds a forged checkpoint")
			continue
		}
		v.res.Witnessed++
		if w.Problem != "" {
			// Only the line's unsigned fields were edited: its signed statement still
			// counts, but not the hash of the line, which is not the one sent.
			v.res.WitnessLinesEdited = append(v.res.WitnessLinesEdited, w)
		}
		st := v.states[cp.Instance]
		if st == nil {
			if !v.inScope(cp.Instance) {
				v.res.WitnessedNotInFiles = append(v.res.WitnessedNotInFiles, w)
				continue
			}
			if _, ok := furthest[cp.Instance]; !ok {
				absent = append(absent, cp.Instance)
			}
		} else {
			v.compareWitnessed(st, w)
		}
		if f, ok := furthest[cp.Instance]; (st == nil || st.max < w.Seq) && (!ok || w.Seq > f.Seq) {
			furthest[cp.Instance] = w
		}
		if e, ok := earliest[cp.Instance]; st != nil && w.Seq < st.min && (!ok || w.Seq < e.Seq) {
			earliest[cp.Instance] = w
		}
	}
	for _, instance := range slices.Concat(v.order, absent) {
		if w, ok := earliest[instance]; ok {
			st := v.states[instance]
			v.res.Cuts = append(v.res.Cuts, ChainCut{Instance: instance, FromSeq: 1, ToSeq: st.min - 1, Source: CutWitness,
				Detail: fmt.Sprintf("the witness holds the checkpoint at seq %d (witness %s, %s); the files begin at seq %d (%s): the events before are not in the files given (older rotated files not given, or removed)",
					w.Seq, w.place(), w.Checkpoint.Time, st.min, st.minAt)})
		}
		w, ok := furthest[instance]
		if !ok {
			continue
		}
		from, end := int64(1), "the files hold no event of the instance: its log was emptied or replaced, or is not in the files given (name the instances whose logs these are with --instance)"
		if st := v.states[instance]; st != nil {
			from, end = st.max+1, fmt.Sprintf("the files end at seq %d (%s)", st.max, st.maxAt)
		}
		v.res.Cuts = append(v.res.Cuts, ChainCut{Instance: instance, FromSeq: from, ToSeq: w.Seq, Source: CutWitness,
			Detail: fmt.Sprintf("the witness holds the checkpoint at seq %d (witness %s, %s), covering %s up to seq %d; %s",
				w.Seq, w.place(), w.Checkpoint.Time, words.Plural(w.Checkpoint.Count, "event"), w.Checkpoint.Seq, end)})
	}
}

// compareWitnessed checks that the events a verified witnessed checkpoint names are
// the files' own, and there wherever later events of the instance are.
func (v *chainVerifier) compareWitnessed(st *instanceState, w WitnessedCheckpoint) {
	cp := w.Checkpoint
	if h, ok := v.held[instanceSeq{cp.Instance, cp.Seq}]; ok && h.hash != cp.Head {
		v.brk(h.at, cp.Instance, cp.Seq, fmt.Sprintf("seq %d of instance %s is not the event the witness saw as a checkpoint's head (witness %s, %s): the log was rewritten after the witness saw it",
			cp.Seq, cp.Instance, w.place(), cp.Time))
		return
	}
	if h, ok := v.held[instanceSeq{cp.Instance, w.Seq}]; ok && w.Problem == "" && h.hash != w.Hash {
		v.brk(h.at, cp.Instance, w.Seq, fmt.Sprintf("the checkpoint at seq %d of instance %s is not the one the witness holds (witness %s): this line was edited",
			w.Seq, cp.Instance, w.place()))
		return
	}
	// The checkpoint first: when it is missing, so is its head, and one break says it.
	if v.mustHold(st, w.Seq, fmt.Sprintf("a checkpoint the witness holds (witness %s)", w.place())) {
		v.mustHold(st, cp.Seq, fmt.Sprintf("the head of a checkpoint the witness holds (witness %s)", w.place()))
	}
}
