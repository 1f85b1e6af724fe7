package workflow

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/caddy-jit/caddy-jit/audit"
	"github.com/caddy-jit/caddy-jit/policy"
	"github.com/caddy-jit/caddy-jit/session"
	"github.com/caddy-jit/caddy-jit/stepup"
)

// Deciding requests: approvers' answers, the start of approved sessions, the sweep of
// overdue and waiting requests, and the views of requests for their requester and
// approvers.

// Approval is an approver's answer to a request, as submitted.
type Approval struct {
	RequestID string
	Approver  policy.Caller
	// Role is the request's role as configured now.
	Role    *policy.Role
	Approve bool
	Comment string
	// Code is the approver's TOTP code; Passkey, when set, their passkey assertion.
	Code     string
	Passkey  *stepup.PasskeyProof
	ClientIP string
}

// Decide records an approver's answer after their own code. A denial ends the
// request; the last approval needed starts the session. Every outcome is audited.
func (a *Workflow) Decide(ctx context.Context, ap Approval) (*Request, error) {
	var req *Request
	err := a.locks.With(ctx, a.store, requestLock(ap.RequestID), func() error {
		var err error
		req, err = a.decide(ctx, ap)
		return err
	})
	return req, err
}

func (a *Workflow) decide(ctx context.Context, ap Approval) (*Request, error) {
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
		a.Audit.Event(audit.EventApprovalFailed, fields...)
		return req, &ActivationError{Reason: reason, Message: message, LockedUntil: until}
	}
	req, err := a.Requests.LoadRequest(ctx, ap.RequestID)
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
	// Approvers prove presence as the role's users do: a webauthn role's approvers
	// with a passkey.
	reason, message, lockedUntil, proved, err := a.checkProof(ctx, ap.Approver.User, stepup.Proof{Code: ap.Code, Passkey: ap.Passkey}, ap.Role.StepUp)
	if err != nil {
		return nil, err
	}
	if reason != "" {
		return fail(req, reason, message, lockedUntil)
	}

	req.Decisions = append(req.Decisions, Decision{By: ap.Approver.User, Approve: ap.Approve, Comment: comment, At: now.UTC(), Methods: proved.Methods})
	decided := []zap.Field{zap.String("by", ap.Approver.User), zap.String("comment", comment), zap.String("client_ip", ap.ClientIP),
		zap.Strings("amr", proved.Methods)}
	if !ap.Approve {
		req.State, req.Decided = RequestDenied, now.UTC()
		if err := a.Requests.saveRequest(ctx, req); err != nil {
			return nil, err
		}
		a.Audit.Event(audit.EventRequestDenied, append(requestFields(req), decided...)...)
		n := requestNotification(NotifyDenied, req, now)
		n.By, n.Comment = ap.Approver.User, comment
		a.notify(n)
		return req, nil
	}
	if req.Approvals() >= req.Needed {
		req.State, req.Decided = RequestApproved, now.UTC()
	}
	if err := a.Requests.saveRequest(ctx, req); err != nil {
		return nil, err
	}
	a.Audit.Event(audit.EventRequestApproved, append(requestFields(req), append(decided,
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
func (a *Workflow) startApproved(ctx context.Context, req *Request, role *policy.Role, now time.Time) error {
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
		a.Audit.Event(audit.EventRequestExpired, append(requestFields(req), zap.String("reason", string(eligible.Reason)))...)
		a.notify(requestNotification(NotifyExpired, req, now))
		return a.Requests.saveRequest(ctx, req)
	}
	rec, _, err := a.startSession(ctx, session.Spec{
		User: req.User, Role: role.Name, Audience: req.Audience, Justification: req.Justification, Ticket: req.Ticket,
		ClientIP: req.ClientIP, UserAgent: req.UserAgent, Start: start,
		Expires: capAt(start.Add(req.Duration), eligible.EligibleUntil), RequestID: req.ID, Approvers: req.Approvers(),
		Methods: req.Methods, SteppedUp: req.SteppedUp,
	}, role, now)
	var refused *ActivationError
	if errors.As(err, &refused) {
		if req.WaitingForPlace {
			// Said once when the wait began; the sweep retries quietly.
			return nil
		}
		req.WaitingForPlace = true
		a.Audit.Event(audit.EventActivationFailed, append(requestFields(req), zap.String("reason", refused.Reason),
			zap.String("client_ip", req.ClientIP), zap.Bool("retried", true))...)
		return a.Requests.saveRequest(ctx, req)
	}
	if err != nil {
		return err
	}
	req.SessionID, req.WaitingForPlace = rec.ID, false
	return a.Requests.saveRequest(ctx, req)
}

// expire ends a pending request whose deadline has passed.
func (a *Workflow) expire(ctx context.Context, req *Request, now time.Time) error {
	req.State, req.Decided = RequestExpired, now.UTC()
	if err := a.Requests.saveRequest(ctx, req); err != nil {
		return err
	}
	a.Audit.Event(audit.EventRequestExpired, append(requestFields(req), zap.String("reason", "deadline_passed"))...)
	a.notify(requestNotification(NotifyExpired, req, now))
	return nil
}

// SweepRequests expires overdue requests and starts approved ones that waited for a
// place under max_active. role returns a role as configured now, or nil. It reads
// only the open requests, through the request index: every instance runs it every
// few seconds, and decided requests stay in storage for days.
func (a *Workflow) SweepRequests(ctx context.Context, role func(name string) *policy.Role) error {
	if err := a.ensureRequestIndex(ctx); err != nil {
		return err
	}
	// Oldest first: of the approved requests waiting for a place, the oldest gets it.
	all, err := a.Requests.openRequests(ctx, indexStates, nil)
	if err != nil {
		return err
	}
	for _, r := range all {
		now := a.Now()
		waiting := r.State == RequestApproved && r.SessionID == ""
		if !r.overdue(now) && !waiting {
			continue
		}
		err := a.locks.With(ctx, a.store, requestLock(r.ID), func() error {
			req, err := a.Requests.LoadRequest(ctx, r.ID)
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
func (a *Workflow) RequestFor(ctx context.Context, user, id string) (*Request, error) {
	req, err := a.Requests.LoadRequest(ctx, id)
	if err != nil {
		return nil, err
	}
	if req.User != user {
		// Someone else's request is no one's business but the approvers'.
		return nil, ErrRequestNotFound
	}
	if now := a.Now(); req.overdue(now) {
		err := a.locks.With(ctx, a.store, requestLock(id), func() error {
			if req, err = a.Requests.LoadRequest(ctx, id); err != nil {
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
func (a *Workflow) Pending(ctx context.Context, approver policy.Caller, role func(name string) *policy.Role) ([]*Request, error) {
	if err := a.ensureRequestIndex(ctx); err != nil {
		return nil, err
	}
	approves := func(name string) bool { return ApprovesRole(role(name), approver) }
	all, err := a.Requests.openRequests(ctx, []string{indexPending}, approves)
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
