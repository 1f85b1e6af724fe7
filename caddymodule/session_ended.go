package caddymodule

import (
	"context"
	"time"

	"go.uber.org/zap"

	"github.com/caddy-jit/caddy-jit/audit"
	"github.com/caddy-jit/caddy-jit/session"
)

// endLookup bounds the look at the record of a session another instance ended.
const endLookup = 5 * time.Second

// sessionEnded writes the session_ended event of a session this instance served, when
// it ends: through the newest config's audit log. One that another instance ended is
// told after its record says how and by whom (it was stored before the revocation
// that ended the session here); where the record cannot be read, as revoked.
func (s *sharedState) sessionEnded(logger *zap.Logger) func(session.Ended) {
	return func(e session.Ended) {
		write := func(how, by string) {
			a := s.settings.Load().authority
			if a == nil {
				logger.Warn("a session ended before any config could audit it", zap.String("session_id", e.SessionID))
				return
			}
			u := e.Usage
			a.Audit.SessionEnded(audit.SessionEnd{User: e.User, Role: e.Role, SessionID: e.SessionID, How: how, By: by,
				Requests: u.Requests, Mutating: u.Mutating, BytesIn: u.BytesIn, BytesOut: u.BytesOut,
				First: u.First, Last: u.Last, Statuses: u.Statuses})
		}
		if e.Known {
			write(e.How, e.By)
			return
		}
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), endLookup)
			defer cancel()
			how, by := e.How, e.By
			if a := s.settings.Load().authority; a != nil {
				if rec, err := a.Records.Load(ctx, e.User, e.SessionID); err == nil && rec.EndHow != "" {
					how, by = rec.EndHow, rec.EndedBy
				}
			}
			write(how, by)
		}()
	}
}
