package session

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/caddy-jit/caddy-jit/state"
)

// What an instance served under each session lives in memory (Live), and a reload
// keeps it. A stop would lose it: the session_ended written after the next start
// would count only the requests served since, while the instance's log holds them all.
// So a clean stop saves the counts of the sessions that have not ended (SaveLive),
// and the next start of the same instance takes them back (RestoreLive). A crash
// saves nothing: the session_ended of a session served before it counts only the
// requests served after the restart. A save names the audit chain's head at the stop
// it was made at, and is taken back only by a start that resumes the chain from that
// very head: one the instance wrote past since (it ran, and crashed, without it) would
// count requests twice.

// liveFolder holds each instance's saved counts, by Caddy's instance id.
const liveFolder = keyPrefix + "live/"

func liveKey(instance string) string { return liveFolder + state.Name(instance) + ".json" }

// SavedSession is a session's entry in Live, as a stop saves it.
type SavedSession struct {
	ID      string `json:"id"`
	User    string `json:"user"`
	Role    string `json:"role"`
	Expires int64  `json:"expires"`
	Usage   Usage  `json:"usage"`
}

// Saved returns the sessions that have served requests here and have not ended.
func (l *Live) Saved() []SavedSession {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []SavedSession
	for id, s := range l.sessions {
		if s.ended == nil && s.used.Requests > 0 {
			out = append(out, SavedSession{ID: id, User: s.user, Role: s.role, Expires: s.expires, Usage: s.used})
		}
	}
	return out
}

// Restore takes saved sessions back: their counts go on. One that was revoked while
// the instance was stopped (revoked says so) ends now, as a revocation whose how and
// by OnEnd looks up; one that expired meanwhile ends at the next Sweep.
func (l *Live) Restore(saved []SavedSession, revoked func(sessionID string) bool) {
	var ended []*Ended
	l.mu.Lock()
	for _, v := range saved {
		if v.ID == "" || l.sessions[v.ID] != nil {
			continue
		}
		s := &liveSession{id: v.ID, expires: v.Expires, user: v.User, role: v.Role, used: v.Usage,
			cancels: make(map[context.Context]context.CancelFunc, 4)}
		l.sessions[v.ID] = s
		if revoked(v.ID) {
			s.ended = &Ended{SessionID: v.ID, User: v.User, Role: v.Role, How: EndedRevoked}
			if e := l.leaveIfDone(s); e != nil {
				ended = append(ended, e)
			}
		}
	}
	l.mu.Unlock()
	for _, e := range ended {
		l.tell(e)
	}
}

// SaveLive saves what this instance served under the sessions that have not ended,
// for its next start, with the chain head (chainSeq) the stop left; nothing to save
// removes an earlier save.
func SaveLive(ctx context.Context, st state.Store, instance string, l *Live, chainSeq int64, at time.Time) error {
	saved := l.Saved()
	if len(saved) == 0 {
		return state.DeleteGone(ctx, st, liveKey(instance))
	}
	return state.StoreJSON(ctx, st, liveKey(instance), savedLive{Saved: at.UTC(), ChainSeq: chainSeq, Sessions: saved})
}

// ErrSavedLiveStale is a save made at another chain head than the one this start
// resumes from: it is dropped, not taken back.
var ErrSavedLiveStale = errors.New("the saved counts are of an earlier run than the last one (the instance ran past that stop and did not stop cleanly): dropped, so that no request is counted twice")

// RestoreLive takes back what SaveLive saved for this instance, when this start resumes
// the chain from the head it was saved at (chainSeq). The save is removed first, and
// taken back only once it is gone: after a crash, the next start must not count the
// same requests again.
func RestoreLive(ctx context.Context, st state.Store, instance string, l *Live, revocations *Revocations, chainSeq int64) error {
	var saved savedLive
	found, err := state.LoadJSON(ctx, st, liveKey(instance), &saved)
	if err != nil || !found {
		return err
	}
	if err := state.DeleteGone(ctx, st, liveKey(instance)); err != nil {
		return fmt.Errorf("removing the saved counts before taking them back: %w", err)
	}
	if saved.ChainSeq != chainSeq {
		return fmt.Errorf("%w (saved at chain seq %d, resumed at %d)", ErrSavedLiveStale, saved.ChainSeq, chainSeq)
	}
	l.Restore(saved.Sessions, revocations.Revoked)
	return nil
}

// pruneSavedLive deletes the counts saved more than keep ago: no session they count
// can still be running, and an instance whose id changed (its data directory was not
// kept) never takes them back.
func pruneSavedLive(ctx context.Context, st state.Store, now time.Time, keep time.Duration) error {
	keys, err := state.RecordKeys(ctx, st, liveFolder, false, "the counts saved at a stop")
	if err != nil {
		return err
	}
	for _, key := range keys {
		var saved savedLive
		found, err := state.LoadJSON(ctx, st, key, &saved)
		if err != nil || !found || now.Sub(saved.Saved) <= keep {
			continue // an unreadable save is left for the start that reads it to report
		}
		if err := state.DeleteGone(ctx, st, key); err != nil {
			return err
		}
	}
	return nil
}

type savedLive struct {
	Saved    time.Time      `json:"saved"`
	ChainSeq int64          `json:"chain_seq"`
	Sessions []SavedSession `json:"sessions"`
}
