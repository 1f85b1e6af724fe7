package audit

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Reading audit logs back: the lines as the chain writer (chain.go) and the log encoder
// made them; on top of them the chain's verification (verify.go), one session's
// story (story.go) and the periodic report (report.go).
// Everything here is pure analysis of files: no Caddy, no storage, no clock; the
// caller passes the time and the policy.

// Kinds of value a line can hold beside the canonical ones ('s', 'n', 'b', 'a'): the
// chain writer never writes them, so a line with one is not caddy-jit's as it stands.
const (
	kindFloat  = 'f'
	kindObject = 'o'
	kindNull   = 'z'
	kindMixed  = 'm' // an array with something other than strings
)

// Line is one line of an audit log: where it is and its fields, in line order,
// with integers kept as their text.
type Line struct {
	File string
	Line int
	// Problem says in plain words why the line is not an event at all (not JSON, not
	// one object, ...); the fields are empty then.
	Problem string
	fields  []canonicalValue
	// torn is, for a line that is not JSON, the JSON object that ends it: a write cut
	// by a crash leaves a fragment, and the next process's first line follows it on
	// the same line. Only the verifier decides whether that explains the fragment.
	torn *Line
}

// Where is the line's place, file:line.
func (l *Line) Where() string { return l.File + ":" + strconv.Itoa(l.Line) }

func (l *Line) field(key string) *canonicalValue {
	for i := len(l.fields) - 1; i >= 0; i-- { // the last of duplicates, as encoding/json
		if l.fields[i].key == key {
			return &l.fields[i]
		}
	}
	return nil
}

// Has reports whether the line has the field, whatever its type.
func (l *Line) Has(key string) bool { return l.field(key) != nil }

// Text returns a string field, or "" when the field is absent or not a string.
func (l *Line) Text(key string) string {
	if f := l.field(key); f != nil && f.kind == 's' {
		return f.str
	}
	return ""
}

// Int returns an integer field.
func (l *Line) Int(key string) (int64, bool) {
	if f := l.field(key); f != nil && f.kind == 'n' {
		n, err := strconv.ParseInt(f.str, 10, 64)
		return n, err == nil
	}
	return 0, false
}

// Bool returns a boolean field; absent or not a boolean is false.
func (l *Line) Bool(key string) bool {
	f := l.field(key)
	return f != nil && f.kind == 'b' && f.str == "true"
}

// Strings returns an array-of-strings field.
func (l *Line) Strings(key string) []string {
	if f := l.field(key); f != nil && f.kind == 'a' {
		return f.arr
	}
	return nil
}

// Time returns a field holding an RFC 3339 time.
func (l *Line) Time(key string) (time.Time, bool) {
	s := l.Text(key)
	if s == "" {
		return time.Time{}, false
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	return t, err == nil
}

// Event is the event's name.
func (l *Line) Event() string { return l.Text("event") }

// At is when the event was written: its chain field time.
func (l *Line) At() time.Time {
	t, _ := l.Time(FieldTime)
	return t
}

// Fields returns the fields as JSON values: strings, json.Number, bools and string
// slices (an object or an array of other values shows as the string "(object)" or
// "(array)"; null as nil).
func (l *Line) Fields() map[string]any {
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
func (l *Line) Canonical(buf []byte) ([]byte, error) {
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
func (l *Line) Hash() (string, error) {
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
	return ParseLine("", 0, bytes.TrimSuffix(line, []byte{'\n'})).Hash()
}

// VerifyLine checks that a line links to the event whose hash is prevHash ("" for the
// first event of a chain), and returns its own hash.
func VerifyLine(line []byte, prevHash string) (string, error) {
	l := ParseLine("", 0, bytes.TrimSuffix(line, []byte{'\n'}))
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

// ParseLine reads one line (without its newline) of an audit log.
func ParseLine(file string, n int, data []byte) *Line {
	l := parseLine(file, n, data)
	if l.Problem == notJSONProblem {
		// A fragment holds no `{"` past its start (audit values hold no objects and
		// escape their quotes), so the next one is where a whole line may begin.
		if i := bytes.Index(data[min(1, len(data)):], []byte(`{"`)); i >= 0 {
			if rest := parseLine(file, n, data[i+1:]); rest.Problem == "" {
				l.torn = rest
			}
		}
	}
	return l
}

func parseLine(file string, n int, data []byte) *Line {
	l := &Line{File: file, Line: n}
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
