package workflow

import (
	"context"
	"time"

	"github.com/caddy-jit/caddy-jit/policy"
	"github.com/caddy-jit/caddy-jit/session"
)

// withPlace runs fn, which stores a session's claim on the role over [start, end),
// once the role's max_active allows it beside every other session of the role,
// running or scheduled (except, the session being extended, is left out). Counting
// and storing happen under the role's lock, so that two claims at once, on any
// instance, cannot both take the last place. New sessions, scheduled starts, approved
// requests and extensions all claim their time through here. A refusal is an
// *ActivationError.
func (a *Workflow) withPlace(ctx context.Context, role *policy.Role, start, end time.Time, except string, now time.Time, fn func() error) error {
	if role.MaxActive <= 0 {
		return fn()
	}
	return a.locks.With(ctx, a.store, roleLock(role.Name), func() error {
		held, err := a.Records.Active(ctx, session.Filter{Role: role.Name}, now)
		if err != nil {
			return err
		}
		spans := make([]policy.Span, 0, len(held))
		for _, r := range held {
			if r.ID != except {
				spans = append(spans, policy.Span{Start: r.Start, End: r.Expires})
			}
		}
		if d := role.CheckPlace(spans, start, end); !d.Allowed {
			return &ActivationError{Reason: string(d.Reason), Message: d.Message}
		}
		return fn()
	})
}
