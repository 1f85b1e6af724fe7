package audit

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"strconv"

	"github.com/caddy-jit/caddy-jit/internal/words"
)

// Verifying the chain of an audit log: every line links to the one before it on its
// instance (chain.go); a break says where and why.

// MaxReportedBreaks bounds the breaks a verification lists; it counts them all.
const MaxReportedBreaks = 100

// VerifyOptions are the verification's settings.
type VerifyOptions struct {
	// Heads are the chain heads saved in storage (LoadChainHeads). With CheckHeads, an
	// instance whose events in the files end before its saved head is reported as a
	// cut, and the event at a head's seq must have the head's hash.
	Heads      []ChainHead
	CheckHeads bool
	// AuditKeys check the checkpoints' signatures; without them the checkpoints are
	// counted as unchecked.
	AuditKeys AuditKeys
	// Witnessed are the checkpoints a witness holds (ReadWitnessFile); they need
	// AuditKeys, as an unsigned claim proves nothing.
	Witnessed []WitnessedCheckpoint
	// Instances, when set, are the instances whose logs the files hold: the saved heads
	// and witnessed checkpoints of other instances are not expected in the files (a
	// cluster's machines keep their own logs but share the storage), and an event of
	// another instance is a break. Unset, every instance the heads or the witness know
	// must have its events in the files: one with none was emptied, or is a cut.
	Instances []string
}

// ChainBreak is a place where the chain does not hold.
type ChainBreak struct {
	File     string `json:"file"`
	Line     int    `json:"line"`
	Instance string `json:"instance,omitempty"`
	Seq      int64  `json:"seq,omitempty"`
	Reason   string `json:"reason"`
	// Suspect is the line most likely changed, file:line, when it is not this one: the
	// previous event of the instance when this one's prev does not match its hash.
	Suspect string `json:"suspect,omitempty"`
}

// String is file:line: reason.
func (b ChainBreak) String() string { return fmt.Sprintf("%s:%d: %s", b.File, b.Line, b.Reason) }

// InstanceChain sums up one instance's events in the files.
type InstanceChain struct {
	Instance  string `json:"instance"`
	Events    int64  `json:"events"`
	FirstSeq  int64  `json:"first_seq"`
	LastSeq   int64  `json:"last_seq"`
	First     string `json:"first"` // file:line
	Last      string `json:"last"`
	FirstTime string `json:"first_time,omitempty"`
	LastTime  string `json:"last_time,omitempty"`
	// SavedHeadSeq is the head saved in storage, when heads were checked.
	SavedHeadSeq *int64 `json:"saved_head_seq,omitempty"`
}

// ChainVerification is the outcome of VerifyChain.
type ChainVerification struct {
	Files     []string        `json:"files"`
	Lines     int64           `json:"lines"`
	Events    int64           `json:"events"`
	Instances []InstanceChain `json:"instances"`
	Intact    bool            `json:"intact"`
	// Breaks are the first MaxReportedBreaks breaks in file order (truncations last);
	// BreakCount counts them all.
	Breaks       []ChainBreak `json:"breaks"`
	BreakCount   int          `json:"break_count"`
	HeadsChecked bool         `json:"heads_checked"`
	// SavedHeads counts the heads compared with.
	SavedHeads int `json:"saved_heads"`
	// HeadsNotInFiles are saved heads of instances left out by Instances, with no
	// event in the files: their logs are elsewhere (another machine of a cluster).
	HeadsNotInFiles []ChainHead `json:"heads_not_in_files,omitempty"`
	CheckpointTotals
	// Cut: events are missing (Cuts says which), which is not a break: a crash loses
	// the last batch, and only the saved heads and the witness tell a log cut short.
	Cut  bool       `json:"cut"`
	Cuts []ChainCut `json:"cuts"`
}

// FirstBreak is the first break, or nil for an intact chain.
func (v *ChainVerification) FirstBreak() *ChainBreak {
	if len(v.Breaks) == 0 {
		return nil
	}
	return &v.Breaks[0]
}

// logPlace is where a line is: file and line number.
type logPlace struct {
	file string
	line int
}

func (p logPlace) String() string { return p.file + ":" + strconv.Itoa(p.line) }

