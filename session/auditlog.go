package session

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/klauspost/compress/zstd"

	"github.com/caddy-jit/caddy-jit/policy"
)

// Reading audit logs back: the lines as the chain writer (chain.go) and the log encoder
// made them, the chain's verification, one session's story and the periodic report.
// Everything here is pure analysis of files: no Caddy, no storage, no clock; the
// caller passes the time and the policy.

// maxAuditLine bounds one line of an audit log; caddy-jit's events are far smaller.
const maxAuditLine = 16 << 20

// AuditInput is one audit log file. Open is called once per pass over the log, so
// that an analysis may read it more than once.
type AuditInput struct {
	Name string
	Open func() (io.ReadCloser, error)
}

// AuditFiles are the files at paths, read in that order: rotated files first.
func AuditFiles(paths ...string) []AuditInput {
	inputs := make([]AuditInput, len(paths))
	for i, p := range paths {
		inputs[i] = AuditInput{Name: p, Open: func() (io.ReadCloser, error) { return os.Open(p) }}
	}
	return inputs
}

// AuditData is a log held in memory, under a name for the places it reports.
func AuditData(name string, data []byte) AuditInput {
	return AuditInput{Name: name, Open: func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil }}
}

// Kinds of value a line can hold beside the canonical ones ('s', 'n', 'b', 'a'): the
// chain writer never writes them, so a line with one is not caddy-jit's as it stands.
const (
	kindFloat  = 'f'
	kindObject = 'o'
	kindNull   = 'z'
	kindMixed  = 'm' // an array with something other than strings
)

// AuditLine is one line of an audit log: where it is and its fields, in line order,
// with integers kept as their text.
type AuditLine struct {
	File string
	Line int
	// Problem says in plain words why the line is not an event at all (not JSON, not
	// one object, ...); the fields are empty then.
	Problem string
	fields  []canonicalValue
}

// Where is the line's place, file:line.
func (l *AuditLine) Where() string { return l.File + ":" + strconv.Itoa(l.Line) }

func (l *AuditLine) field(key string) *canonicalValue {
	for i := len(l.fields) - 1; i >= 0; i-- { // the last of duplicates, as encoding/json
		if l.fields[i].key == key {
			return &l.fields[i]
		}
	}
	return nil
}

// Has reports whether the line has the field, whatever its type.
func (l *AuditLine) Has(key string) bool { return l.field(key) != nil }

// Text returns a string field, or "" when the field is absent or not a string.
func (l *AuditLine) Text(key string) string {
	if f := l.field(key); f != nil && f.kind == 's' {
		return f.str
	}
	return ""
}

// Int returns an integer field.
func (l *AuditLine) Int(key string) (int64, bool) {
	if f := l.field(key); f != nil && f.kind == 'n' {
		n, err := strconv.ParseInt(f.str, 10, 64)
		return n, err == nil
	}
	return 0, false
}

// Bool returns a boolean field; absent or not a boolean is false.
func (l *AuditLine) Bool(key string) bool {
	f := l.field(key)
	return f != nil && f.kind == 'b' && f.str == "true"
}

// Strings returns an array-of-strings field.
func (l *AuditLine) Strings(key string) []string {
	if f := l.field(key); f != nil && f.kind == 'a' {
		return f.arr
	}
	return nil
}

// Time returns a field holding an RFC 3339 time.
func (l *AuditLine) Time(key string) (time.Time, bool) {
	s := l.Text(key)
	if s == "" {
		return time.Time{}, false
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	return t, err == nil
}

// Event is the event's name.
func (l *AuditLine) Event() string { return l.Text("event") }

// At is when the event was written: its chain field time.
func (l *AuditLine) At() time.Time {
	t, _ := l.Time(FieldTime)
	return t
}

// Fields returns the fields as JSON values: strings, json.Number, bools and string
// slices (an object or an array of other values shows as the string "(object)" or
// "(array)"; null as nil).
func (l *AuditLine) Fields() map[string]any {
	m := make(map[string]any, len(l.fields))
	for _, f := range l.fields {
		switch f.kind {
		case 's':
			m[f.key] = f.str
		case 'n', kindFloat:
			m[f.key] = json.Number(f.str)
		case 'b':
			m[f.key] = f.str == "true"
		case 'a':
			m[f.key] = f.arr
		case kindObject:
			m[f.key] = "(object)"
		case kindMixed:
			m[f.key] = "(array)"
		default:
			m[f.key] = nil
		}
	}
	return m
}

func isEnvelopeKey(key string) bool { return slices.Contains(EnvelopeKeys, key) }

// Canonical appends the event's canonical bytes to buf: every field but the envelope,
// sorted by key, written by the chain writer's own appendCanonical, so that writing
// and verifying cannot disagree. A field of a type the writer never writes is an
// error.
func (l *AuditLine) Canonical(buf []byte) ([]byte, error) {
	if l.Problem != "" {
		return buf, errors.New(l.Problem)
	}
	values := make([]canonicalValue, 0, len(l.fields))
	for _, f := range l.fields {
		if isEnvelopeKey(f.key) {
			continue
		}
		switch f.kind {
		case 's', 'n', 'b', 'a':
		default:
			return buf, fmt.Errorf("its field %q holds %s: caddy-jit writes only strings, integers, booleans and arrays of strings (not a caddy-jit event as it stands)",
				f.key, kindName(f.kind))
		}
		values = append(values, f)
	}
	// As the writer sorts (Chain.canonical): stable, so duplicate keys keep their order.
	slices.SortStableFunc(values, func(a, b canonicalValue) int { return compareStrings(a.key, b.key) })
	for _, v := range values {
		buf = appendCanonical(buf, v)
	}
	return buf, nil
}

// Hash is the SHA-256 of the canonical bytes, in hex: what the next event of the
// same instance carries as prev.
func (l *AuditLine) Hash() (string, error) {
	b, err := l.Canonical(nil)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:]), nil
}

