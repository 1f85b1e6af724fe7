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
type Live struct {
	mu       sync.Mutex
	sessions map[string]*liveSession
}

type liveSession struct {
	expires int64
	// cancels is keyed by each request's own context.
	cancels map[context.Context]context.CancelFunc
}

// NewLive makes an empty registry.
func NewLive() *Live { return &Live{sessions: make(map[string]*liveSession)} }

// Register records a request in flight under a session. It allocates nothing once
// the session has had a request: the session's entry stays until the session ends.
func (l *Live) Register(c *Claims, ctx context.Context, cancel context.CancelFunc) {
	l.mu.Lock()
	s := l.sessions[c.SessionID]
	if s == nil {
		s = &liveSession{expires: c.Expiry, cancels: make(map[context.Context]context.CancelFunc, 4)}
		l.sessions[c.SessionID] = s
	}
	s.cancels[ctx] = cancel
	l.mu.Unlock()
}

// Done removes a finished request.
func (l *Live) Done(c *Claims, ctx context.Context) {
	l.mu.Lock()
	if s := l.sessions[c.SessionID]; s != nil {
		delete(s.cancels, ctx)
	}
	l.mu.Unlock()
}

// End cancels every request in flight under the session.
func (l *Live) End(sessionID string) {
	l.mu.Lock()
	s := l.sessions[sessionID]
	delete(l.sessions, sessionID)
	l.mu.Unlock()
	if s != nil {
		l.cancelAll(s)
	}
}

// EndAll cancels every request in flight, of every session.
func (l *Live) EndAll() {
	l.mu.Lock()
	all := make([]*liveSession, 0, len(l.sessions))
	for id, s := range l.sessions {
		all = append(all, s)
		delete(l.sessions, id)
	}
	l.mu.Unlock()
	for _, s := range all {
		l.cancelAll(s)
	}
}

// Sweep cancels the requests of every session that has expired.
func (l *Live) Sweep(now time.Time) {
	unix := now.Unix()
	var expired []*liveSession
	l.mu.Lock()
	for id, s := range l.sessions {
		if s.expires <= unix {
			expired = append(expired, s)
			delete(l.sessions, id)
		}
	}
	l.mu.Unlock()
	for _, s := range expired {
		l.cancelAll(s)
	}
}

// Len returns the number of requests in flight.
func (l *Live) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, s := range l.sessions {
		n += len(s.cancels)
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
