package caddymodule

import (
	"context"
	"time"

	"go.uber.org/zap"

	"github.com/caddy-jit/caddy-jit/audit"
	"github.com/caddy-jit/caddy-jit/authority"
	"github.com/caddy-jit/caddy-jit/session"
)

// endLookup bounds the look at the record of a session another instance ended.
const endLookup = 5 * time.Second

// sessionEnded writes the session_ended event of a session this instance served, when
// it ends: through the newest config's audit log. One that another instance ended is
// told once its record says how and by whom (see howItEnded); where the record does
// not say in time, as revoked.
func (s *sharedState) sessionEnded(logger *zap.Logger) func(session.Ended) {
	return func(e session.Ended) {
		write := func(how, by string) {
			a := s.settings.Load().authority
			if a == nil {
				logger.Warn("a session ended before any config could audit it", zap.String("session_id", e.SessionID))
				return
			}
			writeEnded(a, e, how, by)
		}
		if e.Known {
			write(e.How, e.By)
			return
		}
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), endLookup)
			defer cancel()
			write(howItEnded(ctx, func(ctx context.Context) (*session.Record, error) {
				a := s.settings.Load().authority
				if a == nil {
					return nil, session.ErrSessionNotFound
				}
				return a.Records.Load(ctx, e.User, e.SessionID)
			}, e))
		}()
	}
}

func writeEnded(a *authority.Authority, e session.Ended, how, by string) {
	u := e.Usage
	a.Audit.SessionEnded(audit.SessionEnd{User: e.User, Role: e.Role, SessionID: e.SessionID, How: how, By: by,
		Requests: u.Requests, Mutating: u.Mutating, BytesIn: u.BytesIn, BytesOut: u.BytesOut,
		First: u.First, Last: u.Last, Statuses: u.Statuses})
}

// howItEnded reads how another instance ended a session, and who did, from the
// session's record. That instance stores the revocation first, which is what ended
// the session here, and the record that says how a moment later: a record that does
// not say yet is read again, until it does or ctx is done.
func howItEnded(ctx context.Context, load func(context.Context) (*session.Record, error), e session.Ended) (how, by string) {
	wait := 10 * time.Millisecond
	for {
		if rec, err := load(ctx); err == nil && rec.EndHow != "" {
			return rec.EndHow, rec.EndedBy
		}
		select {
		case <-ctx.Done():
			return e.How, e.By
		case <-time.After(wait):
		}
		wait = min(2*wait, 500*time.Millisecond)
	}
}
