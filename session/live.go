package session

import (
	"context"
	"sync"
	"time"
)

// Live tracks the requests in flight under each session, so that the end of a session
// also ends its open WebSockets and streams, not only its next request. Each request
// registers its context and the function that cancels it; a revocation cancels the
// session's requests at once, and Sweep cancels those whose session has expired.
//
// It also counts what each session was served here (Usage), and tells OnEnd once the
// session ends: revoked or deactivated (End), or expired (Sweep).
type Live struct {
	mu       sync.Mutex
	sessions map[string]*liveSession
	// endings are how sessions ended here are ending, told by Ending just before
	// their revocation reaches End.
	endings map[string][2]string
	// OnEnd, when set, hears of each session that had requests here, once, when it
	// ends. It is called without the lock held, and must not block for long.
	OnEnd func(Ended)
}

type liveSession struct {
	id         string
	expires    int64
	user, role string
	// cancels is keyed by each request's own context.
	cancels map[context.Context]context.CancelFunc
	used    Usage
	// ended is set once the session ended; it leaves the registry, and OnEnd hears
	// of it, when its last request in flight is done, so that the usage counts every
	// request that was served.
	ended *Ended
	// held keeps an end this instance made from OnEnd until Release: its own event
	// (deactivated, revoked) comes first in the log.
	held bool
}

// NewLive makes an empty registry.
func NewLive() *Live { return &Live{sessions: make(map[string]*liveSession)} }

// Register records a request in flight under a session. It allocates nothing once
// the session has had a request: the session's entry stays until the session ends.
// A token of an extended session (same id, later expiry) moves the entry's expiry, so
// that Sweep does not end the session at its first end.
func (l *Live) Register(c *Claims, ctx context.Context, cancel context.CancelFunc) {
	l.mu.Lock()
	s := l.sessions[c.SessionID]
	if s == nil {
		s = &liveSession{id: c.SessionID, expires: c.Expiry, user: c.Subject, role: c.Role, cancels: make(map[context.Context]context.CancelFunc, 4)}
		l.sessions[c.SessionID] = s
	} else if s.ended == nil && c.Expiry > s.expires {
		s.expires = c.Expiry
	}
	s.cancels[ctx] = cancel
	l.mu.Unlock()
}

// Done removes a finished request; used, unless nil, is what it was served, counted
// in the session's usage (nil for a request refused after it registered).
func (l *Live) Done(c *Claims, ctx context.Context, used *Use) {
	var last *Ended
	l.mu.Lock()
	if s := l.sessions[c.SessionID]; s != nil {
		delete(s.cancels, ctx)
		if used != nil {
			s.used.add(*used)
		}
		last = l.leaveIfDone(s)
	}
	l.mu.Unlock()
	l.tell(last)
}

// Ending tells End how the session it is about to hear of ended, and by whom: this
// instance ended it.
func (l *Live) Ending(sessionID, how, by string) {
	l.mu.Lock()
	if l.endings == nil {
		l.endings = make(map[string][2]string)
	}
	l.endings[sessionID] = [2]string{how, by}
	l.mu.Unlock()
}

// Release lets OnEnd hear of a session this instance ended (see Ending), once its
// requests in flight are done.
func (l *Live) Release(sessionID string) {
	l.mu.Lock()
	delete(l.endings, sessionID)
	var now *Ended
	if s := l.sessions[sessionID]; s != nil && s.held {
		s.held = false
		now = l.leaveIfDone(s)
	}
	l.mu.Unlock()
	l.tell(now)
}

// End cancels every request in flight under the session, which was revoked.
func (l *Live) End(sessionID string) {
	l.mu.Lock()
	ending, known := l.endings[sessionID]
	delete(l.endings, sessionID)
	s := l.sessions[sessionID]
	var now *Ended
	if s != nil && s.ended == nil {
		how := EndedRevoked
		if known {
			how = ending[0]
		}
		s.ended = &Ended{SessionID: sessionID, User: s.user, Role: s.role, How: how, By: ending[1], Known: known}
		s.held = known
		now = l.leaveIfDone(s)
	}
	l.mu.Unlock()
	if s != nil {
		l.cancelAll(s)
	}
	l.tell(now)
}

