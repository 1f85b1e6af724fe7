package audit

import (
	"sync"
	"time"

	"github.com/caddy-jit/caddy-jit/internal/random"
	"go.uber.org/zap"
)

// Audit event names. They are stable: auditors' queries depend on them.
const (
	EventActivationSucceeded = "activation_succeeded"
	EventActivationFailed    = "activation_failed"
	EventDeactivated         = "deactivated"
	EventRevoked             = "revoked"
	// EventReplaced: the browser that held the session took another one (activated,
	// or picked up an approved request), whose cookie took the old one's place.
	EventReplaced            = "replaced"
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

	// Enrollment links: `enrolled` is written on confirmation by link too.
	EventEnrollLinkCreated   = "enroll_link_created"
	EventEnrollLinkOpened    = "enroll_link_opened"
	EventEnrollLinkCancelled = "enroll_link_cancelled"
	EventEnrollLinkFailed    = "enroll_link_failed"

	EventExtensionRequested = "extension_requested"
	EventExtensionCollected = "extension_collected"

	// The pickup: a session's token handed once to the browser that asked for it.
	EventPickedUp      = "session_picked_up"
	EventPickupRefused = "pickup_refused"

	// EventRequestWithdrawn: the requester withdrew a request before its session
	// reached a browser.
	EventRequestWithdrawn = "request_withdrawn"

	// Passkeys (WebAuthn): a credential registered, removed or used for a step-up, a
	// ceremony refused (with a reason), and an assertion whose signature counter did
	// not move forward, the sign of a cloned authenticator. They name a credential by
	// its id only.
	EventPasskeyRegistered       = "passkey_registered"
	EventPasskeyRemoved          = "passkey_removed"
	EventPasskeyVerified         = "passkey_verified"
	EventPasskeyFailed           = "passkey_failed"
	EventPasskeyCounterRegressed = "passkey_counter_regressed"

	// Fresh proof inside a session (a site's `fresh DURATION`): a request refused
	// because the session's last step-up is older than the route allows, the user
	// proving presence again for the session (its end unchanged), and such a proof
	// refused.
	EventReauthRequired     = "reauth_required"
	EventSessionReconfirmed = "session_reconfirmed"
	EventReconfirmFailed    = "reconfirm_failed"
)

// Writer writes audit events: one JSON object per line through zap, every
// user-supplied string a field of its own so that no value can forge a line, each event
// linked into the instance's chain (see chain.go). Secrets (codes, TOTP seeds, tokens)
// are never passed to it.
type Writer struct {
	log   *zap.Logger
	chain *Chain
	now   func() time.Time
}

// NewWriter writes to log, which caddymodule names http.handlers.jit.audit, linking
// events into chain; a nil chain starts a new one for this Writer alone.
func NewWriter(log *zap.Logger, chain *Chain, now func() time.Time) *Writer {
	if chain == nil {
		chain = NewChain("local-" + random.Hex(8))
	}
	if now == nil {
		now = time.Now
	}
	return &Writer{log: log, chain: chain, now: now}
}

// Event writes one audit event.
func (a *Writer) Event(event string, fields ...zap.Field) {
	a.chain.write(a.log, event, fields, a.now)
}

// Holder names the session a request was made under.
type Holder struct {
	User, Role, SessionID string
	BreakGlass            bool
	// Fresh is the recent step-up a `fresh` route required of the request (such as
	// "5m"), or "" where none was required.
	Fresh string
}

// Access writes the event for one request made under a session.
func (a *Writer) Access(h Holder, clientIP, method, uri string, status int, bytes int64, took time.Duration, body *BodyDigest) {
	r := accessRecord{Holder: h, clientIP: clientIP, method: method, uri: uri, status: status, bytes: bytes, took: took}
	if body != nil {
		r.body, r.hasBody = *body, true
	}
	if b := a.chain.batched.Load(); b != nil {
		// The batched output queues the record itself: the fields are made by the
		// flusher, off the request's path.
		b.enqueueAccess(&r, a.now)
		return
	}
	// Through zap, one event per privileged request: its fields live in a pooled
	// array rather than a new slice each time.
	f := accessFieldsPool.Get().(*accessFields)
	a.chain.write(a.log, EventAccess, r.appendFields(f[:0]), a.now)
	clear(f[:])
	accessFieldsPool.Put(f)
}

// accessRecord is what an access event says, before it becomes fields.
type accessRecord struct {
	Holder
	clientIP, method, uri string
	status                int
	bytes                 int64
	took                  time.Duration
	body                  BodyDigest
	hasBody               bool
}

// appendFields appends the event's fields to dst; dst has room for accessFields.
func (r *accessRecord) appendFields(dst []zap.Field) []zap.Field {
	fields := append(dst,
		zap.String("user", r.User),
		zap.String("role", r.Role),
		zap.String("session_id", r.SessionID),
		zap.String("client_ip", r.clientIP),
		zap.String("method", r.method),
		zap.String("uri", r.uri),
		zap.Int("status", r.status),
		zap.Int64("bytes", r.bytes),
		zap.Int64("duration_us", r.took.Microseconds()),
	)
	if body := &r.body; r.hasBody {
		fields = append(fields, zap.Int64("body_bytes", body.Size), zap.String("body_sha256", body.SHA256))
		if body.Type != "" {
			fields = append(fields, zap.String("body_type", body.Type))
		}
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
	if r.BreakGlass {
		fields = append(fields, zap.Bool("break_glass", true))
	}
	if r.Fresh != "" {
		fields = append(fields, zap.String("fresh", r.Fresh))
	}
	return fields
}

// BodyDigest describes the body of a mutating request: its size and SHA-256 as the
// upstream read it, and where it is stored when the role records bodies.
type BodyDigest struct {
	Size   int64
	SHA256 string
	// Type is the request's Content-Type as the client sent it ("" without one): a
	// reviewer, and a HAR viewer, read the recorded bytes by it.
	Type     string
	Complete bool
	Key      string
	// Dropped is set when the body was not queued for storage (see BodyWriter.Put).
	Dropped bool
}

// BodyDropped writes the event for count recorded bodies that did not reach storage
// for reason; key, when set, names the body of h's request this report begins with.
func (a *Writer) BodyDropped(reason string, count int, h Holder, key string) {
	fields := []zap.Field{zap.String("reason", reason), zap.Int("count", count)}
	if key != "" {
		fields = append(fields, zap.String("user", h.User), zap.String("role", h.Role), zap.String("session_id", h.SessionID), zap.String("body_key", key))
	}
	a.Event(EventBodyDropped, fields...)
}

// accessFields holds as many fields as an access event can have (9, 6 of the body,
// break_glass and fresh), so that appending to it never allocates.
type accessFields [17]zap.Field

var accessFieldsPool = sync.Pool{New: func() any { return new(accessFields) }}
