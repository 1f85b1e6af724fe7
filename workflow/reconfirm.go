package workflow

import (
	"context"
	"errors"
	"time"

	"go.uber.org/zap"

	"github.com/caddy-jit/caddy-jit/audit"
	"github.com/caddy-jit/caddy-jit/policy"
	"github.com/caddy-jit/caddy-jit/session"
	"github.com/caddy-jit/caddy-jit/stepup"
)

// A re-confirmation is a new proof of presence inside a running session, asked for
// by a route with `fresh DURATION` when the session's last step-up is older than
// that. It moves the session's step-up time (auth_time) and nothing else: the
// session keeps its end, so that re-confirming cannot stand in for an extension.
// The new token reaches only the browser that holds the session; the page checks
// that before it calls Reconfirm.

// Refusals about the session itself (an extension's reasons too); the proof's own
// refusals are those of checkProof.
const (
	ReasonSessionNotFound  = "session_not_found"
	ReasonSessionNotActive = "session_not_active"
)

// Reconfirmation is a user's new proof of presence for one of their sessions.
type Reconfirmation struct {
	Caller    policy.Caller
	SessionID string
	// Role is the session's role as configured now; its step_up says which proofs
	// are accepted.
	Role *policy.Role
	// Code is a TOTP code; Passkey, when set, a passkey assertion instead.
	Code     string
	Passkey  *stepup.PasskeyProof
	ClientIP string
}

// Reconfirm checks the user's proof for a running session and records it as the
// session's latest step-up. It returns the session's new token, which differs from
// the old one only in auth_time, amr and iat. A refusal is an *ActivationError;
// every outcome is audited.
func (a *Workflow) Reconfirm(ctx context.Context, rc Reconfirmation) (string, *session.Record, error) {
	var (
		token string
		rec   *session.Record
		err   error
	)
	// Under the session's lock, like an extension: both rewrite the record, and
	// neither may lose the other's change.
	lockErr := a.WithSession(ctx, rc.SessionID, func() error {
		token, rec, err = a.reconfirmLocked(ctx, rc)
		return nil
	})
	if errors.Is(lockErr, session.ErrSessionNotFound) {
		return a.reconfirmLocked(ctx, rc) // refuses it, audited, without touching storage
	}
	if lockErr != nil {
		return "", nil, lockErr
	}
	return token, rec, err
}

func (a *Workflow) reconfirmLocked(ctx context.Context, rc Reconfirmation) (string, *session.Record, error) {
	// Whole seconds, as records and tokens keep them.
	now := a.Now().Truncate(time.Second)
	user := rc.Caller.User
	fail := func(reason, message string, lockedUntil time.Time) (string, *session.Record, error) {
		a.Audit.Event(audit.EventReconfirmFailed, zap.String("user", user), zap.String("session_id", rc.SessionID),
			zap.String("reason", reason), zap.String("client_ip", rc.ClientIP))
		return "", nil, &ActivationError{Reason: reason, Message: message, LockedUntil: lockedUntil}
	}
	rec, err := a.Records.Load(ctx, user, rc.SessionID)
	if errors.Is(err, session.ErrSessionNotFound) {
		return fail(ReasonSessionNotFound, "you have no such session", time.Time{})
	}
	if err != nil {
		return "", nil, err
	}
	if !rec.Active(now) || rec.Start.After(now) || a.Revocations.Revoked(rec.ID) {
		return fail(ReasonSessionNotActive, "only a running session can be confirmed; activate the role again", time.Time{})
	}
	if rc.Role == nil || rc.Role.Name != rec.Role {
		return fail(string(policy.ReasonUnknownRole), "the role "+rec.Role+" is no longer configured", time.Time{})
	}
	// A proof renews the session's standing, so it is refused to someone no longer
	// eligible, even though the session itself runs on until it is revoked.
	if d := rc.Role.Eligible(rc.Caller, now); !d.Allowed {
		return fail(string(d.Reason), d.Message, time.Time{})
	}
	reason, message, lockedUntil, proved, err := a.checkProof(ctx, user, stepup.Proof{Code: rc.Code, Passkey: rc.Passkey}, rc.Role.StepUp)
	if err != nil {
		return "", nil, err
	}
	if reason != "" {
		return fail(reason, message, lockedUntil)
	}
	confirmed := *rec
	confirmed.SteppedUp = now.UTC()
	if len(proved.Methods) > 0 {
		confirmed.Methods = proved.Methods
	}
	// The end does not move, so the index entry (user and end) stays as it is.
	if err := a.Records.Save(ctx, &confirmed); err != nil {
		return "", nil, err
	}
	rec = &confirmed
	token, err := a.SignRecord(rec, now)
	if err != nil {
		return "", nil, err
	}
	a.Audit.Event(audit.EventSessionReconfirmed, append(rec.AuditFields(), zap.Strings("amr", rec.Methods),
		zap.String("stepped_up", rec.SteppedUp.Format(time.RFC3339)), zap.String("reconfirm_client_ip", rc.ClientIP))...)
	return token, rec, nil
}
