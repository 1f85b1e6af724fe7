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
	"github.com/caddy-jit/caddy-jit/state"
	"github.com/caddy-jit/caddy-jit/stepup"
)

// Activated is the outcome of a submitted activation: a session and its token, or a
// request that waits for approvers.
type Activated struct {
	// Token is the signed session token; empty while a request waits.
	Token   string
	Record  *session.Record
	Request *Request
	// PickupSecret is set with Request: the asking browser keeps it, and only a
	// browser presenting it receives the session once approved (see pickup.go).
	PickupSecret string
}

// ErrNeedsApproval is returned by Activate for a role whose activations wait for
// approvers; Submit handles them.
var ErrNeedsApproval = errors.New("the role needs approval: submit the activation as a request")

// Activate checks an activation and, if every rule holds, starts the session. It
// returns the signed token for the cookie and the record. Every outcome is audited.
func (a *Workflow) Activate(ctx context.Context, act Activation) (string, *session.Record, error) {
	if act.Role.NeedsApproval() && !act.BreakGlass {
		return "", nil, ErrNeedsApproval
	}
	res, err := a.Submit(ctx, act)
	if err != nil {
		return "", nil, err
	}
	if res.Request != nil {
		return "", nil, ErrNeedsApproval
	}
	return res.Token, res.Record, nil
}

// Submit checks an activation and the user's code. A role that needs approval gets a
// pending request (unless break-glass); any other starts its session, now or at the
// scheduled start. Every outcome is audited and notified.
func (a *Workflow) Submit(ctx context.Context, act Activation) (*Activated, error) {
	now := a.Now()
	fail := func(reason, message string, lockedUntil time.Time) (*Activated, error) {
		fields := []zap.Field{
			zap.String("user", act.Caller.User),
			zap.String("role", act.Role.Name),
			zap.String("reason", reason),
			zap.String("justification", act.Justification),
			zap.String("ticket", act.Ticket),
			zap.String("client_ip", act.ClientIP),
		}
		if act.BreakGlass {
			fields = append(fields, zap.Bool("break_glass", true))
		}
		a.Audit.Event(audit.EventActivationFailed, fields...)
		a.metrics().Activation(act.Role.Name, reason)
		return nil, &ActivationError{Reason: reason, Message: message, LockedUntil: lockedUntil}
	}

	if !act.Role.TicketRequired() {
		// The form offers no ticket field then; whatever a client sends is not recorded.
		act.Ticket = ""
	}
	decision := act.Role.Activation(policy.Request{
		Caller:        act.Caller,
		Duration:      act.Duration,
		Justification: act.Justification,
		Ticket:        act.Ticket,
		Start:         act.Start,
		BreakGlass:    act.BreakGlass,
	}, now)
	if !decision.Allowed {
		return fail(string(decision.Reason), decision.Message, time.Time{})
	}
	requesting := act.Role.NeedsApproval() && !act.BreakGlass
	if requesting {
		// Checked before the code, so that a refused second request spends none.
		open, err := a.OpenRequest(ctx, act.Caller.User, act.Role.Name)
		if err != nil {
			return nil, err
		}
		if open != nil {
			return fail(ReasonRequestOpen, requestOpenError(open).Message, time.Time{})
		}
	}
	reason, message, lockedUntil, proved, err := a.checkProof(ctx, act.Caller.User, act.proof(), act.Role.StepUp)
	if err != nil {
		return nil, err
	}
	if reason != "" {
		return fail(reason, message, lockedUntil)
	}
	start := now
	if act.Start.After(now) {
		start = act.Start
	}

	if requesting {
		req, secret, err := a.request(ctx, act, proved, start, now)
		var refused *ActivationError
		if errors.As(err, &refused) {
			return fail(refused.Reason, refused.Message, time.Time{})
		}
		if err != nil {
			return nil, err
		}
		return &Activated{Request: req, PickupSecret: secret}, nil
	}

	spec := session.Spec{
		User: act.Caller.User, Role: act.Role.Name, Audience: act.Audience, Justification: act.Justification,
		Ticket: act.Ticket, ClientIP: act.ClientIP, UserAgent: act.UserAgent, Start: start,
		Expires: capAt(start.Add(act.Duration), decision.EligibleUntil), BreakGlass: act.BreakGlass,
		Methods: proved.Methods, SteppedUp: now,
	}
	rec, token, err := a.startSession(ctx, spec, act.Role, now)
	var refused *ActivationError
	if errors.As(err, &refused) {
		return fail(refused.Reason, refused.Message, time.Time{})
	}
	if err != nil {
		return nil, err
	}
	if act.BreakGlass {
		a.Audit.Event(audit.EventBreakGlass, rec.AuditFields()...)
		n := recordNotification(NotifyBreakGlass, rec, now)
		n.Alert = approversOf(act.Role)
		a.notify(n)
	}
	return &Activated{Token: token, Record: rec}, nil
}

