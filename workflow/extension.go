package workflow

import (
	"context"
	"errors"
	"time"

	"go.uber.org/zap"

	"github.com/caddy-jit/caddy-jit/audit"
	"github.com/caddy-jit/caddy-jit/internal/words"
	"github.com/caddy-jit/caddy-jit/policy"
	"github.com/caddy-jit/caddy-jit/session"
	"github.com/caddy-jit/caddy-jit/stepup"
)

// An extension gives a running session more time, within the role's max_total. A role
// whose activations wait for approvers has its extensions wait for them too (unless
// it says extend_without_approval): otherwise one approval would buy max_total, not
// max_duration. Such an extension is a request of kind RequestExtension, decided like
// any other; the last approval moves the session's end. The new token reaches only a
// browser that already holds the session (see RenewToken): the request's id travels
// in pages and notifications, the session's cookie does not.

// RequestExtension is the Kind of a request for more time on a running session.
const RequestExtension = "extension"

// Audit events and notifications of extensions.
const (
	NotifyExtensionRequested = "extension_requested"
	// ReasonExtensionOpen refuses a second extension request for a session while one
	// waits for approvers.
	ReasonExtensionOpen = "extension_open"
)

// Extension is a user's request for more time on an active session.
type Extension struct {
	Caller        policy.Caller
	SessionID     string
	Role          *policy.Role
	Duration      time.Duration
	Justification string
	// Code is a TOTP code; Passkey, when set, a passkey assertion instead.
	Code     string
	Passkey  *stepup.PasskeyProof
	ClientIP string
}

// IsExtension reports whether the request asks for more time on a running session.
func (r *Request) IsExtension() bool { return r.Kind == RequestExtension }

// ExtensionOutcome is the answer to a submitted extension: the session extended with
// its new token, or the request that waits for approvers (Record then unchanged).
type ExtensionOutcome struct {
	Token   string
	Record  *session.Record
	Request *Request
}

// Extend gives an active session more time after the user's code, for a role whose
// extensions need no approval. It returns a new token for the session. For a role
// whose extensions need approval it returns ErrNeedsApproval and changes nothing:
// SubmitExtension files those.
func (a *Workflow) Extend(ctx context.Context, ext Extension) (string, *session.Record, error) {
	out, err := a.submitExtension(ctx, ext, true)
	if err != nil {
		return "", nil, err
	}
	return out.Token, out.Record, nil
}

// SubmitExtension checks an extension and the user's code. A role whose extensions
// need approval gets a pending request of kind RequestExtension; any other has its
// session extended at once. Every outcome is audited and notified.
func (a *Workflow) SubmitExtension(ctx context.Context, ext Extension) (*ExtensionOutcome, error) {
	return a.submitExtension(ctx, ext, false)
}

// submitExtension is SubmitExtension; solo refuses, with ErrNeedsApproval, an
// extension that would need approval, before the code is spent.
func (a *Workflow) submitExtension(ctx context.Context, ext Extension, solo bool) (*ExtensionOutcome, error) {
	var (
		out *ExtensionOutcome
		err error
	)
	lockErr := a.WithSession(ctx, ext.SessionID, func() error {
		out, err = a.extendLocked(ctx, ext, solo)
		return nil
	})
	if errors.Is(lockErr, session.ErrSessionNotFound) {
		return a.extendLocked(ctx, ext, solo) // refuses it, audited, without touching storage
	}
	if lockErr != nil {
		return nil, lockErr
	}
	return out, err
}

