package session

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/caddy-jit/caddy-jit/policy"
)

// Activated is the outcome of a submitted activation: a session and its token, or a
// request that waits for approvers.
type Activated struct {
	// Token is the signed session token; empty while a request waits.
	Token   string
	Record  *Record
	Request *Request
}

// ErrNeedsApproval is returned by Activate for a role whose activations wait for
// approvers; Submit handles them.
var ErrNeedsApproval = errors.New("the role needs approval: submit the activation as a request")

// Activate checks an activation and, if every rule holds, starts the session. It
// returns the signed token for the cookie and the record. Every outcome is audited.
func (a *Authority) Activate(ctx context.Context, act Activation) (string, *Record, error) {
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
func (a *Authority) Submit(ctx context.Context, act Activation) (*Activated, error) {
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
		a.Audit.Event(EventActivationFailed, fields...)
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
	if reason, message, lockedUntil, err := a.checkCode(ctx, act.Caller.User, act.Code); err != nil || reason != "" {
		if err != nil {
			return nil, err
		}
		return fail(reason, message, lockedUntil)
	}
	start := now
	if act.Start.After(now) {
		start = act.Start
	}

	if act.Role.NeedsApproval() && !act.BreakGlass {
		req, err := a.request(ctx, act, start, now)
		if err != nil {
			return nil, err
		}
		return &Activated{Request: req}, nil
	}

	spec := sessionSpec{
		user: act.Caller.User, role: act.Role, audience: act.Audience, justification: act.Justification,
		ticket: act.Ticket, clientIP: act.ClientIP, userAgent: act.UserAgent, start: start,
		expires: capAt(start.Add(act.Duration), decision.EligibleUntil), breakGlass: act.BreakGlass,
	}
	rec, token, err := a.startSession(ctx, spec, now)
	var refused *ActivationError
	if errors.As(err, &refused) {
		return fail(refused.Reason, refused.Message, time.Time{})
	}
	if err != nil {
		return nil, err
	}
	if act.BreakGlass {
		a.Audit.Event(EventBreakGlass, recordFields(rec)...)
		n := recordNotification(NotifyBreakGlass, rec, now)
		n.Alert = approversOf(act.Role)
		a.notify(n)
	}
	return &Activated{Token: token, Record: rec}, nil
}

// checkCode checks a user's TOTP code: a refusal comes back as a reason and a message
// for the user, a storage failure as err.
func (a *Authority) checkCode(ctx context.Context, user, code string) (reason, message string, lockedUntil time.Time, err error) {
	err = a.Authenticator.Check(ctx, user, code)
	var locked *LockedOutError
	if errors.As(err, &locked) && locked.Began {
		a.Audit.Event(EventLockedOut, zap.String("user", user), zap.String("until", locked.Until.UTC().Format(time.RFC3339)))
		a.metrics().Lockout()
	}
	switch {
	case err == nil:
		return "", "", time.Time{}, nil
	case errors.Is(err, ErrCodeInvalid), errors.Is(err, ErrCodeReplayed), errors.As(err, &locked):
		a.metrics().CodeFailure(err.Error())
	}
	switch {
	case errors.As(err, &locked):
		return "locked_out", "too many wrong codes: activation is locked until " + locked.Until.UTC().Format("15:04 UTC"), locked.Until, nil
	case errors.Is(err, ErrCodeInvalid):
		return ErrCodeInvalid.Error(), "the code is wrong: enter the current code from your authenticator app", time.Time{}, nil
	case errors.Is(err, ErrCodeReplayed):
		return ErrCodeReplayed.Error(), "this code was already used: wait for the next one", time.Time{}, nil
	case errors.Is(err, ErrNotEnrolled):
		return ErrNotEnrolled.Error(), "you have no authenticator enrolled: ask an operator to run `caddy jit enroll " + user + "` or to send you an enrollment link (`caddy jit enroll " + user + " --link`; see Troubleshooting in the caddy-jit README)", time.Time{}, nil
	default:
		return "", "", time.Time{}, err
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

// request stores a pending request and tells the approvers.
func (a *Authority) request(ctx context.Context, act Activation, start, now time.Time) (*Request, error) {
	id, err := newSessionID()
	if err != nil {
		return nil, err
	}
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
	}
	if start.After(now) {
		req.Start = start.UTC()
	}
	if err := a.Records.saveRequest(ctx, req); err != nil {
		return nil, err
	}
	a.metrics().Activation(req.Role, "requested")
	a.Audit.Event(EventActivationRequested, append(requestFields(req), zap.String("client_ip", req.ClientIP), zap.Int("approvals_needed", req.Needed),
		zap.String("deadline", req.Deadline.Format(time.RFC3339)))...)
	n := requestNotification(NotifyRequested, req, now)
	n.Alert = approversOf(act.Role)
	a.notify(n)
	return req, nil
}

// sessionSpec is a session about to start.
type sessionSpec struct {
	user, audience, justification, ticket, clientIP, userAgent string
	role                                                       *policy.Role
	start, expires                                             time.Time
	breakGlass                                                 bool
	requestID                                                  string
	approvers                                                  []string
}

// startSession records a session and signs its token, within the role's max_active.
func (a *Authority) startSession(ctx context.Context, s sessionSpec, now time.Time) (*Record, string, error) {
	id, err := newSessionID()
	if err != nil {
		return nil, "", err
	}
	rec := &Record{
		ID:            id,
		User:          s.user,
		Role:          s.role.Name,
		Audience:      s.audience,
		Justification: s.justification,
		Ticket:        s.ticket,
		ClientIP:      s.clientIP,
		UserAgent:     s.userAgent,
		Methods:       []string{"otp"},
		// Whole seconds, as in the token: limits computed from the start (max_total)
		// then land on whole seconds too.
		Start:      s.start.UTC().Truncate(time.Second),
		Expires:    s.expires.UTC().Truncate(time.Second),
		RequestID:  s.requestID,
		Approvers:  s.approvers,
		BreakGlass: s.breakGlass,
	}
	create := func() error { return a.Records.create(ctx, rec) }
	if s.role.MaxActive > 0 {
		// Counting and creating under one lock, so that two activations at once cannot
		// both take the last place.
		create = func() error {
			return a.locks.with(ctx, a.Records.storage, roleLock(s.role.Name), func() error {
				held, err := a.Records.Active(ctx, Filter{Role: s.role.Name}, now)
				if err != nil {
					return err
				}
				overlapping := 0
				for _, r := range held {
					if r.Start.Before(rec.Expires) && r.Expires.After(rec.Start) {
						overlapping++
					}
				}
				if d := s.role.CheckActiveCount(overlapping); !d.Allowed {
					return &ActivationError{Reason: string(d.Reason), Message: d.Message}
				}
				return a.Records.create(ctx, rec)
			})
		}
	}
	if err := create(); err != nil {
		return nil, "", err
	}
	token, err := a.SignRecord(rec, now)
	if err != nil {
		return nil, "", err
	}
	a.Audit.Event(EventActivationSucceeded, append(recordFields(rec),
		zap.String("duration", policy.FormatDuration(rec.Expires.Sub(rec.Start))), zap.String("start", rec.Start.Format(time.RFC3339)))...)
	a.notify(recordNotification(NotifyActivated, rec, now))
	a.metrics().Activation(rec.Role, "succeeded")
	a.sessionsChanged()
	return rec, token, nil
}

func roleLock(role string) string { return keyPrefix + "role-locks/" + storageName(role) }

// SignRecord signs a token for a session in storage: a new session, an extended one,
// or one that an approval started while its user waited.
func (a *Authority) SignRecord(rec *Record, now time.Time) (string, error) {
	return a.Keyring.Sign(Claims{
		Issuer:     a.Issuer,
		Subject:    rec.User,
		Audience:   rec.Audience,
		Role:       rec.Role,
		SessionID:  rec.ID,
		IssuedAt:   now.Unix(),
		NotBefore:  rec.Start.Unix(),
		Expiry:     rec.Expires.Unix(),
		Methods:    rec.Methods,
		BreakGlass: rec.BreakGlass,
	})
}

// Approval is an approver's answer to a request, as submitted.
type Approval struct {
	RequestID string
	Approver  policy.Caller
	// Role is the request's role as configured now.
	Role     *policy.Role
	Approve  bool
	Comment  string
	Code     string
	ClientIP string
}

// Decide records an approver's answer after their own code. A denial ends the
// request; the last approval needed starts the session. Every outcome is audited.
func (a *Authority) Decide(ctx context.Context, ap Approval) (*Request, error) {
	var req *Request
	err := a.locks.with(ctx, a.Records.storage, requestLock(ap.RequestID), func() error {
		var err error
		req, err = a.decide(ctx, ap)
		return err
	})
	return req, err
}

func (a *Authority) decide(ctx context.Context, ap Approval) (*Request, error) {
	now := a.Now()
	fail := func(req *Request, reason, message string, lockedUntil ...time.Time) (*Request, error) {
		var until time.Time
		if len(lockedUntil) > 0 {
			until = lockedUntil[0]
		}
		fields := []zap.Field{zap.String("request_id", ap.RequestID), zap.String("by", ap.Approver.User),
			zap.String("reason", reason), zap.Bool("approve", ap.Approve), zap.String("client_ip", ap.ClientIP)}
		if req != nil {
			fields = append(fields, zap.String("user", req.User), zap.String("role", req.Role))
		}
		a.Audit.Event(EventApprovalFailed, fields...)
		return req, &ActivationError{Reason: reason, Message: message, LockedUntil: until}
	}
	req, err := a.Records.LoadRequest(ctx, ap.RequestID)
	if errors.Is(err, ErrRequestNotFound) {
		return fail(nil, "request_not_found", "there is no such request")
	}
	if err != nil {
		return nil, err
	}
	if req.overdue(now) {
		if err := a.expire(ctx, req, now); err != nil {
			return nil, err
		}
	}
	if req.State != RequestPending {
		return fail(req, string(policy.ReasonAlreadyDecided), "this request is no longer pending: it is "+req.State)
	}
	if ap.Role == nil || ap.Role.Name != req.Role || ap.Role.Approval == nil {
		return fail(req, string(policy.ReasonNotApprover), "the role "+req.Role+" has no approvers configured now")
	}
	if d := ap.Role.Approval.MayApprove(ap.Approver, req.User); !d.Allowed {
		return fail(req, string(d.Reason), d.Message)
	}
	if req.DecidedBy(ap.Approver.User) {
		return fail(req, string(policy.ReasonAlreadyDecided), "you have already answered this request")
	}
	comment := strings.TrimSpace(ap.Comment)
	switch {
	case !ap.Approve && comment == "":
		return fail(req, "comment_missing", "say why you deny the request: the requester reads your comment")
	case len([]rune(comment)) > policy.MaxJustificationLength:
		return fail(req, "comment_too_long", fmt.Sprintf("the comment is too long: at most %d characters", policy.MaxJustificationLength))
	}
	if reason, message, lockedUntil, err := a.checkCode(ctx, ap.Approver.User, ap.Code); err != nil || reason != "" {
		if err != nil {
			return nil, err
		}
		return fail(req, reason, message, lockedUntil)
	}

	req.Decisions = append(req.Decisions, Decision{By: ap.Approver.User, Approve: ap.Approve, Comment: comment, At: now.UTC()})
	decided := []zap.Field{zap.String("by", ap.Approver.User), zap.String("comment", comment), zap.String("client_ip", ap.ClientIP)}
	if !ap.Approve {
		req.State, req.Decided = RequestDenied, now.UTC()
		if err := a.Records.saveRequest(ctx, req); err != nil {
			return nil, err
		}
		a.Audit.Event(EventRequestDenied, append(requestFields(req), decided...)...)
		n := requestNotification(NotifyDenied, req, now)
		n.By, n.Comment = ap.Approver.User, comment
		a.notify(n)
		return req, nil
	}
	if req.Approvals() >= req.Needed {
		req.State, req.Decided = RequestApproved, now.UTC()
	}
	if err := a.Records.saveRequest(ctx, req); err != nil {
		return nil, err
	}
	a.Audit.Event(EventRequestApproved, append(requestFields(req), append(decided,
		zap.Int("approvals", req.Approvals()), zap.Int("approvals_needed", req.Needed))...)...)
	if req.State == RequestApproved {
		n := requestNotification(NotifyApproved, req, now)
		n.Approvers = req.Approvers()
		a.notify(n)
		if err := a.startApproved(ctx, req, ap.Role, now); err != nil {
			return req, err
		}
	}
	return req, nil
}

// startApproved starts the session of an approved request, unless the role is at its
// max_active limit: then the request stays approved and a later sweep starts it.
func (a *Authority) startApproved(ctx context.Context, req *Request, role *policy.Role, now time.Time) error {
	if req.State != RequestApproved || req.SessionID != "" {
		return nil
	}
	start := now
	if req.Start.After(now) {
		start = req.Start
	}
	eligible := role.Eligible(policy.Caller{User: req.User, Groups: req.Groups}, start)
	if !eligible.Allowed {
		// Eligibility was withdrawn while the request waited: the approval lapses.
		req.State, req.Decided = RequestExpired, now.UTC()
		a.Audit.Event(EventRequestExpired, append(requestFields(req), zap.String("reason", string(eligible.Reason)))...)
		a.notify(requestNotification(NotifyExpired, req, now))
		return a.Records.saveRequest(ctx, req)
	}
	rec, _, err := a.startSession(ctx, sessionSpec{
		user: req.User, role: role, audience: req.Audience, justification: req.Justification, ticket: req.Ticket,
		clientIP: req.ClientIP, userAgent: req.UserAgent, start: start,
		expires: capAt(start.Add(req.Duration), eligible.EligibleUntil), requestID: req.ID, approvers: req.Approvers(),
	}, now)
	var refused *ActivationError
	if errors.As(err, &refused) {
		if req.WaitingForPlace {
			// Said once when the wait began; the sweep retries quietly.
			return nil
		}
		req.WaitingForPlace = true
		a.Audit.Event(EventActivationFailed, append(requestFields(req), zap.String("reason", refused.Reason),
			zap.String("client_ip", req.ClientIP), zap.Bool("retried", true))...)
		return a.Records.saveRequest(ctx, req)
	}
	if err != nil {
		return err
	}
	req.SessionID, req.WaitingForPlace = rec.ID, false
	return a.Records.saveRequest(ctx, req)
}

// expire ends a pending request whose deadline has passed.
func (a *Authority) expire(ctx context.Context, req *Request, now time.Time) error {
	req.State, req.Decided = RequestExpired, now.UTC()
	if err := a.Records.saveRequest(ctx, req); err != nil {
		return err
	}
	a.Audit.Event(EventRequestExpired, append(requestFields(req), zap.String("reason", "deadline_passed"))...)
	a.notify(requestNotification(NotifyExpired, req, now))
	return nil
}

// SweepRequests expires overdue requests and starts approved ones that waited for a
// place under max_active. role returns a role as configured now, or nil.
func (a *Authority) SweepRequests(ctx context.Context, role func(name string) *policy.Role) error {
	all, err := a.Records.Requests(ctx)
	if err != nil {
		return err
	}
	for _, r := range all {
		now := a.Now()
		waiting := r.State == RequestApproved && r.SessionID == ""
		if !r.overdue(now) && !waiting {
			continue
		}
		err := a.locks.with(ctx, a.Records.storage, requestLock(r.ID), func() error {
			req, err := a.Records.LoadRequest(ctx, r.ID)
			if err != nil {
				return err
			}
			switch {
			case req.overdue(now):
				return a.expire(ctx, req, now)
			case req.State == RequestApproved && req.SessionID == "":
				if ro := role(req.Role); ro != nil {
					return a.startApproved(ctx, req, ro, now)
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// RequestFor returns a user's own request, settling it first if its deadline passed.
func (a *Authority) RequestFor(ctx context.Context, user, id string) (*Request, error) {
	req, err := a.Records.LoadRequest(ctx, id)
	if err != nil {
		return nil, err
	}
	if req.User != user {
		// Someone else's request is no one's business but the approvers'.
		return nil, ErrRequestNotFound
	}
	if now := a.Now(); req.overdue(now) {
		err := a.locks.with(ctx, a.Records.storage, requestLock(id), func() error {
			if req, err = a.Records.LoadRequest(ctx, id); err != nil {
				return err
			}
			if req.overdue(now) {
				return a.expire(ctx, req, now)
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	return req, nil
}

// Pending lists the pending requests approver may decide, oldest first.
func (a *Authority) Pending(ctx context.Context, approver policy.Caller, role func(name string) *policy.Role) ([]*Request, error) {
	all, err := a.Records.Requests(ctx)
	if err != nil {
		return nil, err
	}
	now := a.Now()
	var out []*Request
	for _, r := range all {
		if r.State != RequestPending || r.overdue(now) || r.DecidedBy(approver.User) {
			continue
		}
		ro := role(r.Role)
		if ro == nil || ro.Approval == nil || !ro.Approval.MayApprove(approver, r.User).Allowed {
			continue
		}
		out = append(out, r)
	}
	return out, nil
}

// Extension is a user's request for more time on an active session.
type Extension struct {
	Caller        policy.Caller
	SessionID     string
	Role          *policy.Role
	Duration      time.Duration
	Justification string
	Code          string
	ClientIP      string
}

// Extended is one extension of a session, as kept in its record.
type Extended struct {
	At            time.Time `json:"at"`
	Justification string    `json:"justification"`
	From          time.Time `json:"from"`
	To            time.Time `json:"to"`
}

// Extend gives an active session more time, within the role's max_total, after the
// user's code. It returns a new token for the session.
func (a *Authority) Extend(ctx context.Context, ext Extension) (string, *Record, error) {
	var (
		token string
		rec   *Record
		err   error
	)
	lockErr := a.withSession(ctx, ext.SessionID, func() error {
		token, rec, err = a.extendLocked(ctx, ext)
		return nil
	})
	if errors.Is(lockErr, ErrSessionNotFound) {
		return a.extendLocked(ctx, ext) // refuses it, audited, without touching storage
	}
	if lockErr != nil {
		return "", nil, lockErr
	}
	return token, rec, err
}

func (a *Authority) extendLocked(ctx context.Context, ext Extension) (string, *Record, error) {
	// Whole seconds, as records and tokens keep them, so that the policy's limit and
	// the stored end agree.
	now := a.Now().Truncate(time.Second)
	user := ext.Caller.User
	fail := func(reason, message string, lockedUntil time.Time) (string, *Record, error) {
		a.Audit.Event(EventExtensionFailed, zap.String("user", user), zap.String("session_id", ext.SessionID),
			zap.String("reason", reason), zap.String("justification", ext.Justification), zap.String("client_ip", ext.ClientIP))
		return "", nil, &ActivationError{Reason: reason, Message: message, LockedUntil: lockedUntil}
	}
	rec, err := a.Records.Load(ctx, user, ext.SessionID)
	if errors.Is(err, ErrSessionNotFound) {
		return fail("session_not_found", "you have no such session", time.Time{})
	}
	if err != nil {
		return "", nil, err
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
	if reason, message, lockedUntil, err := a.checkCode(ctx, user, ext.Code); err != nil || reason != "" {
		if err != nil {
			return "", nil, err
		}
		return fail(reason, message, lockedUntil)
	}
	end = capAt(end, d.EligibleUntil).UTC().Truncate(time.Second)
	if !end.After(rec.Expires) {
		return fail(string(policy.ReasonMaxTotal), "your eligibility ends before this session would: it cannot be extended", time.Time{})
	}
	from := rec.Expires
	rec.Extensions = append(rec.Extensions, Extended{At: now.UTC(), Justification: ext.Justification, From: from, To: end})
	rec.Expires = end
	// The new end deserves its own notice, 5 minutes before it.
	rec.ExpiringNoticed = false
	if err := a.Records.extend(ctx, rec); err != nil {
		return "", nil, err
	}
	token, err := a.SignRecord(rec, now)
	if err != nil {
		return "", nil, err
	}
	a.Audit.Event(EventExtended, append(recordFields(rec), zap.String("extension_justification", ext.Justification),
		zap.String("from", from.Format(time.RFC3339)), zap.String("extension_client_ip", ext.ClientIP))...)
	n := recordNotification(NotifyExtended, rec, now)
	n.Justification = ext.Justification
	a.notify(n)
	return token, rec, nil
}

// NotifyExpiring tells the notify targets about sessions that end within the given
// time, once per session across the cluster.
func (a *Authority) NotifyExpiring(ctx context.Context, within time.Duration) error {
	if a.Notifier == nil {
		return nil
	}
	now := a.Now()
	active, err := a.Records.Active(ctx, Filter{}, now)
	if err != nil {
		return err
	}
	for _, r := range active {
		if r.ExpiringNoticed || r.Expires.Sub(now) > within || r.Start.After(now) {
			continue
		}
		err := a.withSession(ctx, r.ID, func() error {
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

// ActiveByRole counts the sessions running now (started, not ended, not revoked), by
// role, for the metrics.
func (a *Authority) ActiveByRole(ctx context.Context) (map[string]int, error) {
	now := a.Now()
	active, err := a.Records.Active(ctx, Filter{}, now)
	if err != nil {
		return nil, err
	}
	counts := map[string]int{}
	for _, r := range active {
		if r.Started(now) && !a.Revocations.Revoked(r.ID) {
			counts[r.Role]++
		}
	}
	return counts, nil
}