// checkProof checks a user's proof of presence against the step-up the role accepts:
// a refusal comes back as a reason and a message for the user, a storage failure as
// err. On success it says how the user proved it.
func (a *Workflow) checkProof(ctx context.Context, user string, proof stepup.Proof, step policy.StepUp) (reason, message string, lockedUntil time.Time, proved stepup.Proved, err error) {
	proved, err = a.StepUp.Prove(ctx, user, proof, step)
	var (
		locked  *stepup.LockedOutError
		method  *stepup.StepUpRefused
		passkey *stepup.PasskeyError
	)
	switch {
	case err == nil:
		return "", "", time.Time{}, proved, nil
	case errors.As(err, &locked):
		return "locked_out", "too many failed attempts: activation is locked until " + words.Clock(locked.Until), locked.Until, proved, nil
	case errors.As(err, &method):
		return string(method.Decision.Reason), method.Decision.Message, time.Time{}, proved, nil
	case errors.As(err, &passkey):
		return passkey.Err.Error(), passkeyRefusal(passkey.Err), time.Time{}, proved, nil
	case errors.Is(err, stepup.ErrPasskeysOff):
		return "passkeys_off", "passkeys are not set up on this server: use the code from your authenticator app", time.Time{}, proved, nil
	case errors.Is(err, stepup.ErrCodeInvalid):
		return stepup.ErrCodeInvalid.Error(), "the code is wrong: enter the current code from your authenticator app", time.Time{}, proved, nil
	case errors.Is(err, stepup.ErrCodeReplayed):
		return stepup.ErrCodeReplayed.Error(), "this code was already used: wait for the next one", time.Time{}, proved, nil
	case errors.Is(err, stepup.ErrNotEnrolled):
		return stepup.ErrNotEnrolled.Error(), "you have no authenticator enrolled: ask an operator to run `caddy jit enroll " + user + "` or to send you an enrollment link (`caddy jit enroll " + user + " --link`; see caddy-jit's docs/troubleshooting.md)", time.Time{}, proved, nil
	default:
		return "", "", time.Time{}, proved, err
	}
}

// passkeyRefusal says in words what to do about a refused passkey.
func passkeyRefusal(reason error) string {
	switch reason {
	case stepup.ErrPasskeyChallengeExpired, stepup.ErrPasskeyCeremonyUnknown:
		return "the passkey prompt expired or was already used: press the passkey button again"
	case stepup.ErrPasskeyNotRegistered, stepup.ErrPasskeyUnknownCredential:
		return "that passkey is not registered for you on this site: register one on /.jit/enroll, or use another"
	case stepup.ErrPasskeyUserNotVerified:
		return "your authenticator did not verify you (PIN or biometric): try again and unlock it when asked"
	case stepup.ErrPasskeyOtherBrowser:
		return "the passkey prompt was begun in another browser: press the passkey button again, in this one"
	case stepup.ErrPasskeyCounterRegressed:
		return "this passkey's signature counter went backwards, which a cloned key does: it was refused and the operators were told"
	default:
		return "the passkey's answer was refused: press the passkey button again, on this page"
	}
}

func capAt(t, limit time.Time) time.Time {
	if !limit.IsZero() && limit.Before(t) {
		// A session never outlives the eligibility it came from.
		return limit
	}
	return t
}

func approversOf(role *policy.Role) []string {
	if role.Approval == nil {
		return nil
	}
	return role.Approval.Approvers
}

// request stores a pending request and tells the approvers. It returns the pickup
// secret for the asking browser; storage keeps only its hash.
func (a *Workflow) request(ctx context.Context, act Activation, proved stepup.Proved, start, now time.Time) (*Request, string, error) {
	var (
		req    *Request
		secret string
	)
	user, role := act.Caller.User, act.Role.Name
	err := a.locks.With(ctx, a.store, openRequestLock(user, role), func() error {
		open, err := a.OpenRequest(ctx, user, role)
		if err != nil {
			return err
		}
		if open != nil {
			return requestOpenError(open)
		}
		if req, secret, err = a.newRequest(ctx, act, proved, start, now); err != nil {
			return err
		}
		return state.StoreJSON(ctx, a.store, openRequestKey(user, role), openRequestRef{ID: req.ID})
	})
	if err != nil {
		return nil, "", err
	}
	a.metrics().Activation(req.Role, "requested")
	a.Audit.Event(audit.EventActivationRequested, append(requestFields(req), zap.String("client_ip", req.ClientIP), zap.Int("approvals_needed", req.Needed),
		zap.String("deadline", req.Deadline.Format(time.RFC3339)))...)
	n := requestNotification(NotifyRequested, req, now)
	n.Alert = approversOf(act.Role)
	a.notify(n)
	return req, secret, nil
}

