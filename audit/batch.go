package audit

import (
	"context"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// The batched output: a request only copies its event's fields into a queue; a flusher
// links the queued events into the chain, encodes each once into its line (encode.go),
// saves the chain's head, and writes the batch with one Write. The queue is bounded and
// never drops: when it is full, the requests that write wait for the flusher.

// Defaults of the batched output.
const (
	DefaultFlushInterval = 50 * time.Millisecond
	DefaultQueueEvents   = 8192
)

// headSaveTimeout bounds the head's save before a batch is written.
const headSaveTimeout = 5 * time.Second

// Output is where and how the batched output writes.
type Output struct {
	Writer io.Writer
	// FlushInterval bounds how long an event waits in the queue.
	FlushInterval time.Duration
	// Queue is how many events may wait; a request finding it full waits for room.
	Queue int
	// OnError hears of a batch that could not be written (events is its size), and of
	// a head that could not be saved before one (events 0).
	OnError func(err error, events int)
	Now     func() time.Time
}

type queued struct {
	event string
	at    time.Time
	n     int // its fields, following the previous event's in batch.fields
	// access: the event is the next of batch.accesses, and has no fields of its own.
	access bool
}

type batch struct {
	events   []queued
	fields   []zap.Field
	accesses []accessRecord
}

type batcher struct {
	chain *Chain
	out   atomic.Pointer[Output]

	mu    sync.Mutex
	roomy sync.Cond // signalled when the flusher takes the queue
	cur   *batch
	spare *batch // nil while the flusher works on it
	// stopped: the flusher is gone, and whoever enqueues writes the batch itself.
	stopped bool

	kick    chan struct{}
	quit    chan struct{}
	done    chan struct{}
	flushMu sync.Mutex
	// Reused under flushMu.
	lines        []byte
	accessFields accessFields
}

// Batch makes the chain write through out, batched from now on; every config calls it
// and the newest one's output is used. The first call starts the flusher.
func (c *Chain) Batch(out Output) {
	if out.FlushInterval <= 0 {
		out.FlushInterval = DefaultFlushInterval
	}
	if out.Queue <= 0 {
		out.Queue = DefaultQueueEvents
	}
	if out.Now == nil {
		out.Now = time.Now
	}
	if out.OnError == nil {
		out.OnError = func(error, int) {}
	}
	if b := c.batched.Load(); b != nil {
		b.out.Store(&out)
		b.kickFlush()
		return
	}
	b := &batcher{chain: c, cur: &batch{}, spare: &batch{},
		kick: make(chan struct{}, 1), quit: make(chan struct{}), done: make(chan struct{})}
	b.roomy.L = &b.mu
	b.out.Store(&out)
	c.batched.Store(b)
	go b.run()
}

// Unbatch writes what is queued and goes back to writing each event through its logger.
func (c *Chain) Unbatch(now time.Time) {
	if b := c.batched.Swap(nil); b != nil {
		b.stop(now, false)
	}
}

// Flush writes the queued events now.
func (c *Chain) Flush() {
	if b := c.batched.Load(); b != nil {
		b.flush(b.out.Load().Now(), false)
	}
}

// QueueWaits counts the events whose writer waited for room in a full queue.
func (c *Chain) QueueWaits() int64 { return c.queueWaits.Load() }

func (b *batcher) kickFlush() {
	select {
	case b.kick <- struct{}{}:
	default:
	}
}

// enqueue queues one event, waiting while the queue is full.
func (b *batcher) enqueue(event string, fields []zap.Field, now func() time.Time) {
	out := b.waitForRoom()
	b.cur.events = append(b.cur.events, queued{event: event, at: now(), n: len(fields)})
	b.cur.fields = append(b.cur.fields, fields...)
	b.queuedOne(out)
}

// enqueueAccess queues an access event as its record, which the flusher turns into
// fields: the request copies one struct instead of building and copying them.
func (b *batcher) enqueueAccess(r *accessRecord, now func() time.Time) {
	out := b.waitForRoom()
	b.cur.events = append(b.cur.events, queued{event: EventAccess, at: now(), access: true})
	b.cur.accesses = append(b.cur.accesses, *r)
	b.queuedOne(out)
}

// waitForRoom locks b.mu once the queue has room (or the flusher is gone) and returns
// the output in use.
func (b *batcher) waitForRoom() *Output {
	out := b.out.Load()
	b.mu.Lock()
	waited := false
	for len(b.cur.events) >= out.Queue && !b.stopped {
		if !waited {
			waited = true
			b.chain.queueWaits.Add(1)
		}
		b.kickFlush()
		b.roomy.Wait()
	}
	return out
}

// queuedOne unlocks b.mu after an event was queued, and has it written: at once when
// the flusher is gone, early when the queue is half full.
func (b *batcher) queuedOne(out *Output) {
	n, stopped := len(b.cur.events), b.stopped
	b.mu.Unlock()
	switch {
	case stopped:
		b.flush(out.Now(), false)
	case n == out.Queue/2:
		b.kickFlush() // before the queue fills, not at the interval
	}
}

func (b *batcher) run() {
	defer close(b.done)
	timer := time.NewTimer(b.out.Load().FlushInterval)
	defer timer.Stop()
	for {
		select {
		case <-b.quit:
			return
		case <-b.kick:
		case <-timer.C:
		}
		out := b.out.Load()
		b.flush(out.Now(), false)
		timer.Reset(out.FlushInterval)
	}
}

// stop ends the flusher and writes the last batch, with a checkpoint when final.
func (b *batcher) stop(now time.Time, final bool) {
	b.mu.Lock()
	if b.stopped {
		b.mu.Unlock()
		return
	}
	b.stopped = true
	b.roomy.Broadcast()
	b.mu.Unlock()
	close(b.quit)
	<-b.done
	b.flush(now, final)
}

// flush links, encodes and writes the queued events, and a checkpoint when one is due.
func (b *batcher) flush(now time.Time, forceCheckpoint bool) {
	b.flushMu.Lock()
	defer b.flushMu.Unlock()
	b.mu.Lock()
	taken := b.cur
	b.cur, b.spare = b.spare, nil
	b.roomy.Broadcast()
	b.mu.Unlock()

	c := b.chain
	m := c.marks.Load()
	lines := b.lines[:0]
	c.mu.Lock()
	events := len(taken.events)
	var checkpoints [][]byte
	emit := func(_ []zap.Field, line []byte) {
		lines = append(lines, line...)
		events++
	}
	i, j := 0, 0
	for _, q := range taken.events {
		fields := taken.fields[i : i+q.n]
		if q.access {
			fields = taken.accesses[j].appendFields(b.accessFields[:0])
			j++
		}
		all := c.link(q.event, fields, q.at)
		lines = appendJSONLine(lines, q.event, q.at, all)
		c.forget(all)
		i += q.n
		if cp := c.checkpoint(m, q.at, false, emit); cp != nil {
			checkpoints = append(checkpoints, cp)
		}
	}
	if cp := c.checkpoint(m, now, forceCheckpoint, emit); cp != nil {
		checkpoints = append(checkpoints, cp)
	}
	c.mu.Unlock()

	if len(lines) > 0 {
		out := b.out.Load()
		if c.store != nil {
			// Saved before the write: after a crash, the chain goes on from a head at
			// or past the files' last line, and the events in between are a cut that
			// `verify` shows, never a fork.
			ctx, cancel := context.WithTimeout(context.Background(), headSaveTimeout)
			if err := c.Save(ctx, c.store); err != nil {
				out.OnError(err, 0)
			}
			cancel()
		}
		if _, err := out.Writer.Write(lines); err != nil {
			out.OnError(err, events)
		}
	}
	if m != nil && m.Witness != nil {
		for _, cp := range checkpoints {
			m.Witness.Send(cp)
		}
	}
	// No reference to a written event's strings outlives it.
	clear(taken.fields)
	clear(taken.accesses)
	clear(b.accessFields[:])
	taken.events, taken.fields, taken.accesses = taken.events[:0], taken.fields[:0], taken.accesses[:0]
	b.lines = lines[:0]
	b.mu.Lock()
	b.spare = taken
	b.mu.Unlock()
}
