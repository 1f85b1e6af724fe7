package audit

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"go.uber.org/zap"
)

// A witness is a service off the host that keeps the checkpoints it is sent: once one
// has it, an attacker who takes the host can no longer cut the log short unseen.
// Checkpoints are POSTed one by one as the event's JSON (its signature inside), in
// order, each retried until the witness answers 2xx.

// witnessQueue bounds the checkpoints waiting for an unreachable witness; the oldest
// is dropped first, as each newer checkpoint covers at least as much of the chain.
const witnessQueue = 1024

// witnessBackoff is the first wait after a failed POST, doubling up to witnessMaxBackoff.
const (
	witnessBackoff    = 250 * time.Millisecond
	witnessMaxBackoff = 30 * time.Second
	witnessTimeout    = 10 * time.Second
)

// WitnessCounts are a witness's counters since it started.
type WitnessCounts struct {
	Sent, Failed, Dropped int64
	Pending               int
}

// Witness sends checkpoints to one URL.
type Witness struct {
	url    string
	client *http.Client
	log    *zap.Logger

	mu      sync.Mutex
	queue   [][]byte
	counts  WitnessCounts
	wake    chan struct{}
	drained chan struct{} // closed and replaced each time the queue empties
	ctx     context.Context
	cancel  context.CancelFunc
	done    chan struct{}
}

// NewWitness starts sending to url; client nil is a client with a 10 s timeout.
func NewWitness(url string, client *http.Client, log *zap.Logger) *Witness {
	if client == nil {
		client = &http.Client{Timeout: witnessTimeout}
	}
	ctx, cancel := context.WithCancel(context.Background())
	w := &Witness{url: url, client: client, log: log, wake: make(chan struct{}, 1),
		drained: make(chan struct{}), ctx: ctx, cancel: cancel, done: make(chan struct{})}
	close(w.drained)
	go w.run()
	return w
}

// Send queues a checkpoint line (a JSON object) for the witness.
func (w *Witness) Send(line []byte) {
	w.mu.Lock()
	if len(w.queue) == 0 {
		w.drained = make(chan struct{})
	}
	if len(w.queue) >= witnessQueue {
		w.queue = w.queue[1:]
		w.counts.Dropped++
	}
	w.queue = append(w.queue, bytes.Clone(line))
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// Counts returns the witness's counters.
func (w *Witness) Counts() WitnessCounts {
	w.mu.Lock()
	defer w.mu.Unlock()
	c := w.counts
	c.Pending = len(w.queue)
	return c
}

// Stop waits until every queued checkpoint was taken or ctx ends, then stops; it
// reports the checkpoints left unsent.
func (w *Witness) Stop(ctx context.Context) error {
	w.mu.Lock()
	drained := w.drained
	w.mu.Unlock()
	select {
	case <-drained:
	case <-ctx.Done():
	}
	w.cancel()
	<-w.done
	if n := w.Counts().Pending; n > 0 {
		return fmt.Errorf("the audit witness %s did not take the last %d checkpoint(s)", w.url, n)
	}
	return nil
}

func (w *Witness) run() {
	defer close(w.done)
	backoff := witnessBackoff
	for {
		w.mu.Lock()
		var next []byte
		if len(w.queue) > 0 {
			next = w.queue[0]
		}
		w.mu.Unlock()
		if next == nil {
			select {
			case <-w.wake:
				continue
			case <-w.ctx.Done():
				return
			}
		}
		if err := w.post(next); err != nil {
			w.mu.Lock()
			w.counts.Failed++
			w.mu.Unlock()
			w.log.Warn("the audit witness did not take a checkpoint; retrying", zap.String("witness", w.url),
				zap.Duration("retry_in", backoff), zap.Error(err))
			select {
			case <-time.After(backoff):
			case <-w.ctx.Done():
				return
			}
			backoff = min(backoff*2, witnessMaxBackoff)
			continue
		}
		backoff = witnessBackoff
		w.mu.Lock()
		if len(w.queue) > 0 && &w.queue[0][0] == &next[0] {
			w.queue = w.queue[1:]
		}
		w.counts.Sent++
		if len(w.queue) == 0 {
			close(w.drained)
		}
		w.mu.Unlock()
	}
}

func (w *Witness) post(line []byte) error {
	req, err := http.NewRequestWithContext(w.ctx, http.MethodPost, w.url, bytes.NewReader(line))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := w.client.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return errors.New("the witness answered " + resp.Status)
	}
	return nil
}
