package caddymodule

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/caddy-jit/caddy-jit/session"
)

// What this instance served under each session is kept across a clean stop, so that a
// session_ended written after the restart counts the requests served before it too
// (see session.SaveLive). Taken back at the first Start, not at Provision: a config
// that is only validated, or fails to provision, must not use the save up, and a
// session that ended meanwhile is told through the started config's audit log.

// liveCountsTimeout bounds the storage calls that save and take back the counts.
const liveCountsTimeout = 5 * time.Second

// streamsDrain bounds the wait, at a stop, for the requests cancelled by endStreams to
// be counted: hijacked connections (WebSockets) outlive the servers' shutdown.
const streamsDrain = 2 * time.Second

type liveCounts struct {
	// resumedSeq is the audit chain head this start resumed from: a save made at
	// another head is of an earlier run.
	resumedSeq int64
	once       sync.Once
	// restored is set once the save was looked for: a state that never started leaves
	// an earlier save alone.
	restored bool
}

// restoreLive takes back the counts of the instance's last clean stop, once.
func (s *sharedState) restoreLive(logger *zap.Logger) {
	s.live.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), liveCountsTimeout)
		defer cancel()
		err := session.RestoreLive(ctx, s.storage, s.instance, s.state.Live, s.state.Revocations, s.live.resumedSeq)
		s.live.restored = true
		switch {
		case errors.Is(err, session.ErrSavedLiveStale):
			logger.Warn("what this instance served under sessions before its last clean stop was not taken back: their session_ended events count only the requests served from now on", zap.Error(err))
		case err != nil:
			logger.Warn("reading what this instance served under sessions before it stopped: their session_ended events count only the requests served from now on", zap.Error(err))
		}
	})
}

// endStreams cancels what is still open under sessions at a stop (WebSockets, streams),
// and waits a little for them to be counted.
func (s *sharedState) endStreams() {
	live := s.state.Live
	live.CancelAll()
	deadline := time.Now().Add(streamsDrain)
	for live.Len() > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
}

// saveLive saves the counts for the next start, after the chain's last event: the save
// names the head the next start resumes from. A state that never started saves
// nothing, and leaves an earlier save for the next start.
func (s *sharedState) saveLive(ctx context.Context) error {
	s.live.once.Do(func() {}) // no restore after this
	if !s.live.restored {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), liveCountsTimeout)
	defer cancel()
	if err := session.SaveLive(ctx, s.storage, s.instance, s.state.Live, s.state.Chain.Head().Seq, now()); err != nil {
		return fmt.Errorf("saving what this instance served under sessions, for their session_ended after the next start: %w", err)
	}
	return nil
}
