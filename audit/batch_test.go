package audit

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"
)

// lockedBuffer is an output the flusher and the test share.
type lockedBuffer struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	writes int
	// gate, when set, holds every Write until it is closed.
	gate chan struct{}
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	if b.gate != nil {
		<-b.gate
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.writes++
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func testAuditKey(t *testing.T) *AuditKey {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &AuditKey{ID: auditKeyID(priv.Public().(ed25519.PublicKey)), Private: priv}
}

// The JSON the batched output writes reads back as zap's line does: the same fields,
// the same values, the same chain hash, for every string an encoder can get wrong.
func TestBatchedLineEncodesAsZapDoes(t *testing.T) {
	for i, s := range append(alTricky, "", "plain") {
		fields := []zap.Field{zap.String("user", s), zap.Int("status", -200), zap.Int64("bytes", 1<<40),
			zap.Bool("ok", i%2 == 0), zap.Strings("roles", []string{s, "b"}), zap.Uint64("big", 1<<63)}
		var viaZap bytes.Buffer
		NewWriter(alLogger(&viaZap), NewChain("enc"), func() time.Time { return alT0 }).Event("evt", fields...)

		c := NewChain("enc")
		c.mu.Lock()
		all := c.link("evt", fields, alT0)
		ours := appendJSONLine(nil, "evt", alT0, all)
		c.mu.Unlock()
		if !bytes.HasSuffix(ours, []byte("}\n")) || bytes.Count(ours, []byte("\n")) != 1 {
			t.Fatalf("%q: the line is not one line: %q", s, ours)
		}
		var want, got map[string]any
		if err := json.Unmarshal(viaZap.Bytes(), &want); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(ours, &got); err != nil {
			t.Fatalf("%q: our line is not JSON: %v: %s", s, err, ours)
		}
		delete(want, "caller")
		// ts is zap's clock, not the event's: both are envelope, outside the hash.
		if _, ok := got["ts"].(float64); !ok {
			t.Errorf("%q: our line has no numeric ts: %s", s, ours)
		}
		delete(want, "ts")
		delete(got, "ts")
		if fmt.Sprint(want) != fmt.Sprint(got) {
			t.Errorf("%q:\nzap  %v\nours %v", s, want, got)
		}
		hash, err := ChainHash(bytes.TrimSpace(ours))
		if err != nil || hash != c.Head().Hash {
			t.Errorf("%q: the line hashes to %s (%v), the chain's head is %s", s, hash, err, c.Head().Hash)
		}
	}
}

// Many writers at once: every event is written once, in one chain that verifies, in
// far fewer writes than events.
func TestBatchedOutputWritesEveryEventOnce(t *testing.T) {
	out := &lockedBuffer{}
	c := NewChain("batch")
	c.Batch(Output{Writer: out, FlushInterval: 5 * time.Millisecond})
	w := NewWriter(alLogger(&bytes.Buffer{}), c, time.Now)
	const writers, each = 16, 500
	var wg sync.WaitGroup
	for g := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				w.Access(Holder{User: "alice", Role: "admin", SessionID: fmt.Sprint(g)}, "127.0.0.1", "GET", fmt.Sprintf("/%d", i), 200, 10, time.Millisecond, nil)
			}
		}()
	}
	wg.Wait()
	if err := c.Stop(context.Background(), time.Now()); err != nil {
		t.Fatal(err)
	}
	res := alVerify(t, VerifyOptions{}, Data("batched.log", []byte(out.String())))
	if !res.Intact || res.Events != writers*each {
		t.Fatalf("intact %v, %d events, want %d; first break %v", res.Intact, res.Events, writers*each, res.FirstBreak())
	}
	if out.writes >= writers*each/10 {
		t.Errorf("%d writes for %d events: not batched", out.writes, writers*each)
	}
}

