package session

import (
	"sync"
	"time"
)

// Live tracks the requests in flight under each session, so that the end of a session
// also ends its open WebSockets and streams, not only its next request. Each request
// registers the function that cancels it; a revocation cancels the session's requests
// at once, and Sweep cancels those whose session has expired.
type Live struct {
	mu       sync.Mutex
	sessions map[string]*liveSession
}

type liveSession struct {
	expires int64
	cancels map[*liveRequest]struct{}
}

type liveRequest struct{ cancel func() }

// NewLive makes an empty registry.
func NewLive() *Live { return &Live{sessions: make(map[string]*liveSession)} }

// Register records a request under a session and returns the function that removes
// it again, to call when the request is done.
func (l *Live) Register(c *Claims, cancel func()) (done func()) {
	req := &liveRequest{cancel: cancel}
	l.mu.Lock()
	s := l.sessions[c.SessionID]
	if s == nil {
		s = &liveSession{expires: c.Expiry, cancels: make(map[*liveRequest]struct{}, 1)}
		l.sessions[c.SessionID] = s
	}
	s.cancels[req] = struct{}{}
	l.mu.Unlock()
	return func() {
		l.mu.Lock()
		delete(s.cancels, req)
		if len(s.cancels) == 0 && l.sessions[c.SessionID] == s {
			delete(l.sessions, c.SessionID)
		}
		l.mu.Unlock()
	}
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

// Len returns the number of sessions with requests in flight.
func (l *Live) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.sessions)
}

// cancelAll runs after the session left the registry; the lock still guards its
// map against the done functions of requests that finish meanwhile.
func (l *Live) cancelAll(s *liveSession) {
	l.mu.Lock()
	cancels := make([]func(), 0, len(s.cancels))
	for req := range s.cancels {
		cancels = append(cancels, req.cancel)
	}
	l.mu.Unlock()
	for _, cancel := range cancels {
		cancel()
	}
}
