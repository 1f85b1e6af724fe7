package audit

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"
	"unsafe"

	"github.com/caddy-jit/caddy-jit/state"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// The audit chain: every event an instance writes carries its instance id, a sequence
// number and the SHA-256 of the previous event's canonical bytes, so that an edited,
// deleted, inserted or reordered line breaks the chain where it happened.
//
// Canonical bytes of an event: its fields, without the log envelope (level, ts, logger,
// msg, caller, stacktrace), sorted by name; each written as
//
//	len(name) ":" name TYPE len(value) ":" value
//
// where TYPE is 's' (string), 'n' (integer, in decimal as in the line), 'b' (true or
// false) or 'a' (an array of strings: the count, then each string as len ":" string).
// Lengths are decimal byte counts. ChainHash and VerifyLine compute it; a third-party
// verifier can too. A value over the bounds of auditbound.go is hashed as it was
// written (cut), together with the KEY_len and KEY_sha256 fields that describe it.

// Chain fields every audit event carries.
const (
	FieldInstance = "instance"
	FieldSeq      = "seq"
	FieldPrev     = "prev"
	FieldTime     = "time"
)

// EnvelopeKeys are the keys a log encoder adds around an event; they are not part of
// the canonical bytes.
var EnvelopeKeys = []string{"level", "ts", "logger", "msg", "caller", "stacktrace"}

// ChainHead is where an instance's chain stands: the last sequence number and its hash.
type ChainHead struct {
	Instance string `json:"instance"`
	Seq      int64  `json:"seq"`
	Hash     string `json:"hash"`
	// State is headRunning while the instance writes, headStopped once it stopped
	// cleanly; a head saved before this field existed has none, and counts as stopped.
	State string `json:"state,omitempty"`
}

const (
	headRunning = "running"
	headStopped = "stopped"
)

func chainHeadKey(instance string) string {
	return state.Prefix + "audit-chains/" + state.Name(instance) + ".json"
}

// Chain is an instance's audit chain, shared by every config of the process.
type Chain struct {
	mu    sync.Mutex
	head  ChainHead
	saved int64 // the seq last written to storage
	// store keeps the head (nil for a chain not kept in storage); previousStop is how
	// the last process that wrote the chain stopped (an audit_started value).
	store        state.Store
	previousStop string
	// batched is the batched output, when the config has one (batch.go).
	batched    atomic.Pointer[batcher]
	queueWaits atomic.Int64
	// marks are the settings of the chain's own events (marks.go), cp where the
	// current run of events since the last checkpoint began.
	marks   atomic.Pointer[Marks]
	cp      checkpointRun
	started atomic.Bool
	// Scratch space, reused under mu.
	buf    []byte
	fields []zap.Field
	values []canonicalValue
	order  canonicalOrder
	// texts holds the chain's own strings (each event's hash and time), appended and
	// never written over: one allocation for many events instead of two per event.
	texts       []byte
	timeScratch [len(time.RFC3339Nano) + 10]byte
}

// textsBlock is how many bytes of chain strings one allocation holds: about 160
// events' hash and time.
const textsBlock = 16 << 10

// text returns b as a string kept in c.texts; c.mu is held. The bytes of a string it
// returned are never changed: a full block is left to the strings that point into it
// and a new one begins, so the strings stay valid (and immutable) for as long as
// anything holds them.
func (c *Chain) text(b []byte) string {
	if cap(c.texts)-len(c.texts) < len(b) {
		c.texts = make([]byte, 0, max(textsBlock, len(b)))
	}
	start := len(c.texts)
	c.texts = append(c.texts, b...)
	return unsafe.String(&c.texts[start], len(b))
}

// NewChain starts a chain that is not kept in storage.
func NewChain(instance string) *Chain {
	return &Chain{head: ChainHead{Instance: instance}, previousStop: StopNone}
}