// recentHashes is how many of an instance's last hashes are kept, to tell a copied
// line and a forked chain from other disorder.
const recentHashes = 1024

type recentHash struct {
	seq  int64
	hash string
	at   logPlace
}

type instanceState struct {
	sum       InstanceChain
	min, max  int64 // the lowest and highest seqs seen, wherever: the files may be out of order
	minAt     logPlace
	maxAt     logPlace
	gaps      []seqGap // every gap, so that a seq the heads or witness name can be placed
	last      int64
	lastHash  string // "" when unknown (the line could not be hashed)
	lastAt    logPlace
	lastFile  string // the file of the instance's last line
	recent    []recentHash
	gapFrom   int64 // the seqs the last gap skipped
	gapTo     int64
	gapBreak  int // index in Breaks of the gap's break, or -1
	gapFilled bool
}

func (s *instanceState) remember(seq int64, hash string, at logPlace) {
	if s.recent == nil {
		s.recent = make([]recentHash, recentHashes)
	}
	s.recent[seq%recentHashes] = recentHash{seq: seq, hash: hash, at: at}
}

func (s *instanceState) recall(seq int64) (recentHash, bool) {
	if s.recent == nil || seq < 1 {
		return recentHash{}, false
	}
	r := s.recent[seq%recentHashes]
	return r, r.seq == seq && r.hash != ""
}

// seqGap is a run of seqs a line jumped over: a crash cut, or a break.
type seqGap struct {
	from, to int64
	crash    bool
	at       logPlace // the line after the gap
}

type chainVerifier struct {
	res    *ChainVerification
	scope  map[string]bool // Instances; nil: all
	states map[string]*instanceState
	order  []string
	heads  map[string]ChainHead
	keys   AuditKeys // nil: signatures are not checked
	// held are the hashes of the events the witnessed checkpoints name, as the
	// files hold them (wanted lists which, before the scan).
	wanted map[instanceSeq]bool
	held   map[instanceSeq]heldEvent
	// tornAt is the place of the line being read when it began with a torn fragment.
	tornAt *logPlace
}

// VerifyChain checks the chain of every instance through the inputs, in order: per
// instance, each event must follow the previous one (seq one more, prev its hash);
// the first event seen of an instance may start anywhere (older files rotated away),
// but a seq 1 has an empty prev. After the scan, the saved heads and the witness are
// compared with the files (verify_coverage.go). Breaks are located by file:line and
// said in plain words. An error is returned only when a file cannot be read.
func VerifyChain(inputs []Input, opts VerifyOptions) (*ChainVerification, error) {
	if len(opts.Witnessed) > 0 && len(opts.AuditKeys) == 0 {
		return nil, errors.New("witnessed checkpoints are evidence only with the audit keys that signed them")
	}
	v := &chainVerifier{
		res: &ChainVerification{Files: make([]string, 0, len(inputs)), Breaks: []ChainBreak{}, HeadsChecked: opts.CheckHeads,
			SavedHeads: len(opts.Heads), Cuts: []ChainCut{}},
		states: make(map[string]*instanceState),
	}
	v.prepareCheckpoints(opts)
	if len(opts.Instances) > 0 {
		v.scope = make(map[string]bool, len(opts.Instances))
		for _, instance := range opts.Instances {
			v.scope[instance] = true
		}
	}
	for _, in := range inputs {
		v.res.Files = append(v.res.Files, in.Name)
	}
	if opts.CheckHeads {
		v.heads = make(map[string]ChainHead, len(opts.Heads))
		for _, h := range opts.Heads {
			v.heads[h.Instance] = h
			v.wanted[instanceSeq{h.Instance, h.Seq}] = true
		}
	}
	for _, in := range inputs {
		// A damaged compressed file is a break where its damage begins; the files
		// after it are still read, and the events lost in it show as a gap.
		var damaged *DamagedError
		if err := Scan([]Input{in}, v.line); errors.As(err, &damaged) {
			v.brk(logPlace{in.Name, damaged.Lines + 1}, "", 0, fmt.Sprintf("the %s file cannot be read past line %d (%v): it was cut short or its bytes were changed",
				damaged.Compression, damaged.Lines, damaged.Err))
		} else if err != nil {
			return nil, err
		}
	}
	v.finish(opts)
	v.finishWitnessed(opts.Witnessed)
	v.res.Intact = v.res.BreakCount == 0
	v.res.Cut = len(v.res.Cuts) > 0
	return v.res, nil
}

