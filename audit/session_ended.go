package audit

import (
	"time"

	"go.uber.org/zap"
)

// EventSessionEnded closes a session's story in one instance's log: how it ended and
// what that instance served under it. Its counts equal the session's access events in
// the same log, so a reader (a SIEM) knows the story is complete; an instance that
// served nothing under the session writes none.
const EventSessionEnded = "session_ended"

// SessionEnd is a session_ended event's content.
type SessionEnd struct {
	User, Role, SessionID string
	// How is expired, deactivated or revoked; By who ended it, where known.
	How, By            string
	Requests, Mutating int64
	BytesIn, BytesOut  int64
	First, Last        time.Time
	// Statuses counts responses by class: [1] 1xx … [5] 5xx, [0] any other.
	Statuses [6]int64
}

// SessionEnded writes the session_ended event.
func (a *Writer) SessionEnded(e SessionEnd) {
	fields := []zap.Field{
		zap.String("user", e.User),
		zap.String("role", e.Role),
		zap.String("session_id", e.SessionID),
		zap.String("how", e.How),
		zap.Int64("requests", e.Requests),
		zap.Int64("mutating_requests", e.Mutating),
		zap.Int64("bytes_in", e.BytesIn),
		zap.Int64("bytes_out", e.BytesOut),
		zap.String("first_access", e.First.UTC().Format(time.RFC3339Nano)),
		zap.String("last_access", e.Last.UTC().Format(time.RFC3339Nano)),
		zap.Int64("status_1xx", e.Statuses[1]),
		zap.Int64("status_2xx", e.Statuses[2]),
		zap.Int64("status_3xx", e.Statuses[3]),
		zap.Int64("status_4xx", e.Statuses[4]),
		zap.Int64("status_5xx", e.Statuses[5]),
		zap.Int64("status_other", e.Statuses[0]),
	}
	if e.By != "" {
		fields = append(fields, zap.String("by", e.By))
	}
	a.Event(EventSessionEnded, fields...)
}