// LoadChain resumes an instance's chain from storage, or starts it.
func LoadChain(ctx context.Context, st state.Store, instance string) (*Chain, error) {
	c := &Chain{head: ChainHead{Instance: instance}, store: st, previousStop: StopNone}
	found, err := state.LoadJSON(ctx, st, chainHeadKey(instance), &c.head)
	if err != nil {
		return nil, err
	}
	if found && c.head.Instance != instance {
		return nil, fmt.Errorf("the audit chain head in storage names instance %q, not %q", c.head.Instance, instance)
	}
	if found {
		c.previousStop = StopClean
		if c.head.State == headRunning {
			c.previousStop = StopUnclean
		}
	}
	c.head.State = ""
	c.saved = c.head.Seq
	return c, nil
}

// Head returns where the chain stands.
func (c *Chain) Head() ChainHead {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.head
}

// Save writes the head to storage if it moved since the last save; the sync loop calls
// it every interval, so that a restart continues the chain. The head saved says the
// instance is running until SaveStopped.
func (c *Chain) Save(ctx context.Context, st state.Store) error {
	return c.save(ctx, st, headRunning)
}

// SaveStopped writes the head at a clean stop, after the last event.
func (c *Chain) SaveStopped(ctx context.Context, st state.Store) error {
	c.mu.Lock()
	c.saved = -1 // saved even if it did not move, to say stopped
	c.mu.Unlock()
	return c.save(ctx, st, headStopped)
}

func (c *Chain) save(ctx context.Context, st state.Store, headState string) error {
	head := c.Head()
	c.mu.Lock()
	moved := head.Seq != c.saved
	c.mu.Unlock()
	if !moved {
		return nil
	}
	head.State = headState
	if err := state.StoreJSON(ctx, st, chainHeadKey(head.Instance), head); err != nil {
		return err
	}
	c.mu.Lock()
	c.saved = max(c.saved, head.Seq)
	c.mu.Unlock()
	return nil
}

// LoadChainHeads reads every instance's saved head, for verifying that a log was not
// cut short.
func LoadChainHeads(ctx context.Context, st state.Store) ([]ChainHead, error) {
	keys, err := state.RecordKeys(ctx, st, state.Prefix+"audit-chains", false, "the saved audit chain heads")
	if err != nil {
		return nil, err
	}
	var heads []ChainHead
	for _, key := range keys {
		var h ChainHead
		if found, err := state.LoadJSON(ctx, st, key, &h); err != nil {
			return nil, err
		} else if found {
			heads = append(heads, h)
		}
	}
	slices.SortFunc(heads, func(a, b ChainHead) int { return compareStrings(a.Instance, b.Instance) })
	return heads, nil
}

