package session

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddy-jit/caddy-jit/internal/random"
)

// Recorded request bodies: a role with record_bodies keeps the first bytes of each
// mutating request's body in storage for session review. A request never waits for
// that write (DESIGN.md, "Hot path"): it takes a key at once, hands the bytes to a
// BodyWriter and goes on; the writer stores them in the background.

// Bounds of what waits to be written: beyond either, a body is dropped rather than
// making a request wait or memory grow.
const (
	DefaultBodyQueueLength = 1024
	DefaultBodyQueueBytes  = 64 << 20
)

// Why a recorded body did not reach storage, as body_dropped events and metrics name it.
const (
	// BodyQueueFull: the queue was at its bound when the request ended.
	BodyQueueFull = "queue_full"
	// BodyStopped: the writer had stopped, or its drain at stop ran out of time.
	BodyStopped = "stopped"
	// BodyStorageError: storage refused the write.
	BodyStorageError = "storage_error"
)

// bodyReportEvery is how often, at most, drops of one reason are reported.
const bodyReportEvery = 10 * time.Second

// bodyFolder holds the recorded bodies of a session's mutating requests.
func bodyFolder(sessionID string) string { return keyPrefix + "bodies/" + sessionID }

// LoadBody reads a recorded body by the key its access event names.
func (s *Records) LoadBody(ctx context.Context, key string) ([]byte, error) {
	rest, ok := strings.CutPrefix(key, keyPrefix+"bodies/")
	sid, name, ok2 := strings.Cut(rest, "/")
	if !ok || !ok2 || !validSessionID(sid) || !strings.HasSuffix(name, ".body") || strings.ContainsAny(name, "/\\") || strings.Contains(name, "..") {
		return nil, fmt.Errorf("%q is not the key of a recorded body", key)
	}
	return s.storage.Load(ctx, key)
}

// BodyDrop is a recorded body that did not reach storage.
type BodyDrop struct {
	SessionID, User, Role string
	// Key is the key the access event named; empty in the summary at stop.
	Key    string
	Reason string
	// Err is storage's answer, for BodyStorageError.
	Err error
	// Count is how many bodies were dropped for this reason since the last report,
	// this one included.
	Count int
}

// BodyWriterConfig tells a BodyWriter its bounds and whom to tell about drops.
type BodyWriterConfig struct {
	// Length and Bytes bound the bodies waiting to be written. Defaults:
	// DefaultBodyQueueLength and DefaultBodyQueueBytes.
	Length int
	Bytes  int64
	// Dropped is called for every body that does not reach storage.
	Dropped func(reason string)
	// Report is called for the first drop of a burst: at most once every 10 s for
	// each reason, counting the drops since the last report; Stop reports the rest.
	Report func(BodyDrop)
	Now    Clock
}

// BodyWriter stores recorded bodies in the background, off the request path. Put never
// blocks; Stop writes everything queued before it returns.
type BodyWriter struct {
	records *Records
	cfg     BodyWriterConfig
	queue   chan queuedBody
	// waiting counts the bodies queued or being written, and their bytes.
	waiting, bytes atomic.Int64
	// mu keeps a Put from sending on the queue while Stop closes it.
	mu     sync.RWMutex
	closed bool
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}

	reportMu sync.Mutex
	bursts   map[string]*dropBurst
}

type queuedBody struct {
	sessionID, user, role, key string
	body                       []byte
}

// dropBurst is the reporting state of one reason.
type dropBurst struct {
	last    time.Time
	pending int
}

