package audit

import (
	"context"
	"errors"
	"time"

	"go.uber.org/zap"
)

// The chain's own events: audit_started, first of every process that writes the chain,
// and the signed checkpoints that a verifier holding the audit key (or a witness off
// the host) can trust when the host is not to be trusted.

// Default checkpoint settings: every this many events, or this long after the first
// event since the last one, whichever comes first.
const (
	DefaultCheckpointEvery    = 1000
	DefaultCheckpointInterval = 60 * time.Second
)

// Marks are the settings of the chain's own events; the newest config sets them.
type Marks struct {
	// Key signs checkpoints; without one, no checkpoint is written.
	Key      *AuditKey
	Every    int64
	Interval time.Duration
	// Witness, when set, receives every checkpoint.
	Witness *Witness
	// Log writes the chain's own events when the chain has no batched output.
	Log *zap.Logger
}

// checkpointRun is the run of events since the last checkpoint: from its first seq
// (0 before the first event), and when it began.
type checkpointRun struct {
	from int64
	at   time.Time
}

// SetMarks replaces the chain's own events' settings.
func (c *Chain) SetMarks(m Marks) {
	if m.Every <= 0 {
		m.Every = DefaultCheckpointEvery
	}
	if m.Interval <= 0 {
		m.Interval = DefaultCheckpointInterval
	}
	c.marks.Store(&m)
}

// Started writes audit_started, once per chain: the first event of this process, saying
// how the last one stopped and from which saved head the chain goes on.
func (a *Writer) Started() {
	c := a.chain
	if c.started.Swap(true) {
		return
	}
	c.mu.Lock()
	saved := c.head.Seq
	c.mu.Unlock()
	a.Event(EventAuditStarted, zap.String("previous_stop", c.previousStop), zap.Int64("saved_seq", saved))
}

// Tick writes a checkpoint that is due by time; the owner of the chain calls it now and
// then, so that a quiet instance's last events are covered within the interval.
func (c *Chain) Tick(now time.Time) {
	if b := c.batched.Load(); b != nil {
		b.kickFlush()
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.checkpointInline(now, false)
}

// Stop ends the chain's writing at a graceful stop: the batched output's last events
// are written, a checkpoint covers them, and the head is saved as stopped.
func (c *Chain) Stop(ctx context.Context, now time.Time) error {
	if b := c.batched.Load(); b != nil {
		b.stop(now, true)
	} else {
		c.mu.Lock()
		c.checkpointInline(now, true)
		c.mu.Unlock()
	}
	var err error
	if c.store != nil {
		err = c.SaveStopped(ctx, c.store)
	}
	if m := c.marks.Load(); m != nil && m.Witness != nil {
		err = errors.Join(err, m.Witness.Stop(ctx))
	}
	return err
}

func (c *Chain) checkpointInline(at time.Time, force bool) {
	m := c.marks.Load()
	if m == nil || m.Log == nil {
		return
	}
	line := c.checkpoint(m, at, force, func(all []zap.Field, _ []byte) {
		if ce := m.Log.Check(zap.InfoLevel, EventCheckpoint); ce != nil {
			ce.Write(all...)
		}
	})
	if line != nil && m.Witness != nil {
		m.Witness.Send(line)
	}
}

// checkpoint writes a checkpoint with emit (its fields, and its line ending in a
// newline) when one is due, or when forced and an event is not covered yet; it returns
// the line without the newline, for the witness. c.mu is held.
func (c *Chain) checkpoint(m *Marks, at time.Time, force bool, emit func(all []zap.Field, line []byte)) []byte {
	if m == nil || m.Key == nil || c.cp.from == 0 {
		return nil
	}
	count := c.head.Seq - c.cp.from + 1
	if count <= 0 || (!force && count < m.Every && at.Sub(c.cp.at) < m.Interval) {
		return nil
	}
	cp := Checkpoint{Instance: c.head.Instance, Seq: c.head.Seq, Head: c.head.Hash, FromSeq: c.cp.from,
		Count: count, Time: at.UTC().Format(time.RFC3339Nano)}
	signature, err := m.Key.SignCheckpoint(cp)
	if err != nil {
		return nil // an Ed25519 signature does not fail; the next one is due at once
	}
	all := c.link(EventCheckpoint, cp.Fields(signature, m.Key.ID), at)
	line := appendJSONLine(nil, EventCheckpoint, at, all)
	emit(all, line)
	c.forget(all)
	c.cp = checkpointRun{from: c.head.Seq + 1, at: at}
	return line[:len(line)-1]
}