func compareStrings(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// write links the event into the chain and writes it: queued for the batched output
// when the chain has one (batch.go), else through log at once, under the chain's lock
// so that the log's order is the chain's order.
func (c *Chain) write(log *zap.Logger, event string, fields []zap.Field, now func() time.Time) {
	if b := c.batched.Load(); b != nil {
		b.enqueue(event, fields, now)
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.writeInline(log, event, fields, now())
}

// writeInline writes one event through log; c.mu is held.
func (c *Chain) writeInline(log *zap.Logger, event string, fields []zap.Field, at time.Time) {
	ce := log.Check(zap.InfoLevel, event)
	if ce == nil {
		return
	}
	all := c.link(event, fields, at)
	ce.Write(all...)
	c.forget(all)
	c.checkpointInline(at, false)
}

// link gives an event its place in the chain: it returns the event's fields with the
// chain's first (bounded, in c's scratch space, valid until forget) and moves the head
// to the event. c.mu is held.
func (c *Chain) link(event string, fields []zap.Field, at time.Time) []zap.Field {
	seq := c.head.Seq + 1
	if c.cp.from == 0 {
		c.cp = checkpointRun{from: seq, at: at}
	}
	all := append(c.fields[:0],
		zap.String("event", event),
		zap.String(FieldInstance, c.head.Instance),
		zap.Int64(FieldSeq, seq),
		zap.String(FieldPrev, c.head.Hash),
		zap.String(FieldTime, c.text(at.UTC().AppendFormat(c.timeScratch[:0], time.RFC3339Nano))),
	)
	for _, f := range fields {
		if testing.Testing() && reservedKey(f.Key) {
			panic("audit field " + f.Key + " is a name the chain or the log envelope uses")
		}
		// Every field is bounded here, where all events pass, rather than at each
		// event: a new event cannot forget it (see auditbound.go).
		all = appendBounded(all, f)
	}
	c.canonical(all)
	sum := sha256.Sum256(c.buf)
	var text [sha256.Size * 2]byte
	hex.Encode(text[:], sum[:])
	c.head.Seq, c.head.Hash = seq, c.text(text[:])
	return all
}

// forget clears the scratch fields link returned, so that no reference to an event's
// strings outlives it.
func (c *Chain) forget(all []zap.Field) {
	clear(all)
	c.fields = all[:0]
}

// reservedKey reports a field name an event must not use: the chain's own, and the
// log envelope's, which verifiers skip.
func reservedKey(key string) bool {
	switch key {
	case "event", FieldInstance, FieldSeq, FieldPrev, FieldTime:
		return true
	}
	return slices.Contains(EnvelopeKeys, key)
}

// validUTF8 replaces each invalid byte with U+FFFD, as zap's JSON encoder writes it, so
// that the value hashed is the value in the line.
func validUTF8(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	out := make([]rune, 0, len(s))
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		out = append(out, r) // RuneError for an invalid byte, size 1
		i += size
	}
	return string(out)
}

// canonicalValue is one field's value in canonical form.
type canonicalValue struct {
	key  string
	kind byte
	str  string
	arr  []string
	// num holds an integer the writer has not formatted yet (numSet), to spare an
	// allocation; a reader sets str to the number's text instead.
	num    int64
	numSet bool
}

func canonicalValueOf(f zap.Field) canonicalValue {
	v := canonicalValue{key: f.Key}
	switch f.Type {
	case zapcore.StringType:
		v.kind, v.str = 's', f.String
	case zapcore.Int64Type, zapcore.Int32Type, zapcore.Int16Type, zapcore.Int8Type:
		v.kind, v.num, v.numSet = 'n', f.Integer, true
	case zapcore.Uint64Type, zapcore.Uint32Type, zapcore.Uint16Type, zapcore.Uint8Type:
		v.kind, v.str = 'n', strconv.FormatUint(uint64(f.Integer), 10)
	case zapcore.BoolType:
		v.kind, v.str = 'b', "false"
		if f.Integer == 1 {
			v.str = "true"
		}
	case zapcore.ArrayMarshalerType:
		var sa stringArray
		if err := f.Interface.(zapcore.ArrayMarshaler).MarshalLogArray(&sa); err != nil || sa.other {
			v.kind, v.str = unhashable(f)
			break
		}
		v.kind, v.arr = 'a', sa.items
	default:
		v.kind, v.str = unhashable(f)
	}
	return v
}

// canonicalOrder remembers the sorted order of the last key sequence it saw: events of
// one kind (above all `access`) repeat the same keys, so sorting is needed only when
// the keys change.
type canonicalOrder struct {
	keys  []string
	order []int
}

// canonical appends the canonical bytes of fields, sorting their keys only when they
// differ from the previous event's.
func (c *Chain) canonical(fields []zap.Field) {
	same := len(fields) == len(c.order.keys)
	for i := 0; same && i < len(fields); i++ {
		same = fields[i].Key == c.order.keys[i]
	}
	if !same {
		c.order.keys = c.order.keys[:0]
		c.order.order = c.order.order[:0]
		for i, f := range fields {
			c.order.keys = append(c.order.keys, f.Key)
			c.order.order = append(c.order.order, i)
		}
		slices.SortStableFunc(c.order.order, func(a, b int) int { return compareStrings(fields[a].Key, fields[b].Key) })
	}
	c.values = c.values[:0]
	for _, i := range c.order.order {
		c.values = append(c.values, canonicalValueOf(fields[i]))
	}
	c.buf = c.buf[:0]
	for _, v := range c.values {
		c.buf = appendCanonical(c.buf, v)
	}
	clear(c.values)
}

// unhashable marks a field of a type the chain does not hash: a programming error that
// the unit tests turn into a panic, and that a running server turns into a chain break
// that `caddy jit audit verify` reports, rather than a failed request.
func unhashable(f zap.Field) (byte, string) {
	if testing.Testing() {
		panic(fmt.Sprintf("audit field %s has type %d: audit fields are strings, integers, bools or strings arrays", f.Key, f.Type))
	}
	return 'x', strconv.Itoa(int(f.Type))
}

func appendLenPrefixed(buf []byte, s string) []byte {
	buf = strconv.AppendInt(buf, int64(len(s)), 10)
	buf = append(buf, ':')
	return append(buf, s...)
}

func appendCanonical(buf []byte, v canonicalValue) []byte {
	buf = appendLenPrefixed(buf, v.key)
	buf = append(buf, v.kind)
	if v.kind == 'a' {
		buf = strconv.AppendInt(buf, int64(len(v.arr)), 10)
		buf = append(buf, ':')
		for _, s := range v.arr {
			buf = appendLenPrefixed(buf, s)
		}
		return buf
	}
	if v.numSet {
		var digits [20]byte
		text := strconv.AppendInt(digits[:0], v.num, 10)
		buf = strconv.AppendInt(buf, int64(len(text)), 10)
		buf = append(buf, ':')
		return append(buf, text...)
	}
	return appendLenPrefixed(buf, v.str)
}

// stringArray collects the strings of a zap.Strings field.
type stringArray struct {
	items []string
	other bool
}

func (a *stringArray) AppendString(s string) { a.items = append(a.items, validUTF8(s)) }

func (a *stringArray) AppendBool(bool)                            { a.other = true }
func (a *stringArray) AppendByteString([]byte)                    { a.other = true }
func (a *stringArray) AppendComplex128(complex128)                { a.other = true }
func (a *stringArray) AppendComplex64(complex64)                  { a.other = true }
func (a *stringArray) AppendFloat64(float64)                      { a.other = true }
func (a *stringArray) AppendFloat32(float32)                      { a.other = true }
func (a *stringArray) AppendInt(int)                              { a.other = true }
func (a *stringArray) AppendInt64(int64)                          { a.other = true }
func (a *stringArray) AppendInt32(int32)                          { a.other = true }
func (a *stringArray) AppendInt16(int16)                          { a.other = true }
func (a *stringArray) AppendInt8(int8)                            { a.other = true }
func (a *stringArray) AppendUint(uint)                            { a.other = true }
func (a *stringArray) AppendUint64(uint64)                        { a.other = true }
func (a *stringArray) AppendUint32(uint32)                        { a.other = true }
func (a *stringArray) AppendUint16(uint16)                        { a.other = true }
func (a *stringArray) AppendUint8(uint8)                          { a.other = true }
func (a *stringArray) AppendUintptr(uintptr)                      { a.other = true }
func (a *stringArray) AppendDuration(time.Duration)               { a.other = true }
func (a *stringArray) AppendTime(time.Time)                       { a.other = true }
func (a *stringArray) AppendReflected(any) error                  { a.other = true; return nil }
func (a *stringArray) AppendArray(zapcore.ArrayMarshaler) error   { a.other = true; return nil }
func (a *stringArray) AppendObject(zapcore.ObjectMarshaler) error { a.other = true; return nil }
