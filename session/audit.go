package session

import (
	"sync"
	"time"

	"go.uber.org/zap"
)

// Audit event names. They are stable: auditors' queries depend on them.
const (
	EventActivationSucceeded = "activation_succeeded"
	EventActivationFailed    = "activation_failed"
	EventDeactivated         = "deactivated"
	EventRevoked             = "revoked"
	EventUnlocked            = "unlocked"
	EventKeysRotated         = "keys_rotated"
	EventEnrolled            = "enrolled"
	EventAccess              = "access"
	EventAccessDenied        = "access_denied"
	EventActivationRequested = "activation_requested"
	EventRequestApproved     = "request_approved"
	EventRequestDenied       = "request_denied"
	EventRequestExpired      = "request_expired"
	EventApprovalFailed      = "approval_failed"
	EventExtended            = "extended"
	EventExtensionFailed     = "extension_failed"
	EventBreakGlass          = "break_glass"
)

// Auditor writes audit events: one JSON object per line through zap, every
// user-supplied string a field of its own so that no value can forge a line. Secrets
// (codes, TOTP seeds, tokens) are never passed to it.
type Auditor struct {
	log *zap.Logger
}

// NewAuditor writes to log, which caddymodule names http.handlers.jit.audit.
func NewAuditor(log *zap.Logger) *Auditor { return &Auditor{log: log} }

// Event writes one audit event.
func (a *Auditor) Event(event string, fields ...zap.Field) {
	a.log.Info(event, append(fields, zap.String("event", event))...)
}

// Access writes the event for one request made under a session.
func (a *Auditor) Access(c *Claims, clientIP, method, uri string, status int, bytes int64, took time.Duration) {
	ce := a.log.Check(zap.InfoLevel, EventAccess)
	if ce == nil {
		return
	}
	// One event per privileged request: its fields live in a pooled array rather than
	// a new slice each time.
	f := accessFieldsPool.Get().(*accessFields)
	n := len(f) - 1
	if c.BreakGlass {
		n = len(f)
	}
	*f = accessFields{
		zap.String("event", EventAccess),
		zap.String("user", c.Subject),
		zap.String("role", c.Role),
		zap.String("session_id", c.SessionID),
		zap.String("client_ip", clientIP),
		zap.String("method", method),
		zap.String("uri", uri),
		zap.Int("status", status),
		zap.Int64("bytes", bytes),
		zap.Duration("duration", took),
		zap.Bool("break_glass", true),
	}
	ce.Write(f[:n]...)
	*f = accessFields{} // drop the references to this request's strings
	accessFieldsPool.Put(f)
}

type accessFields [11]zap.Field

var accessFieldsPool = sync.Pool{New: func() any { return new(accessFields) }}

// recordFields are the fields that describe a session in every event about it.
func recordFields(r *Record) []zap.Field {
	fields := []zap.Field{
		zap.String("user", r.User),
		zap.String("role", r.Role),
		zap.String("session_id", r.ID),
		zap.String("justification", r.Justification),
		zap.String("expires", r.Expires.UTC().Format(time.RFC3339)),
		zap.String("client_ip", r.ClientIP),
	}
	if r.Ticket != "" {
		fields = append(fields, zap.String("ticket", r.Ticket))
	}
	if r.RequestID != "" {
		fields = append(fields, zap.String("request_id", r.RequestID), zap.Strings("approvers", r.Approvers))
	}
	if r.BreakGlass {
		fields = append(fields, zap.Bool("break_glass", true))
	}
	return fields
}
