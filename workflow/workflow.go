// Package workflow owns the way to a session past the step-up: activation against the
// policy, approval requests and their decisions, extensions, scheduled starts, the
// pickup of a waiting session by the browser that asked for it, withdrawal, and the
// notifications every step sends (the outbox that caddymodule delivers from).
//
// It drives package session (which records, signs and ends sessions) and package
// stepup (which checks codes); neither knows of it. Requests live in the store under
// jit/requests/, with an index by state and role (request_index.go).
package workflow

import (
	"context"
	"time"

	"github.com/caddy-jit/caddy-jit/session"
	"github.com/caddy-jit/caddy-jit/state"
	"github.com/caddy-jit/caddy-jit/stepup"
)

// Workflow turns eligibility into sessions: it checks an activation against the policy
// and the step-up, starts the session or opens a request for approvers, and carries
// requests and extensions to their end. The sessions it drives are embedded: a
// Workflow ends, lists and signs sessions as they do.
type Workflow struct {
	*session.Sessions
	StepUp   *stepup.Authenticator
	Requests *Requests
	// Notifier is told about every step of the workflow; nil tells no one.
	Notifier Notifier
	// Metrics counts activations; nil counts nothing.
	Metrics Metrics
	store   state.Store
	locks   state.Locks
}

// New makes the workflow over the store, driving sessions and stepUp. It tells the
// notify targets of every session that sessions ends.
func New(st state.Store, sessions *session.Sessions, stepUp *stepup.Authenticator) *Workflow {
	w := &Workflow{Sessions: sessions, StepUp: stepUp, Requests: &Requests{storage: st}, store: st}
	sessions.Ended = w.sessionEnded
	return w
}

// sessionEnded tells the notify targets that a session was deactivated or revoked.
func (a *Workflow) sessionEnded(rec *session.Record, how, by, reason string, now time.Time) {
	n := recordNotification(how, rec, now)
	n.By, n.Reason = by, reason
	a.notify(n)
}

// Prune deletes settled requests that no one needs any more. The caller holds the
// prune lock.
func (a *Workflow) Prune(ctx context.Context, now time.Time) error {
	return a.Requests.prune(ctx, now)
}