// EndAll cancels every request in flight, of every session: the store is out of
// reach too long to trust. The sessions have not ended: their usage is kept.
func (l *Live) EndAll() {
	var cancels []context.CancelFunc
	l.mu.Lock()
	for _, s := range l.sessions {
		for ctx, cancel := range s.cancels {
			cancels = append(cancels, cancel)
			delete(s.cancels, ctx)
		}
	}
	l.mu.Unlock()
	for _, cancel := range cancels {
		cancel()
	}
}

// CancelAll cancels every request in flight, of every session, at a stop: unlike
// EndAll, each stays counted (Len) until it is done, so that the stop can wait for
// their usage.
func (l *Live) CancelAll() {
	var cancels []context.CancelFunc
	l.mu.Lock()
	for _, s := range l.sessions {
		for _, cancel := range s.cancels {
			cancels = append(cancels, cancel)
		}
	}
	l.mu.Unlock()
	for _, cancel := range cancels {
		cancel()
	}
}

// Sweep cancels the requests of every session that has expired.
func (l *Live) Sweep(now time.Time) {
	unix := now.Unix()
	var expired []*liveSession
	var done []*Ended
	l.mu.Lock()
	for id, s := range l.sessions {
		if s.expires <= unix && s.ended == nil {
			s.ended = &Ended{SessionID: id, User: s.user, Role: s.role, How: EndedExpired, Known: true}
			expired = append(expired, s)
			if e := l.leaveIfDone(s); e != nil {
				done = append(done, e)
			}
		}
	}
	l.mu.Unlock()
	for _, s := range expired {
		l.cancelAll(s)
	}
	for _, e := range done {
		l.tell(e)
	}
}

// Due lists the sessions Sweep would end as expired at now, by id and user: the
// caller may find in their records that one was extended elsewhere (Extend).
func (l *Live) Due(now time.Time) (due [][2]string) {
	unix := now.Unix()
	l.mu.Lock()
	defer l.mu.Unlock()
	for id, s := range l.sessions {
		if s.expires <= unix && s.ended == nil {
			due = append(due, [2]string{id, s.user})
		}
	}
	return due
}

// Extend moves a session's end to a later one its record holds: extended on another
// instance, or while this one was stopped, the session goes on here too.
func (l *Live) Extend(sessionID string, expires int64) {
	l.mu.Lock()
	if s := l.sessions[sessionID]; s != nil && s.ended == nil && expires > s.expires {
		s.expires = expires
	}
	l.mu.Unlock()
}

// leaveIfDone takes an ended session with no request in flight out of the registry,
// and returns what OnEnd is to hear of it: nil if it is not done, or served nothing
// here. The caller holds the lock.
func (l *Live) leaveIfDone(s *liveSession) *Ended {
	if s.ended == nil || s.held || len(s.cancels) > 0 {
		return nil
	}
	if l.sessions[s.id] == s {
		delete(l.sessions, s.id)
	}
	if s.used.Requests == 0 {
		return nil
	}
	e := *s.ended
	e.Usage = s.used
	return &e
}

// tell calls OnEnd, outside the lock.
func (l *Live) tell(e *Ended) {
	if e != nil && l.OnEnd != nil {
		l.OnEnd(*e)
	}
}

// Len returns the number of requests in flight under sessions that have not ended
// (those of an ended session are cancelled, and leave as they finish).
func (l *Live) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, s := range l.sessions {
		if s.ended == nil {
			n += len(s.cancels)
		}
	}
	return n
}

// cancelAll runs after the session left the registry; the lock still guards its
// map against the done functions of requests that finish meanwhile.
func (l *Live) cancelAll(s *liveSession) {
	l.mu.Lock()
	cancels := make([]context.CancelFunc, 0, len(s.cancels))
	for _, cancel := range s.cancels {
		cancels = append(cancels, cancel)
	}
	l.mu.Unlock()
	for _, cancel := range cancels {
		cancel()
	}
}
