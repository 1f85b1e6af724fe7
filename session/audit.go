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
	EventLockedOut           = "locked_out"
	// EventRefusalsLimited starts a run of 429 answers to a user whose requests kept
	// being refused; one event per run, not per request.
	EventRefusalsLimited = "refusals_limited"
	// EventBodyDropped says recorded request bodies did not reach storage; one event
	// per burst, counting the drops since the last one.
	EventBodyDropped = "body_dropped"
)

// Auditor writes audit events: one JSON object per line through zap, every
// user-supplied string a field of its own so that no value can forge a line, each event
// linked into the instance's chain (see chain.go). Secrets (codes, TOTP seeds, tokens)
// are never passed to it.
type Auditor struct {
	log   *zap.Logger
	chain *Chain
	now   Clock
}

// NewAuditor writes to log, which caddymodule names http.handlers.jit.audit, linking
// events into chain; a nil chain starts a new one for this Auditor alone.
func NewAuditor(log *zap.Logger, chain *Chain, now Clock) *Auditor {
	if chain == nil {
		chain = NewChain("local-" + randomID())
	}
	if now == nil {
		now = time.Now
	}
	return &Auditor{log: log, chain: chain, now: now}
}

// Event writes one audit event.
func (a *Auditor) Event(event string, fields ...zap.Field) {
	a.chain.write(a.log, event, fields, a.now)
}

// Access writes the event for one request made under a session.
func (a *Auditor) Access(c *Claims, clientIP, method, uri string, status int, bytes int64, took time.Duration, body *BodyDigest) {
	// One event per privileged request: its fields live in a pooled array rather than
	// a new slice each time.
	f := accessFieldsPool.Get().(*accessFields)
	fields := append(f[:0],
		zap.String("user", c.Subject),
		zap.String("role", c.Role),
		zap.String("session_id", c.SessionID),
		zap.String("client_ip", clientIP),
		zap.String("method", method),
		zap.String("uri", uri),
		zap.Int("status", status),
		zap.Int64("bytes", bytes),
		zap.Int64("duration_us", took.Microseconds()),
	)
	if body != nil {
		fields = append(fields, zap.Int64("body_bytes", body.Size), zap.String("body_sha256", body.SHA256))
		if !body.Complete {
			fields = append(fields, zap.Bool("body_complete", false))
		}
		if body.Key != "" {
			fields = append(fields, zap.String("body_key", body.Key))
			if body.Dropped {
				fields = append(fields, zap.Bool("body_recorded", false))
			}
		}
	}
	if c.BreakGlass {
		fields = append(fields, zap.Bool("break_glass", true))
	}
	a.chain.write(a.log, EventAccess, fields, a.now)
	clear(f[:])
	accessFieldsPool.Put(f)
}

// BodyDigest describes the body of a mutating request: its size and SHA-256 as the
// upstream read it, and where it is stored when the role records bodies.
type BodyDigest struct {
	Size     int64
	SHA256   string
	Complete bool
	Key      string
	// Dropped is set when the body was not queued for storage (see BodyWriter.Put).
	Dropped bool
}

// BodyDropped writes the event for recorded bodies that did not reach storage.
func (a *Auditor) BodyDropped(d BodyDrop) {
	fields := []zap.Field{zap.String("reason", d.Reason), zap.Int("count", d.Count)}
	if d.Key != "" {
		fields = append(fields, zap.String("user", d.User), zap.String("role", d.Role), zap.String("session_id", d.SessionID), zap.String("body_key", d.Key))
	}
	a.Event(EventBodyDropped, fields...)
}

type accessFields [16]zap.Field

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
