package audit

import (
	"time"

	"go.uber.org/zap"

	"github.com/caddy-jit/caddy-jit/policy"
)

// Session is what every event about a session says of it; SessionStory reads these
// fields back.
type Session struct {
	ID, User, Role, Justification, Ticket, ClientIP string
	Expires                                         time.Time
	// RequestID and Approvers are set for a session that approvers let start.
	RequestID  string
	Approvers  []string
	BreakGlass bool
}

// Fields are the session's fields of an event.
func (s Session) Fields() []zap.Field {
	fields := []zap.Field{
		zap.String("user", s.User),
		zap.String("role", s.Role),
		zap.String("session_id", s.ID),
		zap.String("justification", s.Justification),
		zap.String("expires", s.Expires.UTC().Format(time.RFC3339)),
		zap.String("client_ip", s.ClientIP),
	}
	if s.Ticket != "" {
		fields = append(fields, zap.String("ticket", s.Ticket))
	}
	if s.RequestID != "" {
		fields = append(fields, zap.String("request_id", s.RequestID), zap.Strings("approvers", s.Approvers))
	}
	if s.BreakGlass {
		fields = append(fields, zap.Bool("break_glass", true))
	}
	return fields
}

// Request is what every event about an approval request says of it; SessionStory
// reads these fields back.
type Request struct {
	ID, User, Role, Justification, Ticket string
	Duration                              time.Duration
	// Start is set for a scheduled start.
	Start time.Time
}

// Fields are the request's fields of an event.
func (r Request) Fields() []zap.Field {
	fields := []zap.Field{
		zap.String("request_id", r.ID),
		zap.String("user", r.User),
		zap.String("role", r.Role),
		zap.String("justification", r.Justification),
		zap.String("duration", policy.FormatDuration(r.Duration)),
	}
	if r.Ticket != "" {
		fields = append(fields, zap.String("ticket", r.Ticket))
	}
	if !r.Start.IsZero() {
		fields = append(fields, zap.String("start", r.Start.Format(time.RFC3339)))
	}
	return fields
}