func (v *chainVerifier) brk(at logPlace, instance string, seq int64, reason string) int {
	v.res.BreakCount++
	if len(v.res.Breaks) >= MaxReportedBreaks {
		return -1
	}
	v.res.Breaks = append(v.res.Breaks, ChainBreak{File: at.file, Line: at.line, Instance: instance, Seq: seq, Reason: reason})
	return len(v.res.Breaks) - 1
}

// relPlace names a place seen from here: "line 16", or "file:16" in another file.
func relPlace(p logPlace, here logPlace) string {
	if p.file == here.file {
		return "line " + strconv.Itoa(p.line)
	}
	return p.String()
}

func isHexHash(s string) bool {
	if len(s) != sha256.Size*2 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// chainFields checks that the line carries the chain fields, and says what is wrong
// if not.
func chainFields(l *Line) (instance string, seq int64, prev string, problem string) {
	const not = "not a chained caddy-jit audit event: "
	for _, key := range []string{"event", FieldInstance, FieldSeq, FieldPrev, FieldTime} {
		f := l.field(key)
		switch {
		case f == nil:
			return "", 0, "", not + "it has no " + key + " field"
		case key == FieldSeq && f.kind != 'n':
			return "", 0, "", not + "its seq is not an integer"
		case key != FieldSeq && f.kind != 's':
			return "", 0, "", not + "its " + key + " is not a string"
		}
	}
	instance, prev = l.Text(FieldInstance), l.Text(FieldPrev)
	seq, ok := l.Int(FieldSeq)
	switch {
	case instance == "":
		return "", 0, "", not + "its instance is empty"
	case !ok || seq < 1:
		return "", 0, "", not + "its seq is not a positive integer"
	case prev != "" && !isHexHash(prev):
		return "", 0, "", not + "its prev is not a SHA-256 in hex"
	}
	if _, ok := l.Time(FieldTime); !ok {
		return "", 0, "", not + "its time is not an RFC 3339 time"
	}
	return instance, seq, prev, ""
}

func (v *chainVerifier) line(l *Line) error {
	v.res.Lines++
	here := logPlace{l.File, l.Line}
	if l.Problem != "" {
		if !v.tornBeforeCrash(l) {
			v.brk(here, "", 0, l.Problem)
			return nil
		}
		v.tornAt, l = &here, l.torn
	}
	defer func() { v.tornAt = nil }()
	instance, seq, prev, problem := chainFields(l)
	if problem != "" {
		v.brk(here, "", 0, problem)
		return nil
	}
	v.res.Events++
	hash, hashErr := l.Hash()

	st := v.states[instance]
	var reason string
	breakIndex := -2 // not yet recorded
	accept := true
	if st == nil {
		st = &instanceState{sum: InstanceChain{Instance: instance, FirstSeq: seq, First: here.String(), FirstTime: l.Text(FieldTime)}, gapBreak: -1}
		v.states[instance] = st
		v.order = append(v.order, instance)
		reason = v.unknownInstance(instance)
		if reason == "" && seq == 1 && prev != "" {
			reason = fmt.Sprintf("seq 1 of instance %s links to a previous event (prev is set): the first event of a chain links to none, so this line was edited", instance)
		}
	} else {
		newFile := st.lastFile != l.File
		filesHint := ""
		if newFile {
			filesHint = " (are the files in order? Give rotated files first, oldest first)"
		}
		switch want := st.last + 1; {
		case seq == want:
			if st.lastHash != "" && prev != st.lastHash {
				r := relPlace(st.lastAt, here)
				reason = fmt.Sprintf("prev does not match the hash of %s (seq %d): %s was edited, or a line was removed or inserted", r, st.last, r)
				if i := v.brk(here, instance, seq, reason); i >= 0 {
					v.res.Breaks[i].Suspect = st.lastAt.String()
				}
				breakIndex = -1
			}
		case seq > want && v.crashCut(l, instance, st.last, seq, here):
			// The events between were lost in a crash, not removed: no break, and
			// this line's prev names an event that was never written.
			st.gapFrom, st.gapTo, st.gapBreak, st.gapFilled = want, seq-1, -1, false
			st.gaps = append(st.gaps, seqGap{from: want, to: seq - 1, crash: true, at: here})
		case seq > want:
			missing := seq - want
			hint := ""
			if newFile {
				hint = " (is a rotated file missing from the list, or are the files out of order?)"
			}
			reason = fmt.Sprintf("seq %d of instance %s follows seq %d (%s): %s missing%s", seq, instance, st.last, relPlace(st.lastAt, here), words.Plural(missing, "event"), hint)
			breakIndex = v.brk(here, instance, seq, reason)
			st.gapFrom, st.gapTo, st.gapBreak, st.gapFilled = want, seq-1, breakIndex, false
			st.gaps = append(st.gaps, seqGap{from: want, to: seq - 1, at: here})
		case seq >= st.gapFrom && seq <= st.gapTo && !newFile:
			// A seq the last gap skipped: lines were moved. The chain goes on from
			// the gap's line, not from here.
			accept = false
			reason = fmt.Sprintf("seq %d of instance %s comes after seq %d (%s): lines reordered", seq, instance, st.last, relPlace(st.lastAt, here))
			if !st.gapFilled && st.gapBreak >= 0 {
				st.gapFilled = true
				v.res.Breaks[st.gapBreak].Reason += fmt.Sprintf("; seq %d appears later, at %s: lines reordered", seq, here)
			}
			if p, ok := st.recall(seq - 1); ok && hashErr == nil && p.hash != prev {
				reason += fmt.Sprintf(", and its prev does not match the hash of %s (seq %d): that line or this one was edited", relPlace(p.at, here), seq-1)
			}
			if hashErr == nil {
				st.remember(seq, hash, here)
			}
		default: // seq <= st.last
			if r, ok := st.recall(seq); ok && hashErr == nil && r.hash == hash && !newFile {
				accept = false
				reason = fmt.Sprintf("seq %d of instance %s repeats %s: a copy of that line was inserted", seq, instance, relPlace(r.at, here))
			} else if seq == 1 {
				reason = fmt.Sprintf("seq 1 of instance %s follows seq %d (%s): the chain started over (its head in storage was lost?), or lines were inserted%s",
					instance, st.last, relPlace(st.lastAt, here), filesHint)
			} else if p, ok := st.recall(seq - 1); ok && p.hash == prev && !newFile {
				reason = fmt.Sprintf("seq %d of instance %s was used before (the event after %s): the chain forks here: the instance went on from an older saved chain head (it stopped without saving its head, e.g. a crash), or a forged line was inserted",
					seq, instance, relPlace(p.at, here))
			} else {
				accept = newFile // out-of-order files: go on from the new file's first line
				reason = fmt.Sprintf("seq %d of instance %s follows seq %d (%s): lines reordered or inserted%s", seq, instance, st.last, relPlace(st.lastAt, here), filesHint)
			}
		}
	}
	if reason == "" && hashErr == nil && v.heads != nil {
		if h, ok := v.heads[instance]; ok && h.Seq == seq && h.Hash != hash {
			reason = fmt.Sprintf("seq %d of instance %s is not the event saved as its chain head in storage: this line was edited, or the log rewritten from here on", seq, instance)
		}
	}
	if reason == "" && hashErr != nil {
		reason = hashErr.Error()
	}
	if reason == "" {
		reason = envelopeProblem(l)
	}
	if reason != "" && breakIndex == -2 {
		v.brk(here, instance, seq, reason)
	}
	if l.Event() == EventCheckpoint {
		if problem := v.checkpointLine(l, st, seq); problem != "" {
			v.brk(here, instance, seq, problem)
		}
	}
	if hashErr == nil {
		v.hold(instance, seq, hash, here)
	}

	st.sum.Events++
	if seq > st.max {
		st.max, st.maxAt = seq, here
	}
	if st.min == 0 || seq < st.min {
		st.min, st.minAt = seq, here
	}
	if accept {
		st.last, st.lastAt, st.lastHash = seq, here, hash
		st.sum.LastSeq, st.sum.Last, st.sum.LastTime = seq, here.String(), l.Text(FieldTime)
		if hashErr == nil {
			st.remember(seq, hash, here)
		}
	}
	st.lastFile = l.File
	return nil
}