// StartBodyWriter starts a writer of recorded bodies into the records' storage.
func StartBodyWriter(records *Records, cfg BodyWriterConfig) *BodyWriter {
	if cfg.Length <= 0 {
		cfg.Length = DefaultBodyQueueLength
	}
	if cfg.Bytes <= 0 {
		cfg.Bytes = DefaultBodyQueueBytes
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	ctx, cancel := context.WithCancel(context.Background())
	w := &BodyWriter{records: records, cfg: cfg, queue: make(chan queuedBody, cfg.Length), ctx: ctx, cancel: cancel,
		done: make(chan struct{}), bursts: map[string]*dropBurst{}}
	go w.run()
	return w
}

// Put hands a body recorded under a session to the writer and returns the key it will
// have in storage. queued is false when the body was dropped instead (the queue is
// full or the writer stopped): the drop is counted and reported, and the caller's
// access event should say so. The writer keeps body; the caller must not change it.
func (w *BodyWriter) Put(c *Claims, body []byte) (key string, queued bool) {
	if !validSessionID(c.SessionID) {
		// A verified token always carries a valid id; never build a key from another.
		return "", false
	}
	b := queuedBody{sessionID: c.SessionID, user: c.Subject, role: c.Role, key: bodyFolder(c.SessionID) + "/" + random.Hex(8) + ".body", body: body}
	if reason := w.enqueue(b); reason != "" {
		w.drop(b, reason, nil)
		return b.key, false
	}
	return b.key, true
}

// enqueue queues b without waiting, or says why it could not.
func (w *BodyWriter) enqueue(b queuedBody) string {
	w.mu.RLock()
	defer w.mu.RUnlock()
	if w.closed {
		return BodyStopped
	}
	size := int64(len(b.body))
	if w.bytes.Add(size) > w.cfg.Bytes {
		w.bytes.Add(-size)
		return BodyQueueFull
	}
	w.waiting.Add(1)
	select {
	case w.queue <- b:
		return ""
	default:
		w.waiting.Add(-1)
		w.bytes.Add(-size)
		return BodyQueueFull
	}
}

func (w *BodyWriter) run() {
	defer close(w.done)
	for b := range w.queue {
		if w.ctx.Err() != nil {
			w.drop(b, BodyStopped, nil)
		} else if err := w.records.storage.Store(w.ctx, b.key, b.body); err != nil {
			w.drop(b, BodyStorageError, fmt.Errorf("writing %s to storage: %w", b.key, err))
		}
		w.bytes.Add(-int64(len(b.body)))
		w.waiting.Add(-1)
	}
}

// Waiting returns how many bodies are queued or being written.
func (w *BodyWriter) Waiting() int { return int(w.waiting.Load()) }

// Stop takes no more bodies and writes the ones queued. It waits until they are in
// storage or ctx ends; then it gives up on the rest, which it reports as dropped.
func (w *BodyWriter) Stop(ctx context.Context) error {
	w.mu.Lock()
	if !w.closed {
		w.closed = true
		close(w.queue)
	}
	w.mu.Unlock()
	select {
	case <-w.done:
		w.reportPending()
		return nil
	case <-ctx.Done():
	}
	left := w.waiting.Load()
	// The writer now drops what is left instead of writing it.
	w.cancel()
	return fmt.Errorf("%d recorded request bodies were not yet in storage when the wait for them ended (%w); they are dropped", left, context.Cause(ctx))
}

// drop counts a body that will not reach storage, and reports it if it starts a burst.
func (w *BodyWriter) drop(b queuedBody, reason string, err error) {
	if w.cfg.Dropped != nil {
		w.cfg.Dropped(reason)
	}
	t := w.cfg.Now()
	w.reportMu.Lock()
	burst := w.bursts[reason]
	if burst == nil {
		burst = new(dropBurst)
		w.bursts[reason] = burst
	}
	burst.pending++
	if !burst.last.IsZero() && t.Sub(burst.last) < bodyReportEvery {
		w.reportMu.Unlock()
		return
	}
	d := BodyDrop{SessionID: b.sessionID, User: b.user, Role: b.role, Key: b.key, Reason: reason, Err: err, Count: burst.pending}
	burst.last, burst.pending = t, 0
	w.reportMu.Unlock()
	if w.cfg.Report != nil {
		w.cfg.Report(d)
	}
}

// reportPending reports the drops that a burst left unreported.
func (w *BodyWriter) reportPending() {
	w.reportMu.Lock()
	var ds []BodyDrop
	for reason, burst := range w.bursts {
		if burst.pending > 0 {
			ds = append(ds, BodyDrop{Reason: reason, Count: burst.pending})
			burst.pending = 0
		}
	}
	w.reportMu.Unlock()
	if w.cfg.Report != nil {
		for _, d := range ds {
			w.cfg.Report(d)
		}
	}
}