// A full queue makes writers wait, counts it, and loses nothing.
func TestBatchedOutputFullQueueWaitsAndLosesNothing(t *testing.T) {
	out := &lockedBuffer{gate: make(chan struct{})}
	c := NewChain("full")
	c.Batch(Output{Writer: out, FlushInterval: time.Millisecond, Queue: 4})
	w := NewWriter(alLogger(&bytes.Buffer{}), c, time.Now)
	const events = 200
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range events {
			w.Event("evt", zap.Int("i", i))
		}
	}()
	// The flusher holds one batch in the gated write, the queue fills behind it.
	deadline := time.Now().Add(10 * time.Second)
	for c.QueueWaits() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no writer waited for a full queue")
		}
		time.Sleep(time.Millisecond)
	}
	select {
	case <-done:
		t.Fatal("every event was queued while the output was stuck: the queue is not bounded")
	default:
	}
	close(out.gate)
	<-done
	if err := c.Stop(context.Background(), time.Now()); err != nil {
		t.Fatal(err)
	}
	res := alVerify(t, VerifyOptions{}, Data("full.log", []byte(out.String())))
	if !res.Intact || res.Events != events {
		t.Fatalf("intact %v, %d events, want %d; first break %v", res.Intact, res.Events, events, res.FirstBreak())
	}
	for i, line := range alLines(out.String()) {
		if want := fmt.Sprintf(`"i":%d`, i); !strings.Contains(line, want) {
			t.Fatalf("line %d is not event %d: %s", i+1, i, line)
		}
	}
}

// Events reach the output without a Flush: the flusher writes within its interval.
func TestBatchedOutputFlushesOnItsOwn(t *testing.T) {
	out := &lockedBuffer{}
	c := NewChain("tick")
	c.Batch(Output{Writer: out, FlushInterval: 10 * time.Millisecond})
	defer c.Stop(context.Background(), time.Now())
	NewWriter(alLogger(&bytes.Buffer{}), c, time.Now).Event("evt", zap.String("k", "v"))
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(out.String(), `"k":"v"`) {
		if time.Now().After(deadline) {
			t.Fatal("the event was never written")
		}
		time.Sleep(time.Millisecond)
	}
}

// The head is saved before a batch is written, and at a stop as stopped; the next
// start says how the last one stopped, and checkpoints cover every event.
func TestBatchedOutputHeadsCheckpointsAndRestart(t *testing.T) {
	ctx := context.Background()
	st := &certmagic.FileStorage{Path: t.TempDir()}
	key := testAuditKey(t)
	out := &lockedBuffer{}

	c1, err := LoadChain(ctx, st, "inst-a")
	if err != nil {
		t.Fatal(err)
	}
	c1.SetMarks(Marks{Key: key, Every: 10, Interval: time.Hour})
	c1.Batch(Output{Writer: out, FlushInterval: time.Hour})
	w1 := NewWriter(alLogger(&bytes.Buffer{}), c1, time.Now)
	w1.Started()
	for i := range 24 {
		w1.Event("evt", zap.Int("i", i))
	}
	c1.Flush()
	heads, err := LoadChainHeads(ctx, st)
	if err != nil || len(heads) != 1 || heads[0].Seq != c1.Head().Seq || heads[0].State != headRunning {
		t.Fatalf("head saved before the write: %+v (%v), the chain stands at %d", heads, err, c1.Head().Seq)
	}
	// A crash: c1 is dropped without a stop. Its head says running.
	c2, err := LoadChain(ctx, st, "inst-a")
	if err != nil {
		t.Fatal(err)
	}
	c2.SetMarks(Marks{Key: key, Every: 10, Interval: time.Hour})
	c2.Batch(Output{Writer: out, FlushInterval: time.Hour})
	w2 := NewWriter(alLogger(&bytes.Buffer{}), c2, time.Now)
	w2.Started()
	w2.Event("evt", zap.Int("i", 99))
	if err := c2.Stop(ctx, time.Now()); err != nil {
		t.Fatal(err)
	}
	c3, err := LoadChain(ctx, st, "inst-a")
	if err != nil || c3.previousStop != StopClean {
		t.Fatalf("after a stop, previous stop %q (%v)", c3.previousStop, err)
	}

	var started []string
	checkpoints := 0
	for _, line := range alLines(out.String()) {
		l := ParseLine("out", 0, []byte(line))
		switch l.Event() {
		case EventAuditStarted:
			started = append(started, l.Text("previous_stop"))
		case EventCheckpoint:
			checkpoints++
		}
	}
	if want := []string{StopNone, StopUnclean}; fmt.Sprint(started) != fmt.Sprint(want) {
		t.Errorf("audit_started previous_stop %v, want %v", started, want)
	}
	// c1: audit_started (1) and 9 events, checkpoint 11 over 1…10; 10 events,
	// checkpoint 22 over 12…21; 5 events, which the crash leaves uncovered. c2:
	// audit_started and one event, and the checkpoint its stop forces.
	if checkpoints != 3 {
		t.Errorf("%d checkpoints, want 3:\n%s", checkpoints, out.String())
	}
	res := alVerify(t, VerifyOptions{}, Data("out", []byte(out.String())))
	if !res.Intact {
		t.Fatalf("the chain across the crash does not verify: %v", res.FirstBreak())
	}
}