// ChainHash is the chain hash of one line of an audit log (a JSON object, with or
// without its newline): the SHA-256 of its canonical bytes, in hex, which the next
// event of its instance carries as prev.
func ChainHash(line []byte) (string, error) {
	return ParseAuditLine("", 0, bytes.TrimSuffix(line, []byte{'\n'})).Hash()
}

// VerifyLine checks that a line links to the event whose hash is prevHash ("" for the
// first event of a chain), and returns its own hash.
func VerifyLine(line []byte, prevHash string) (string, error) {
	l := ParseAuditLine("", 0, bytes.TrimSuffix(line, []byte{'\n'}))
	if l.Problem != "" {
		return "", errors.New(l.Problem)
	}
	if _, _, prev, problem := chainFields(l); problem != "" {
		return "", errors.New(problem)
	} else if prev != prevHash {
		return "", fmt.Errorf("prev %q does not match the hash of the previous event %q", prev, prevHash)
	}
	return l.Hash()
}

func kindName(k byte) string {
	switch k {
	case kindFloat:
		return "a number with a fraction or exponent"
	case kindObject:
		return "an object"
	case kindNull:
		return "null"
	case kindMixed:
		return "an array of something other than strings"
	}
	return "a value of unknown type"
}

const notJSONProblem = "not a JSON object (a cut or edited line)"

// ParseAuditLine reads one line (without its newline) of an audit log.
func ParseAuditLine(file string, n int, data []byte) *AuditLine {
	l := &AuditLine{File: file, Line: n}
	switch {
	case len(bytes.TrimSpace(data)) == 0:
		l.Problem = "an empty line (caddy-jit writes none: a cut or edited file)"
		return l
	case !utf8.Valid(data):
		l.Problem = "not valid UTF-8 (caddy-jit writes only UTF-8: an edited line)"
		return l
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		l.Problem = notJSONProblem
		return l
	}
	for dec.More() {
		tok, err := dec.Token()
		key, ok := tok.(string)
		if err != nil || !ok {
			l.Problem, l.fields = notJSONProblem, nil
			return l
		}
		v, err := readAuditValue(dec)
		if err != nil {
			l.Problem, l.fields = notJSONProblem, nil
			return l
		}
		v.key = key
		l.fields = append(l.fields, v)
	}
	if tok, err := dec.Token(); err != nil || tok != json.Delim('}') {
		l.Problem, l.fields = notJSONProblem, nil
		return l
	}
	if _, err := dec.Token(); err != io.EOF {
		l.Problem, l.fields = "more than one JSON value on the line (an edited line)", nil
	}
	return l
}

// readAuditValue reads one JSON value into its canonical form.
func readAuditValue(dec *json.Decoder) (canonicalValue, error) {
	tok, err := dec.Token()
	if err != nil {
		return canonicalValue{}, err
	}
	switch t := tok.(type) {
	case string:
		return canonicalValue{kind: 's', str: t}, nil
	case json.Number:
		if strings.ContainsAny(string(t), ".eE") {
			return canonicalValue{kind: kindFloat, str: string(t)}, nil
		}
		return canonicalValue{kind: 'n', str: string(t)}, nil
	case bool:
		return canonicalValue{kind: 'b', str: strconv.FormatBool(t)}, nil
	case nil:
		return canonicalValue{kind: kindNull}, nil
	case json.Delim:
		switch t {
		case '[':
			v := canonicalValue{kind: 'a', arr: []string{}}
			for dec.More() {
				item, err := readAuditValue(dec)
				if err != nil {
					return v, err
				}
				if item.kind != 's' {
					v.kind = kindMixed
				}
				v.arr = append(v.arr, item.str)
			}
			if _, err := dec.Token(); err != nil { // ']'
				return v, err
			}
			if v.kind != 'a' {
				v.arr = nil
			}
			return v, nil
		case '{':
			for dec.More() {
				if _, err := dec.Token(); err != nil { // key
					return canonicalValue{}, err
				}
				if _, err := readAuditValue(dec); err != nil {
					return canonicalValue{}, err
				}
			}
			if _, err := dec.Token(); err != nil { // '}'
				return canonicalValue{}, err
			}
			return canonicalValue{kind: kindObject}, nil
		}
	}
	return canonicalValue{}, fmt.Errorf("unexpected JSON token %v", tok)
}

// ScanAudit calls fn with each line of the inputs, in order. It returns the first
// error of reading a file or of fn.
func ScanAudit(inputs []AuditInput, fn func(*AuditLine) error) error {
	for _, in := range inputs {
		if err := scanAuditInput(in, fn); err != nil {
			return err
		}
	}
	return nil
}