func (a *Workflow) extendLocked(ctx context.Context, ext Extension, solo bool) (*ExtensionOutcome, error) {
	// Whole seconds, as records and tokens keep them, so that the policy's limit and
	// the stored end agree.
	now := a.Now().Truncate(time.Second)
	user := ext.Caller.User
	fail := func(reason, message string, lockedUntil time.Time) (*ExtensionOutcome, error) {
		a.Audit.Event(audit.EventExtensionFailed, zap.String("user", user), zap.String("session_id", ext.SessionID),
			zap.String("reason", reason), zap.String("justification", ext.Justification), zap.String("client_ip", ext.ClientIP))
		return nil, &ActivationError{Reason: reason, Message: message, LockedUntil: lockedUntil}
	}
	rec, err := a.Records.Load(ctx, user, ext.SessionID)
	if errors.Is(err, session.ErrSessionNotFound) {
		return fail("session_not_found", "you have no such session", time.Time{})
	}
	if err != nil {
		return nil, err
	}
	if !rec.Active(now) || rec.Start.After(now) || a.Revocations.Revoked(rec.ID) {
		return fail("session_not_active", "only a running session can be extended; activate the role again", time.Time{})
	}
	if ext.Role == nil || ext.Role.Name != rec.Role {
		return fail(string(policy.ReasonUnknownRole), "the role "+rec.Role+" is no longer configured", time.Time{})
	}
	end, d := ext.Role.Extension(rec.Start.Truncate(time.Second), rec.Expires, now, ext.Duration)
	if !d.Allowed {
		return fail(string(d.Reason), d.Message, time.Time{})
	}
	// The same rules as an activation: still eligible, within hours (unless the session
	// is break-glass), a justification of its own.
	d = ext.Role.Activation(policy.Request{Caller: ext.Caller, Duration: ext.Duration, Justification: ext.Justification,
		Ticket: rec.Ticket, BreakGlass: rec.BreakGlass}, now)
	if !d.Allowed {
		return fail(string(d.Reason), d.Message, time.Time{})
	}
	requesting := ext.Role.ExtensionNeedsApproval()
	if requesting && solo {
		return nil, ErrNeedsApproval
	}
	if requesting {
		// Checked before the code, so that a refused second request spends none.
		open, err := a.openExtension(ctx, rec, now)
		if err != nil {
			return nil, err
		}
		if open != nil {
			return fail(ReasonExtensionOpen, "you already asked for more time on this session, until "+
				words.Clock(open.NewEnd)+": wait for the approvers' answer", time.Time{})
		}
	}
	reason, message, lockedUntil, proved, err := a.checkProof(ctx, user, stepup.Proof{Code: ext.Code, Passkey: ext.Passkey}, ext.Role.StepUp)
	if err != nil {
		return nil, err
	}
	if reason != "" {
		return fail(reason, message, lockedUntil)
	}
	end = capAt(end, d.EligibleUntil).UTC().Truncate(time.Second)
	if !end.After(rec.Expires) {
		return fail(string(policy.ReasonMaxTotal), "your eligibility ends before this session would: it cannot be extended", time.Time{})
	}
	if requesting {
		req, err := a.requestExtension(ctx, ext, rec, end, now)
		if err != nil {
			return nil, err
		}
		return &ExtensionOutcome{Record: rec, Request: req}, nil
	}
	// The extension's proof is a step-up of the session: its auth_time (which
	// `fresh` routes read) and amr become this proof's.
	proven := *rec
	proven.SteppedUp, proven.Methods = now.UTC(), proved.Methods
	err = a.lengthen(ctx, &proven, ext.Role, end, session.Extended{At: now.UTC(), Justification: ext.Justification, From: rec.Expires, To: end}, ext.ClientIP, now)
	var refused *ActivationError
	if errors.As(err, &refused) {
		return fail(refused.Reason, refused.Message, time.Time{})
	}
	if err != nil {
		return nil, err
	}
	*rec = proven
	token, err := a.SignRecord(rec, now)
	if err != nil {
		return nil, err
	}
	return &ExtensionOutcome{Token: token, Record: rec}, nil
}

// lengthen moves a session's end to end, under the session's lock (held by the
// caller) and within the role's max_active: the time it adds must not put the
// session beside more others than the role allows, scheduled ones included. A
// refusal is an *ActivationError and changes nothing.
func (a *Workflow) lengthen(ctx context.Context, rec *session.Record, role *policy.Role, end time.Time, x session.Extended, clientIP string, now time.Time) error {
	from := rec.Expires
	err := a.withPlace(ctx, role, rec.User, rec.ID, from, end, true, now, func() error {
		moved := *rec
		moved.Extensions = append(append([]session.Extended(nil), rec.Extensions...), x)
		moved.Expires = end
		// The new end deserves its own notice, 5 minutes before it.
		moved.ExpiringNoticed = false
		if err := a.Records.SaveIndexed(ctx, &moved); err != nil {
			return err
		}
		*rec = moved
		return nil
	})
	if err != nil {
		return err
	}
	fields := append(rec.AuditFields(), zap.String("extension_justification", x.Justification),
		zap.String("from", from.Format(time.RFC3339)), zap.String("extension_client_ip", clientIP))
	if x.RequestID != "" {
		fields = append(fields, zap.String("extension_request_id", x.RequestID), zap.Strings("extension_approvers", x.Approvers))
	}
	a.Audit.Event(audit.EventExtended, fields...)
	n := recordNotification(NotifyExtended, rec, now)
	n.Justification = x.Justification
	if x.RequestID != "" {
		n.RequestID, n.Approvers = x.RequestID, x.Approvers
	}
	a.notify(n)
	return nil
}