// An access event queued as a record reads as the one written through zap, whatever it
// carries: a body digest (whole or cut, stored or dropped), break glass, fresh.
func TestBatchedAccessEventsAreZapsEvents(t *testing.T) {
	h := Holder{User: "alice", Role: "db-admin", SessionID: "s-1"}
	glass := Holder{User: "bob", Role: "db-admin", SessionID: "s-2", BreakGlass: true, Fresh: "5m"}
	events := []struct {
		h    Holder
		body *BodyDigest
	}{
		{h, nil},
		{h, &BodyDigest{Size: 12, SHA256: "ab", Complete: true}},
		{h, &BodyDigest{Size: 1 << 20, SHA256: "cd", Complete: false, Key: "jit/bodies/x", Dropped: true}},
		{glass, &BodyDigest{Size: 3, SHA256: "ef", Complete: true, Key: "jit/bodies/y"}},
		{glass, nil},
	}
	write := func(w *Writer) {
		for i, e := range events {
			w.Access(e.h, "192.0.2.1", "POST", fmt.Sprintf("/api/%d?q=\"x\"", i), 200+i, int64(100*i), time.Duration(i)*time.Millisecond, e.body)
		}
	}
	var viaZap bytes.Buffer
	write(NewWriter(alLogger(&viaZap), NewChain("acc"), func() time.Time { return alT0 }))

	var batched lockedBuffer
	c := NewChain("acc")
	c.Batch(Output{Writer: &batched, FlushInterval: time.Hour})
	write(NewWriter(alLogger(&bytes.Buffer{}), c, func() time.Time { return alT0 }))
	c.Unbatch(alT0)

	zapLines := strings.Split(strings.TrimSpace(viaZap.String()), "\n")
	ourLines := strings.Split(strings.TrimSpace(batched.String()), "\n")
	if len(zapLines) != len(events) || len(ourLines) != len(events) {
		t.Fatalf("%d lines through zap and %d batched, want %d each:\n%s\n%s", len(zapLines), len(ourLines), len(events), viaZap.String(), batched.String())
	}
	for i := range events {
		var want, got map[string]any
		if err := json.Unmarshal([]byte(zapLines[i]), &want); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal([]byte(ourLines[i]), &got); err != nil {
			t.Fatal(err)
		}
		for _, m := range []map[string]any{want, got} {
			delete(m, "ts")
			delete(m, "caller")
		}
		if fmt.Sprint(want) != fmt.Sprint(got) {
			t.Errorf("event %d:\nzap     %v\nbatched %v", i, want, got)
		}
	}
	if got := fmt.Sprint(ourLines); !strings.Contains(got, `"body_recorded":false`) || !strings.Contains(got, `"fresh":"5m"`) || !strings.Contains(got, `"break_glass":true`) {
		t.Errorf("the batched lines lack a field the events carry:\n%s", batched.String())
	}
}
