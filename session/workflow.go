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
	// PickupSecret is set with Request: the asking browser keeps it, and only a
	// browser presenting it receives the session once approved (see pickup.go).
	PickupSecret string
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

	if requesting {
		req, secret, err := a.request(ctx, act, start, now)
		var refused *ActivationError
		if errors.As(err, &refused) {
			return fail(refused.Reason, refused.Message, time.Time{})
		}
		if err != nil {
			return nil, err
		}
		return &Activated{Request: req, PickupSecret: secret}, nil
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
		return ErrNotEnrolled.Error(), "you have no authenticator enrolled: ask an operator to run `caddy jit enroll " + user + "` or to send you an enrollment link (`caddy jit enroll " + user + " --link`; see caddy-jit's docs/troubleshooting.md)", time.Time{}, nil
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

// request stores a pending request and tells the approvers. It returns the pickup
// secret for the asking browser; storage keeps only its hash.
func (a *Authority) request(ctx context.Context, act Activation, start, now time.Time) (*Request, string, error) {
	var (
		req    *Request
		secret string
	)
	user, role := act.Caller.User, act.Role.Name
	err := a.locks.with(ctx, a.Records.storage, openRequestLock(user, role), func() error {
		open, err := a.OpenRequest(ctx, user, role)
		if err != nil {
			return err
		}
		if open != nil {
			return requestOpenError(open)
		}
		if req, secret, err = a.newRequest(ctx, act, start, now); err != nil {
			return err
		}
		return storeJSON(ctx, a.Records.storage, openRequestKey(user, role), openRequestRef{ID: req.ID})
	})
	if err != nil {
		return nil, "", err
	}
	a.metrics().Activation(req.Role, "requested")
	a.Audit.Event(EventActivationRequested, append(requestFields(req), zap.String("client_ip", req.ClientIP), zap.Int("approvals_needed", req.Needed),
		zap.String("deadline", req.Deadline.Format(time.RFC3339)))...)
	n := requestNotification(NotifyRequested, req, now)
	n.Alert = approversOf(act.Role)
	a.notify(n)
	return req, secret, nil
}

func (a *Authority) newRequest(ctx context.Context, act Activation, start, now time.Time) (*Request, string, error) {
	id, err := newSessionID()
	if err != nil {
		return nil, "", err
	}
	secret, hash, err := newPickupSecret()
	if err != nil {
		return nil, "", err
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
		PickupHash:    hash,
	}
	if start.After(now) {
		req.Start = start.UTC()
	}
	if err := a.Records.saveRequest(ctx, req); err != nil {
		return nil, "", err
	}
	return req, secret, nil
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
	// Counted the same way as an extension's added time (place.go).
	if err := a.withPlace(ctx, s.role, rec.Start, rec.Expires, "", now, func() error { return a.Records.create(ctx, rec) }); err != nil {
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
	if req.IsExtension() {
		return a.extendApproved(ctx, req, role, now)
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
// place under max_active. role returns a role as configured now, or nil. It reads
// only the open requests, through the request index: every instance runs it every
// few seconds, and decided requests stay in storage for days.
func (a *Authority) SweepRequests(ctx context.Context, role func(name string) *policy.Role) error {
	if err := a.ensureRequestIndex(ctx); err != nil {
		return err
	}
	// Oldest first: of the approved requests waiting for a place, the oldest gets it.
	all, err := a.Records.openRequests(ctx, indexStates, nil)
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

// Pending lists the pending requests approver may decide, oldest first. role returns
// a role as configured now, or nil. Through the request index it reads only the
// pending requests of the roles approver approves: no request at all for someone who
// approves no role.
func (a *Authority) Pending(ctx context.Context, approver policy.Caller, role func(name string) *policy.Role) ([]*Request, error) {
	if err := a.ensureRequestIndex(ctx); err != nil {
		return nil, err
	}
	approves := func(name string) bool { return ApprovesRole(role(name), approver) }
	all, err := a.Records.openRequests(ctx, []string{indexPending}, approves)
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
