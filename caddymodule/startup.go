package caddymodule

import (
	"context"
	"net/http"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// A config's handlers can be asked before its jit app has started: Caddy starts its
// apps one after the other, in no set order, and the http app serves as soon as it
// starts. Until the jit app's Start, the process's audit trail is not set up: its
// output is not open (events would go to Caddy's logging, or nowhere), and
// audit_started, which every process's part of the chain begins with, is not written.
// So a request waits for the start, briefly, and is turned away if it does not come.

// startWait bounds how long a request waits for its config's jit app to start.
var startWait = 10 * time.Second

// startGate holds requests until the app has started.
type startGate struct {
	// done is closed when the wait ends, as state then says.
	done  chan struct{}
	state atomic.Int32
}

// The states of a startGate.
const (
	startWaiting int32 = iota
	startDone
	startFailed
)

func newStartGate() *startGate { return &startGate{done: make(chan struct{})} }

// end lets waiting requests go on: through, when Start has set up the audit trail;
// turned away, when a config that never started (another app failed to) is cleaned
// up. The first call decides.
func (g *startGate) end(started bool) {
	if g == nil {
		return
	}
	state := startFailed
	if started {
		state = startDone
	}
	if g.state.CompareAndSwap(startWaiting, state) {
		close(g.done)
	}
}

// open reports whether requests may be served; an app made without Provision (tests,
// tools) has no gate, and is open.
func (g *startGate) open() bool { return g == nil || g.state.Load() == startDone }

// awaitStart waits for the app to start, and answers 503 if it does not within
// startWait, if it never will, or if the client goes away first.
func (h *Handler) awaitStart(w http.ResponseWriter, r *http.Request) error {
	timer := time.NewTimer(startWait)
	defer timer.Stop()
	select {
	case <-h.app.start.done:
		if h.app.start.open() {
			return nil
		}
	case <-timer.C:
	case <-r.Context().Done():
		return context.Cause(r.Context())
	}
	countDenial("not_started")
	h.logger.Warn("a request came before caddy-jit started and was turned away: its audit trail is not open yet",
		zap.String("client_ip", clientIP(r)), zap.String("method", r.Method), zap.String("uri", r.RequestURI))
	w.Header().Set("Retry-After", "1")
	return h.turnAway(w, r, gateRefusal{status: http.StatusServiceUnavailable, code: "not_started", title: "Starting",
		message: "caddy-jit is starting, and privileged access waits until its audit trail is open; try again in a moment."})
}