func (a *Workflow) newRequest(ctx context.Context, act Activation, proved stepup.Proved, start, now time.Time) (*Request, string, error) {
	id := newRequestID()
	secret, hash := newPickupSecret()
	req := &Request{
		ID:            id,
		User:          act.Caller.User,
		Groups:        act.Caller.Groups,
		Role:          act.Role.Name,
		Audience:      act.Audience,
		Justification: act.Justification,
		Ticket:        act.Ticket,
		ClientIP:      act.ClientIP,
		UserAgent:     act.UserAgent,
		Duration:      act.Duration,
		Return:        act.Return,
		Created:       now.UTC(),
		Deadline:      now.Add(act.Role.Approval.Expires).UTC(),
		Needed:        act.Role.Approval.Count,
		State:         RequestPending,
		PickupHash:    hash,
		Methods:       proved.Methods,
		SteppedUp:     now.UTC(),
	}
	if start.After(now) {
		req.Start = start.UTC()
	}
	if err := a.Requests.saveRequest(ctx, req); err != nil {
		return nil, "", err
	}
	return req, secret, nil
}

// startSession records a session and signs its token, within the role's max_active.
func (a *Workflow) startSession(ctx context.Context, s session.Spec, role *policy.Role, now time.Time) (*session.Record, string, error) {
	rec := session.NewRecord(s)
	// Counted the same way as an extension's added time (place.go).
	if err := a.withPlace(ctx, role, rec.User, rec.ID, rec.Start, rec.Expires, false, now, func() error { return a.Records.SaveIndexed(ctx, rec) }); err != nil {
		return nil, "", err
	}
	token, err := a.SignRecord(rec, now)
	if err != nil {
		return nil, "", err
	}
	a.Audit.Event(audit.EventActivationSucceeded, append(rec.AuditFields(),
		zap.String("duration", policy.FormatDuration(rec.Expires.Sub(rec.Start))), zap.String("start", rec.Start.Format(time.RFC3339)),
		zap.Strings("amr", rec.Methods))...)
	a.notify(recordNotification(NotifyActivated, rec, now))
	a.metrics().Activation(rec.Role, "succeeded")
	a.Changed()
	return rec, token, nil
}

func roleLock(role string) string { return state.Prefix + "role-locks/" + state.Name(role) }

// NotifyExpiring tells the notify targets about sessions that end within the given
// time, once per session across the cluster.
func (a *Workflow) NotifyExpiring(ctx context.Context, within time.Duration) error {
	if a.Notifier == nil {
		return nil
	}
	now := a.Now()
	active, err := a.Records.Active(ctx, session.Filter{}, now)
	if err != nil {
		return err
	}
	for _, r := range active {
		if r.ExpiringNoticed || r.Expires.Sub(now) > within || r.Start.After(now) {
			continue
		}
		err := a.WithSession(ctx, r.ID, func() error {
			rec, err := a.Records.Load(ctx, r.User, r.ID)
			if err != nil || rec.ExpiringNoticed || !rec.Active(now) || rec.Expires.Sub(now) > within {
				return err
			}
			rec.ExpiringNoticed = true
			if err := a.Records.Save(ctx, rec); err != nil {
				return err
			}
			a.notify(recordNotification(NotifyExpiring, rec, now))
			return nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// requestFields describe a request in the events about it. The requester's address is
// left to the caller: in a decision's event, client_ip is the approver's.
func requestFields(r *Request) []zap.Field {
	return audit.Request{ID: r.ID, User: r.User, Role: r.Role, Justification: r.Justification, Ticket: r.Ticket,
		Duration: r.Duration, Start: r.Start}.Fields()
}

// Activation is a user's request for a session, as submitted.
type Activation struct {
	Caller        policy.Caller
	Role          *policy.Role
	Audience      string
	Duration      time.Duration
	Justification string
	Ticket        string
	// Code is a TOTP code; Passkey, when set, a passkey assertion instead.
	Code      string
	Passkey   *stepup.PasskeyProof
	ClientIP  string
	UserAgent string
	// Start schedules the session; zero starts it now (or on approval).
	Start time.Time
	// BreakGlass skips approval and allowed hours, loudly.
	BreakGlass bool
	// Return is where the requester goes once a waiting request starts its session.
	Return string
}

func (act Activation) proof() stepup.Proof { return stepup.Proof{Code: act.Code, Passkey: act.Passkey} }

// ActivationError says why an activation was refused, in a stable reason for the audit
// log and in words for the user.
type ActivationError struct {
	Reason  string
	Message string
	// LockedUntil is set when the reason is a lockout.
	LockedUntil time.Time
}

func (e *ActivationError) Error() string { return e.Reason + ": " + e.Message }