func scanAuditInput(in AuditInput, fn func(*AuditLine) error) error {
	rc, err := in.Open()
	if err != nil {
		return fmt.Errorf("reading the audit log: %w", err)
	}
	defer rc.Close()
	br := bufio.NewReaderSize(rc, 64<<10)
	// Rotated files are compressed by default (Caddy's roll_compression: gzip, or
	// zstd): read them as they are.
	compression := ""
	magic, _ := br.Peek(4)
	switch {
	case bytes.HasPrefix(magic, []byte{0x1f, 0x8b}):
		compression = "gzip"
		gz, err := gzip.NewReader(br)
		if err != nil {
			return fmt.Errorf("reading the audit log %s (gzip): %w", in.Name, err)
		}
		defer gz.Close()
		br = bufio.NewReaderSize(gz, 64<<10)
	case bytes.Equal(magic, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		compression = "zstd"
		zr, err := zstd.NewReader(br, zstd.WithDecoderConcurrency(1))
		if err != nil {
			return fmt.Errorf("reading the audit log %s (zstd): %w", in.Name, err)
		}
		defer zr.Close()
		br = bufio.NewReaderSize(zr, 64<<10)
	}
	var (
		buf     []byte
		tooLong bool
		n       int
	)
	for {
		chunk, err := br.ReadSlice('\n')
		if !tooLong && len(buf)+len(chunk) <= maxAuditLine+1 {
			buf = append(buf, chunk...)
		} else {
			tooLong, buf = true, buf[:0]
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if err != nil && !errors.Is(err, io.EOF) {
			if compression != "" {
				return fmt.Errorf("reading the audit log %s (%s): %w: the compressed file is cut short or damaged", in.Name, compression, err)
			}
			return fmt.Errorf("reading the audit log %s: %w", in.Name, err)
		}
		if len(buf) > 0 || tooLong {
			n++
			complete := len(buf) > 0 && buf[len(buf)-1] == '\n'
			var line *AuditLine
			if tooLong {
				line = &AuditLine{File: in.Name, Line: n, Problem: fmt.Sprintf("a line longer than %d MiB (caddy-jit writes none)", maxAuditLine>>20)}
			} else {
				line = ParseAuditLine(in.Name, n, bytes.TrimSuffix(buf, []byte{'\n'}))
				if !complete && line.Problem == notJSONProblem {
					line.Problem += ": the file ends in the middle of it"
				}
			}
			if ferr := fn(line); ferr != nil {
				return ferr
			}
		}
		if err != nil { // io.EOF
			return nil
		}
		buf, tooLong = buf[:0], false
	}
}

// ---------------------------------------------------------------------------------
// Verifying the chain

// MaxReportedBreaks bounds the breaks a verification lists; it counts them all.
const MaxReportedBreaks = 100

// VerifyOptions are the verification's settings.
type VerifyOptions struct {
	// Heads are the chain heads saved in storage (LoadChainHeads). With CheckHeads, an
	// instance whose events in the files end before its saved head is reported as
	// truncated, and the event at a head's seq must have the head's hash.
	Heads      []ChainHead
	CheckHeads bool
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
	// HeadsNotInFiles are saved heads of instances with no event in the files: their
	// logs are elsewhere (another machine of a cluster), or gone.
	HeadsNotInFiles []ChainHead `json:"heads_not_in_files,omitempty"`
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

type chainVerifier struct {
	res    *ChainVerification
	states map[string]*instanceState
	order  []string
	heads  map[string]ChainHead
}

// VerifyChain checks the chain of every instance through the inputs, in order: per
// instance, each event must follow the previous one (seq one more, prev its hash);
// the first event seen of an instance may start anywhere (older files rotated away),
// but a seq 1 has an empty prev. Breaks are located by file:line and said in plain
// words. An error is returned only when a file cannot be read.
func VerifyChain(inputs []AuditInput, opts VerifyOptions) (*ChainVerification, error) {
	v := &chainVerifier{
		res: &ChainVerification{Files: make([]string, 0, len(inputs)), Breaks: []ChainBreak{}, HeadsChecked: opts.CheckHeads,
			SavedHeads: len(opts.Heads)},
		states: make(map[string]*instanceState),
	}
	for _, in := range inputs {
		v.res.Files = append(v.res.Files, in.Name)
	}
	if opts.CheckHeads {
		v.heads = make(map[string]ChainHead, len(opts.Heads))
		for _, h := range opts.Heads {
			v.heads[h.Instance] = h
		}
	}
	if err := ScanAudit(inputs, v.line); err != nil {
		return nil, err
	}
	v.finish(opts)
	v.res.Intact = v.res.BreakCount == 0
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

func auditPlural(n int64, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return strconv.FormatInt(n, 10) + " " + word + "s"
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
func chainFields(l *AuditLine) (instance string, seq int64, prev string, problem string) {
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

func (v *chainVerifier) line(l *AuditLine) error {
	v.res.Lines++
	here := logPlace{l.File, l.Line}
	if l.Problem != "" {
		v.brk(here, "", 0, l.Problem)
		return nil
	}
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
		if seq == 1 && prev != "" {
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
		case seq > want:
			missing := seq - want
			hint := ""
			if newFile {
				hint = " (is a rotated file missing from the list, or are the files out of order?)"
			}
			reason = fmt.Sprintf("seq %d of instance %s follows seq %d (%s): %s missing%s", seq, instance, st.last, relPlace(st.lastAt, here), auditPlural(missing, "event"), hint)
			breakIndex = v.brk(here, instance, seq, reason)
			st.gapFrom, st.gapTo, st.gapBreak, st.gapFilled = want, seq-1, breakIndex, false
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
		if msg := l.field("msg"); msg != nil && msg.kind == 's' && msg.str != l.Event() {
			reason = fmt.Sprintf("its msg %q differs from its event %q: the line was edited", msg.str, l.Event())
		}
	}
	if reason != "" && breakIndex == -2 {
		v.brk(here, instance, seq, reason)
	}

	st.sum.Events++
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

func (v *chainVerifier) finish(opts VerifyOptions) {
	for _, instance := range v.order {
		st := v.states[instance]
		if h, ok := v.heads[instance]; ok {
			seq := h.Seq
			st.sum.SavedHeadSeq = &seq
			if st.last < h.Seq {
				missing := fmt.Sprintf("events seq %d…%d of instance %s are", st.last+1, h.Seq, instance)
				if st.last+1 == h.Seq {
					missing = fmt.Sprintf("event seq %d of instance %s is", h.Seq, instance)
				}
				v.brk(st.lastAt, instance, st.last, fmt.Sprintf("truncated: %s missing at the end (the chain head saved in storage is seq %d; the files end at seq %d, here)",
					missing, h.Seq, st.last))
			}
		}
		v.res.Instances = append(v.res.Instances, st.sum)
	}
	if opts.CheckHeads {
		for _, h := range opts.Heads {
			if _, ok := v.states[h.Instance]; !ok {
				v.res.HeadsNotInFiles = append(v.res.HeadsNotInFiles, h)
			}
		}
	}
	if v.res.Instances == nil {
		v.res.Instances = []InstanceChain{}
	}
}

// ---------------------------------------------------------------------------------
// One session's story

// ErrSessionNotInLog: no event of the session is in the files.
var ErrSessionNotInLog = errors.New("no event of the session is in the audit log")

// StoryActivation is how a session started.
type StoryActivation struct {
	At            time.Time `json:"at"`
	Where         string    `json:"where"`
	Justification string    `json:"justification"`
	Ticket        string    `json:"ticket,omitempty"`
	Start         time.Time `json:"start,omitzero"`
	Expires       time.Time `json:"expires,omitzero"`
	Duration      string    `json:"duration,omitempty"`
	ClientIP      string    `json:"client_ip,omitempty"`
	BreakGlass    bool      `json:"break_glass,omitempty"`
	RequestID     string    `json:"request_id,omitempty"`
	Approvers     []string  `json:"approvers,omitempty"`
}

// StoryRequest is the approval request a session came from.
type StoryRequest struct {
	RequestID       string          `json:"request_id"`
	RequestedAt     time.Time       `json:"requested_at,omitzero"`
	Where           string          `json:"where,omitempty"`
	Justification   string          `json:"justification,omitempty"`
	Duration        string          `json:"duration,omitempty"`
	Ticket          string          `json:"ticket,omitempty"`
	Start           time.Time       `json:"start,omitzero"`
	ClientIP        string          `json:"client_ip,omitempty"`
	ApprovalsNeeded int64           `json:"approvals_needed,omitempty"`
	Deadline        time.Time       `json:"deadline,omitzero"`
	Decisions       []StoryDecision `json:"decisions"`
}

// StoryDecision is one approver's decision.
type StoryDecision struct {
	At       time.Time `json:"at"`
	Where    string    `json:"where"`
	By       string    `json:"by"`
	Approved bool      `json:"approved"`
	Comment  string    `json:"comment,omitempty"`
	ClientIP string    `json:"client_ip,omitempty"`
}

// StoryExtension is one extension of the session.
type StoryExtension struct {
	At            time.Time `json:"at"`
	Where         string    `json:"where"`
	From          time.Time `json:"from,omitzero"`
	To            time.Time `json:"to,omitzero"`
	Justification string    `json:"justification,omitempty"`
	ClientIP      string    `json:"client_ip,omitempty"`
}

// StoryAccess is one request made under the session.
type StoryAccess struct {
	At             time.Time `json:"at"`
	Where          string    `json:"where"`
	Method         string    `json:"method"`
	URI            string    `json:"uri"`
	Status         int64     `json:"status"`
	Bytes          int64     `json:"bytes"`
	DurationUS     int64     `json:"duration_us"`
	ClientIP       string    `json:"client_ip,omitempty"`
	BodyBytes      *int64    `json:"body_bytes,omitempty"`
	BodySHA256     string    `json:"body_sha256,omitempty"`
	BodyIncomplete bool      `json:"body_incomplete,omitempty"`
	BodyKey        string    `json:"body_key,omitempty"`
}

// StoryFailure is a refused step of the session: a failed extension, or an approved
// request that could not start.
type StoryFailure struct {
	At       time.Time `json:"at"`
	Where    string    `json:"where"`
	Event    string    `json:"event"`
	Reason   string    `json:"reason"`
	ClientIP string    `json:"client_ip,omitempty"`
}

// How a session ended.
const (
	EndDeactivated = "deactivated"
	EndRevoked     = "revoked"
	EndExpired     = "expired"
	EndActive      = "active" // not ended yet: it expires at At
	EndUnknown     = "unknown"
)

// StoryEnd is how the session ended.
type StoryEnd struct {
	How    string    `json:"how"`
	At     time.Time `json:"at,omitzero"`
	Where  string    `json:"where,omitempty"`
	By     string    `json:"by,omitempty"`
	Reason string    `json:"reason,omitempty"`
	// LocalOnly: revoked on one instance only, storage being unreachable.
	LocalOnly bool `json:"local_only,omitempty"`
}

// StoryTotals sum up the session.
type StoryTotals struct {
	Requests int64            `json:"requests"`
	Bytes    int64            `json:"bytes"`
	Statuses map[string]int64 `json:"statuses"`
	// Elevated is how long the session admitted requests (to now if it still does).
	ElevatedSeconds int64  `json:"elevated_seconds"`
	Elevated        string `json:"elevated"`
}

// Story is everything the audit log says about one session.
type Story struct {
	SessionID  string           `json:"session_id"`
	User       string           `json:"user,omitempty"`
	Role       string           `json:"role,omitempty"`
	Activation *StoryActivation `json:"activation,omitempty"`
	Request    *StoryRequest    `json:"request,omitempty"`
	Extensions []StoryExtension `json:"extensions"`
	Accesses   []StoryAccess    `json:"accesses"`
	Failures   []StoryFailure   `json:"failures"`
	End        StoryEnd         `json:"end"`
	Totals     StoryTotals      `json:"totals"`
}

// FormatElapsed prints an elapsed time to the second, the way people say it.
func FormatElapsed(d time.Duration) string {
	if d = d.Round(time.Second); d <= 0 {
		return "0s"
	}
	return policy.FormatDuration(d)
}

func accessStatusClass(status int64) string {
	if status < 100 || status > 999 {
		return "other"
	}
	return strconv.FormatInt(status/100, 10) + "xx"
}

// SessionStory tells one session's story from the audit log: its activation (and
// the approval request it came from), extensions, every request made under it, and
// its end; now is when a session that has not ended is counted to. It returns
// ErrSessionNotInLog when no event names the session.
func SessionStory(inputs []AuditInput, sessionID string, now time.Time) (*Story, error) {
	if sessionID == "" {
		return nil, errors.New("no session id")
	}
	s := &Story{SessionID: sessionID, Extensions: []StoryExtension{}, Accesses: []StoryAccess{}, Failures: []StoryFailure{},
		Totals: StoryTotals{Statuses: map[string]int64{}}}
	found := false
	var requestID string
	var localEnd *StoryEnd
	var expires, expiresAt time.Time // the latest expiry, and when it was set
	setExpires := func(t, at time.Time) {
		if !t.IsZero() && (expiresAt.IsZero() || !at.Before(expiresAt)) {
			expires, expiresAt = t, at
		}
	}
	err := ScanAudit(inputs, func(l *AuditLine) error {
		if l.Problem != "" || l.Text("session_id") != sessionID {
			return nil
		}
		found = true
		at := l.At()
		if s.User == "" {
			s.User, s.Role = l.Text("user"), l.Text("role")
		}
		if rid := l.Text("request_id"); rid != "" && requestID == "" {
			requestID = rid
		}
		switch l.Event() {
		case EventActivationSucceeded:
			if s.Activation != nil {
				return nil
			}
			a := &StoryActivation{At: at, Where: l.Where(), Justification: l.Text("justification"), Ticket: l.Text("ticket"),
				Duration: l.Text("duration"), ClientIP: l.Text("client_ip"), BreakGlass: l.Bool("break_glass"),
				RequestID: l.Text("request_id"), Approvers: l.Strings("approvers")}
			a.Start, _ = l.Time("start")
			a.Expires, _ = l.Time("expires")
			if a.Start.IsZero() {
				a.Start = at
			}
			s.Activation = a
			setExpires(a.Expires, at)
		case EventBreakGlass:
			if s.Activation != nil {
				s.Activation.BreakGlass = true
			}
		case EventExtended:
			e := StoryExtension{At: at, Where: l.Where(), Justification: l.Text("extension_justification"), ClientIP: l.Text("extension_client_ip")}
			e.From, _ = l.Time("from")
			e.To, _ = l.Time("expires")
			s.Extensions = append(s.Extensions, e)
			setExpires(e.To, at)
		case EventExtensionFailed:
			s.Failures = append(s.Failures, StoryFailure{At: at, Where: l.Where(), Event: l.Event(), Reason: l.Text("reason"), ClientIP: l.Text("client_ip")})
		case EventAccess:
			a := StoryAccess{At: at, Where: l.Where(), Method: l.Text("method"), URI: l.Text("uri"), ClientIP: l.Text("client_ip"),
				BodySHA256: l.Text("body_sha256"), BodyKey: l.Text("body_key")}
			a.Status, _ = l.Int("status")
			a.Bytes, _ = l.Int("bytes")
			a.DurationUS, _ = l.Int("duration_us")
			if n, ok := l.Int("body_bytes"); ok {
				a.BodyBytes = &n
			}
			if f := l.field("body_complete"); f != nil && f.kind == 'b' && f.str == "false" {
				a.BodyIncomplete = true
			}
			s.Accesses = append(s.Accesses, a)
			s.Totals.Requests++
			s.Totals.Bytes += a.Bytes
			s.Totals.Statuses[accessStatusClass(a.Status)]++
		case EventDeactivated, EventRevoked:
			end := StoryEnd{How: l.Event(), At: at, Where: l.Where(), By: l.Text("by"), Reason: l.Text("reason"), LocalOnly: l.Bool("local_only")}
			switch {
			case end.LocalOnly:
				if localEnd == nil {
					localEnd = &end
				}
			case s.End.How == "":
				s.End = end
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if !found {
		return nil, ErrSessionNotInLog
	}
	if requestID != "" {
		if err := s.readRequest(inputs, requestID); err != nil {
			return nil, err
		}
	}
	switch {
	case s.End.How != "":
	case localEnd != nil:
		s.End = *localEnd
	case expires.IsZero():
		s.End = StoryEnd{How: EndUnknown}
	case expires.After(now):
		s.End = StoryEnd{How: EndActive, At: expires}
	default:
		s.End = StoryEnd{How: EndExpired, At: expires}
	}
	if a := s.Activation; a != nil {
		end := expires
		if s.End.How == EndDeactivated || s.End.How == EndRevoked {
			end = s.End.At
		}
		if end.IsZero() || end.After(now) {
			end = now
		}
		if d := end.Sub(a.Start); d > 0 {
			s.Totals.ElevatedSeconds = int64(d / time.Second)
			s.Totals.Elevated = FormatElapsed(d)
		}
	}
	if s.Totals.Elevated == "" {
		s.Totals.Elevated = "0s"
	}
	return s, nil
}

// readRequest fills in the approval request the session came from.
func (s *Story) readRequest(inputs []AuditInput, requestID string) error {
	r := &StoryRequest{RequestID: requestID, Decisions: []StoryDecision{}}
	s.Request = r
	return ScanAudit(inputs, func(l *AuditLine) error {
		if l.Problem != "" || l.Text("request_id") != requestID {
			return nil
		}
		at := l.At()
		switch l.Event() {
		case EventActivationRequested:
			r.RequestedAt, r.Where = at, l.Where()
			r.Justification, r.Duration, r.Ticket, r.ClientIP = l.Text("justification"), l.Text("duration"), l.Text("ticket"), l.Text("client_ip")
			r.Start, _ = l.Time("start")
			r.ApprovalsNeeded, _ = l.Int("approvals_needed")
			r.Deadline, _ = l.Time("deadline")
		case EventRequestApproved, EventRequestDenied:
			r.Decisions = append(r.Decisions, StoryDecision{At: at, Where: l.Where(), By: l.Text("by"), Approved: l.Event() == EventRequestApproved,
				Comment: l.Text("comment"), ClientIP: l.Text("client_ip")})
		case EventActivationFailed:
			s.Failures = append(s.Failures, StoryFailure{At: at, Where: l.Where(), Event: l.Event(), Reason: l.Text("reason"), ClientIP: l.Text("client_ip")})
		}
		return nil
	})
}

// ---------------------------------------------------------------------------------
// The periodic report

// Report settings and the alerts' thresholds.
const (
	DefaultNoisyActivations   = 10
	UnusedEligibilityPeriod   = 30 * 24 * time.Hour
	ExpiringEligibilityNotice = 14 * 24 * time.Hour
	CodeFailureBurst          = 5
	CodeFailureBurstWindow    = 15 * time.Minute
)

// Alert kinds.
const (
	AlertNoisy               = "noisy"
	AlertUnusedEligibility   = "unused_eligibility"
	AlertExpiringEligibility = "expiring_eligibility"
	AlertOutsideHours        = "outside_hours"
	AlertCodeFailures        = "totp_failures"
	AlertLockedOut           = "locked_out"
	AlertBreakGlass          = "break_glass"
)

// ReportOptions are the report's settings.
type ReportOptions struct {
	// Roles are the configured roles: their eligibility and allowed hours drive the
	// alerts that need the config. Nil skips those alerts, and the report says so.
	Roles map[string]*policy.Role
	// Noisy: more activations of a role by a user in the window are an alert; below 1
	// means DefaultNoisyActivations.
	Noisy int
}

// ReportRow is one user's use of one role in the window.
type ReportRow struct {
	Role        string `json:"role"`
	User        string `json:"user"`
	Activations int64  `json:"activations"`
	BreakGlass  int64  `json:"break_glass"`
	// Elevated is the time the user's sessions of the role were active, within the
	// window; a session not ended counts until it expires or now.
	ElevatedSeconds int64     `json:"elevated_seconds"`
	Elevated        string    `json:"elevated"`
	Requests        int64     `json:"requests"`
	LastUse         time.Time `json:"last_use,omitzero"`
}

// ReportAlert is one finding worth a look.
type ReportAlert struct {
	Kind      string    `json:"kind"`
	At        time.Time `json:"at,omitzero"`
	Where     string    `json:"where,omitempty"`
	User      string    `json:"user,omitempty"`
	Role      string    `json:"role,omitempty"`
	SessionID string    `json:"session_id,omitempty"`
	Count     int64     `json:"count,omitempty"`
	Message   string    `json:"message"`
}

// AuditReport is the outcome of Report.
type AuditReport struct {
	From  time.Time `json:"from"`
	To    time.Time `json:"to"`
	Files []string  `json:"files"`
	Lines int64     `json:"lines"`
	// Events counts the events read; Skipped the lines that are not events.
	Events      int64         `json:"events"`
	Skipped     int64         `json:"skipped"`
	FirstEvent  time.Time     `json:"first_event,omitzero"`
	LastEvent   time.Time     `json:"last_event,omitzero"`
	Rows        []ReportRow   `json:"rows"`
	Alerts      []ReportAlert `json:"alerts"`
	ConfigAware bool          `json:"config_alerts"`
	Notes       []string      `json:"notes"`
}

type roleUser struct{ role, user string }

type reportSession struct {
	user, role          string
	start, expires      time.Time
	expiresAt           time.Time // when expires was set
	end                 time.Time
	activated, accessed bool
}

type codeFailure struct {
	at    time.Time
	where string
}

// Report sums up the use of every role by every user in the window of the given
// length that ends at now, and raises the alerts of a privileged-access review.
func Report(inputs []AuditInput, window time.Duration, now time.Time, opts ReportOptions) (*AuditReport, error) {
	if window <= 0 {
		return nil, errors.New("the report's window must be positive")
	}
	noisy := int64(opts.Noisy)
	if noisy < 1 {
		noisy = DefaultNoisyActivations
	}
	from := now.Add(-window)
	inWindow := func(t time.Time) bool { return !t.Before(from) && !t.After(now) }
	rep := &AuditReport{From: from, To: now, Files: make([]string, 0, len(inputs)), Rows: []ReportRow{}, Alerts: []ReportAlert{},
		ConfigAware: opts.Roles != nil, Notes: []string{}}
	for _, in := range inputs {
		rep.Files = append(rep.Files, in.Name)
	}
	rows := map[roleUser]*ReportRow{}
	row := func(role, user string) *ReportRow {
		k := roleUser{role, user}
		if rows[k] == nil {
			rows[k] = &ReportRow{Role: role, User: user}
		}
		return rows[k]
	}
	lastUse := map[roleUser]time.Time{}
	used := func(role, user string, at time.Time) {
		k := roleUser{role, user}
		if !at.After(now) && at.After(lastUse[k]) {
			lastUse[k] = at
		}
	}
	lastActivation := map[roleUser]time.Time{}
	sessions := map[string]*reportSession{}
	sess := func(id string) *reportSession {
		if sessions[id] == nil {
			sessions[id] = &reportSession{}
		}
		return sessions[id]
	}
	failures := map[string][]codeFailure{}
	breakGlass := map[string]bool{}
	alert := func(a ReportAlert) { rep.Alerts = append(rep.Alerts, a) }

	err := ScanAudit(inputs, func(l *AuditLine) error {
		rep.Lines++
		at, ok := l.Time(FieldTime)
		if l.Problem != "" || l.Event() == "" || !ok {
			rep.Skipped++
			return nil
		}
		rep.Events++
		if rep.FirstEvent.IsZero() || at.Before(rep.FirstEvent) {
			rep.FirstEvent = at
		}
		if at.After(rep.LastEvent) {
			rep.LastEvent = at
		}
		user, role, id := l.Text("user"), l.Text("role"), l.Text("session_id")
		switch event := l.Event(); event {
		case EventActivationSucceeded:
			s := sess(id)
			s.user, s.role, s.activated = user, role, true
			s.start, _ = l.Time("start")
			if s.start.IsZero() {
				s.start = at
			}
			if exp, ok := l.Time("expires"); ok && (s.expiresAt.IsZero() || !at.Before(s.expiresAt)) {
				s.expires, s.expiresAt = exp, at
			}
			if at.After(now) {
				return nil
			}
			used(role, user, at)
			k := roleUser{role, user}
			if at.After(lastActivation[k]) {
				lastActivation[k] = at
			}
			if !inWindow(at) {
				return nil
			}
			r := row(role, user)
			r.Activations++
			bg := l.Bool("break_glass")
			if bg {
				r.BreakGlass++
				if !breakGlass[id] {
					breakGlass[id] = true
					alert(ReportAlert{Kind: AlertBreakGlass, At: at, Where: l.Where(), User: user, Role: role, SessionID: id,
						Message: fmt.Sprintf("%s used break-glass access to %s: %q", user, role, l.Text("justification"))})
				}
			}
			if pr := opts.Roles[role]; pr != nil && !pr.WithinHours(s.start) {
				how := ""
				if bg {
					how = " (break-glass)"
				}
				alert(ReportAlert{Kind: AlertOutsideHours, At: at, Where: l.Where(), User: user, Role: role, SessionID: id,
					Message: fmt.Sprintf("%s activated %s%s at %s, outside its allowed hours", user, role, how, s.start.UTC().Format(reportTime))})
			}
		case EventBreakGlass:
			if inWindow(at) && !breakGlass[id] {
				breakGlass[id] = true
				alert(ReportAlert{Kind: AlertBreakGlass, At: at, Where: l.Where(), User: user, Role: role, SessionID: id,
					Message: fmt.Sprintf("%s used break-glass access to %s: %q", user, role, l.Text("justification"))})
			}
		case EventExtended:
			s := sess(id)
			if exp, ok := l.Time("expires"); ok && (s.expiresAt.IsZero() || !at.Before(s.expiresAt)) {
				s.expires, s.expiresAt = exp, at
			}
		case EventDeactivated, EventRevoked:
			if !l.Bool("local_only") {
				if s := sess(id); s.end.IsZero() {
					s.end = at
				}
			}
		case EventAccess:
			if inWindow(at) {
				row(role, user).Requests++
				used(role, user, at)
				sess(id).accessed = true
			}
		case EventActivationFailed, EventApprovalFailed, EventExtensionFailed:
			if !inWindow(at) {
				return nil
			}
			if event == EventApprovalFailed {
				user = l.Text("by") // the approver's code; user is the requester
			}
			if r := l.Text("reason"); r == "totp_invalid" || r == "totp_replayed" {
				failures[user] = append(failures[user], codeFailure{at: at, where: l.Where()})
			}
			// A refusal for a lockout (reason locked_out) repeats the lockout, which
			// has its own event when it begins.
		case EventLockedOut:
			if inWindow(at) {
				msg := fmt.Sprintf("%s was locked out after repeated wrong codes", user)
				if until, ok := l.Time("until"); ok {
					msg += ", until " + until.UTC().Format(reportTime)
				}
				alert(ReportAlert{Kind: AlertLockedOut, At: at, Where: l.Where(), User: user, Message: msg})
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}

	// Elevated time, clipped to the window.
	missingActivations := 0
	for _, s := range sessions {
		if !s.activated {
			if s.accessed {
				missingActivations++
			}
			continue
		}
		end := s.expires
		if !s.end.IsZero() && (end.IsZero() || s.end.Before(end)) {
			end = s.end
		}
		if end.IsZero() || end.After(now) {
			end = now
		}
		start := s.start
		if start.Before(from) {
			start = from
		}
		if d := end.Sub(start); d > 0 {
			row(s.role, s.user).ElevatedSeconds += int64(d / time.Second)
		}
	}
	for k, r := range rows {
		r.Elevated = FormatElapsed(time.Duration(r.ElevatedSeconds) * time.Second)
		r.LastUse = lastUse[k]
		if r.Activations > noisy {
			alert(ReportAlert{Kind: AlertNoisy, User: r.User, Role: r.Role, Count: r.Activations,
				Message: fmt.Sprintf("%s activated %s %d times in the window (more than %d)", r.User, r.Role, r.Activations, noisy)})
		}
		rep.Rows = append(rep.Rows, *r)
	}
	slices.SortFunc(rep.Rows, func(a, b ReportRow) int {
		if c := compareStrings(a.Role, b.Role); c != 0 {
			return c
		}
		return compareStrings(a.User, b.User)
	})

	for user, fs := range failures {
		for _, b := range codeFailureBursts(fs) {
			alert(ReportAlert{Kind: AlertCodeFailures, At: b.from, Where: b.where, User: user, Count: b.count,
				Message: fmt.Sprintf("%d wrong or replayed codes for %s from %s to %s", b.count, user, b.from.UTC().Format(reportTime), b.to.UTC().Format(reportTime))})
		}
	}

	if opts.Roles != nil {
		rep.eligibilityAlerts(opts.Roles, now, lastActivation)
	} else {
		rep.Notes = append(rep.Notes, "no config given (--config): the unused-eligibility, expiring-eligibility and outside-hours alerts were skipped")
	}
	if rep.Skipped > 0 {
		rep.Notes = append(rep.Notes, fmt.Sprintf("%s of the files are not audit events and were skipped: check the files with `caddy jit audit verify`", auditPlural(rep.Skipped, "line")))
	}
	if missingActivations > 0 {
		rep.Notes = append(rep.Notes, fmt.Sprintf("%s used in the window started before the files begin: their elevated time is not counted", auditPlural(int64(missingActivations), "session")))
	}
	if opts.Roles != nil && (rep.FirstEvent.IsZero() || rep.FirstEvent.After(now.Add(-UnusedEligibilityPeriod))) {
		rep.Notes = append(rep.Notes, "the files cover less than the last 30 days: an unused-eligibility alert may miss an older activation")
	}
	slices.SortStableFunc(rep.Alerts, func(a, b ReportAlert) int {
		switch {
		case a.At.IsZero() != b.At.IsZero():
			if a.At.IsZero() {
				return 1
			}
			return -1
		case !a.At.Equal(b.At):
			return a.At.Compare(b.At)
		}
		if c := compareStrings(a.Kind, b.Kind); c != 0 {
			return c
		}
		if c := compareStrings(a.Role, b.Role); c != 0 {
			return c
		}
		return compareStrings(a.User, b.User)
	})
	return rep, nil
}

const reportTime = "2006-01-02 15:04 MST"

type failureBurst struct {
	from, to time.Time
	where    string
	count    int64
}

// codeFailureBursts finds the runs of at least CodeFailureBurst failures within
// CodeFailureBurstWindow; overlapping runs are one burst.
func codeFailureBursts(fs []codeFailure) []failureBurst {
	slices.SortStableFunc(fs, func(a, b codeFailure) int { return a.at.Compare(b.at) })
	var out []failureBurst
	var cur *failureBurst
	lo := 0
	for hi := range fs {
		for fs[hi].at.Sub(fs[lo].at) > CodeFailureBurstWindow {
			lo++
		}
		switch {
		case hi-lo+1 >= CodeFailureBurst && cur == nil:
			out = append(out, failureBurst{from: fs[lo].at, to: fs[hi].at, where: fs[lo].where, count: int64(hi - lo + 1)})
			cur = &out[len(out)-1]
		case hi-lo+1 >= CodeFailureBurst:
			cur.to = fs[hi].at
			cur.count++
		default:
			cur = nil
		}
	}
	return out
}

// eligibilityAlerts are the alerts that need the roles: eligible users who do not use
// their eligibility, and eligibility that ends soon.
func (rep *AuditReport) eligibilityAlerts(roles map[string]*policy.Role, now time.Time, lastActivation map[roleUser]time.Time) {
	names := make([]string, 0, len(roles))
	for name := range roles {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		r := roles[name]
		seen := map[string]bool{}
		for _, e := range r.Eligibility {
			for _, subject := range e.Subjects {
				if seen[subject] {
					continue
				}
				seen[subject] = true
				if strings.HasPrefix(subject, policy.GroupPrefix) {
					if !e.Until.IsZero() && e.Until.After(now) && !e.Until.After(now.Add(ExpiringEligibilityNotice)) {
						rep.Alerts = append(rep.Alerts, ReportAlert{Kind: AlertExpiringEligibility, At: e.Until, Role: name,
							Message: fmt.Sprintf("the eligibility of %s for %s ends at %s", subject, name, e.Until.UTC().Format(reportTime))})
					}
					continue
				}
				d := r.Eligible(policy.Caller{User: subject}, now)
				if !d.Allowed {
					continue
				}
				if !d.EligibleUntil.IsZero() && !d.EligibleUntil.After(now.Add(ExpiringEligibilityNotice)) {
					rep.Alerts = append(rep.Alerts, ReportAlert{Kind: AlertExpiringEligibility, At: d.EligibleUntil, User: subject, Role: name,
						Message: fmt.Sprintf("%s's eligibility for %s ends at %s", subject, name, d.EligibleUntil.UTC().Format(reportTime))})
				}
				since := now.Add(-UnusedEligibilityPeriod)
				if !r.Eligible(policy.Caller{User: subject}, since).Allowed {
					continue // eligible for less than the period: too early to say
				}
				if last := lastActivation[roleUser{name, subject}]; last.Before(since) {
					msg := fmt.Sprintf("%s is eligible for %s but has not activated it in 30 days", subject, name)
					if !last.IsZero() {
						msg += " (last at " + last.UTC().Format(reportTime) + ")"
					}
					rep.Alerts = append(rep.Alerts, ReportAlert{Kind: AlertUnusedEligibility, User: subject, Role: name, Message: msg})
				}
			}
		}
	}
}
