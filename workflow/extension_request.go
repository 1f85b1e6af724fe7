package workflow

import (
	"context"
	"errors"
	"slices"
	"time"

	"go.uber.org/zap"

	"github.com/caddy-jit/caddy-jit/audit"
	"github.com/caddy-jit/caddy-jit/policy"
	"github.com/caddy-jit/caddy-jit/session"
)

// An extension that needs approval: filed as a request, decided on the approvals page
// like an activation (no self-approval, distinct approvers, the role's count), applied
// on the last approval, and collected by the browser that holds the session.

// ExtensionRequestOf returns the latest extension request of a session, or nil when
// there is none. The session's record names it, so it needs no index of its own and
// goes when the record is pruned.
func (a *Workflow) ExtensionRequestOf(ctx context.Context, rec *session.Record) (*Request, error) {
	if rec.ExtensionRequest == "" {
		return nil, nil
	}
	// Read without settling an overdue request: callers may hold the session's lock,
	// and settling takes the request's, which the approval path takes first.
	req, err := a.Requests.LoadRequest(ctx, rec.ExtensionRequest)
	if errors.Is(err, ErrRequestNotFound) {
		return nil, nil // pruned
	}
	if err != nil {
		return nil, err
	}
	if req.User != rec.User || !req.IsExtension() || req.ExtendsSession != rec.ID {
		return nil, nil
	}
	return req, nil
}

// openExtension returns the session's extension request that still waits for
// approvers, or nil.
func (a *Workflow) openExtension(ctx context.Context, rec *session.Record, now time.Time) (*Request, error) {
	req, err := a.ExtensionRequestOf(ctx, rec)
	if err != nil || req == nil {
		return nil, err
	}
	if req.State == RequestPending && !req.overdue(now) {
		return req, nil
	}
	return nil, nil
}

// requestExtension stores a pending extension request and tells the approvers. It
// waits no longer than the session runs: after that there is nothing to extend.
func (a *Workflow) requestExtension(ctx context.Context, ext Extension, rec *session.Record, end, now time.Time) (*Request, error) {
	id := newRequestID()
	deadline := now.Add(ext.Role.Approval.Expires)
	if rec.Expires.Before(deadline) {
		deadline = rec.Expires
	}
	req := &Request{
		ID:             id,
		Kind:           RequestExtension,
		ExtendsSession: rec.ID,
		NewEnd:         end.UTC(),
		User:           rec.User,
		Groups:         ext.Caller.Groups,
		Role:           rec.Role,
		Audience:       rec.Audience,
		Justification:  ext.Justification,
		Ticket:         rec.Ticket,
		ClientIP:       ext.ClientIP,
		Duration:       ext.Duration,
		Created:        now.UTC(),
		Deadline:       deadline.UTC(),
		Needed:         ext.Role.Approval.Count,
		State:          RequestPending,
	}
	if err := a.Requests.saveRequest(ctx, req); err != nil {
		return nil, err
	}
	// The caller holds the session's lock: the record is as stored.
	rec.ExtensionRequest = req.ID
	if err := a.Records.Save(ctx, rec); err != nil {
		return nil, err
	}
	a.Audit.Event(audit.EventExtensionRequested, append(requestFields(req), zap.String("session_id", rec.ID),
		zap.String("expires", rec.Expires.Format(time.RFC3339)), zap.String("new_end", req.NewEnd.Format(time.RFC3339)),
		zap.String("client_ip", req.ClientIP), zap.Int("approvals_needed", req.Needed),
		zap.String("deadline", req.Deadline.Format(time.RFC3339)))...)
	n := requestNotification(NotifyExtensionRequested, req, now)
	n.SessionID, n.Expires, n.Alert = rec.ID, req.NewEnd, approversOf(ext.Role)
	a.notify(n)
	return req, nil
}

// extendApproved applies an approved extension request, under the request's lock
// (held by the caller). An extension that cannot be applied now because the role is
// at max_active waits, and the request sweep retries it while the session runs; any
// other refusal (the session ended, the role or eligibility changed) ends the request
// as expired, with the reason kept in Refused.
func (a *Workflow) extendApproved(ctx context.Context, req *Request, role *policy.Role, now time.Time) error {
	now = now.Truncate(time.Second)
	lapse := func(reason, message string) error {
		req.State, req.Decided, req.Refused, req.WaitingForPlace = RequestExpired, now.UTC(), message, false
		a.Audit.Event(audit.EventExtensionFailed, append(requestFields(req), zap.String("session_id", req.ExtendsSession),
			zap.String("reason", reason), zap.String("client_ip", req.ClientIP))...)
		n := requestNotification(NotifyExpired, req, now)
		n.SessionID, n.Reason = req.ExtendsSession, reason
		a.notify(n)
		return a.Requests.saveRequest(ctx, req)
	}
	var refused *ActivationError
	err := a.WithSession(ctx, req.ExtendsSession, func() error {
		rec, err := a.Records.Load(ctx, req.User, req.ExtendsSession)
		if errors.Is(err, session.ErrSessionNotFound) {
			return &ActivationError{Reason: "session_not_active", Message: "the session ended before the extension was approved"}
		}
		if err != nil {
			return err
		}
		if slices.ContainsFunc(rec.Extensions, func(x session.Extended) bool { return x.RequestID == req.ID }) {
			// Applied already, before a storage failure kept the request from saying so.
			req.SessionID = rec.ID
			return nil
		}
		if !rec.Active(now) || a.Revocations.Revoked(rec.ID) {
			return &ActivationError{Reason: "session_not_active", Message: "the session ended before the extension was approved"}
		}
		if rec.Role != role.Name || role.MaxTotal <= role.MaxDuration {
			return &ActivationError{Reason: string(policy.ReasonExtensionNotPermitted), Message: "the role " + rec.Role + " no longer allows this extension"}
		}
		eligible := role.Eligible(policy.Caller{User: req.User, Groups: req.Groups}, now)
		if !eligible.Allowed {
			return &ActivationError{Reason: string(eligible.Reason), Message: eligible.Message}
		}
		// The end the approvers saw, within the role's limits as configured now.
		end := req.NewEnd
		if limit := rec.Start.Add(role.MaxTotal); limit.Before(end) {
			end = limit
		}
		end = capAt(end, eligible.EligibleUntil).UTC().Truncate(time.Second)
		if !end.After(rec.Expires) {
			return &ActivationError{Reason: string(policy.ReasonMaxTotal), Message: "the session has reached the role's limit in total (max_total)"}
		}
		x := session.Extended{At: now.UTC(), Justification: req.Justification, From: rec.Expires, To: end, RequestID: req.ID, Approvers: req.Approvers()}
		if err := a.lengthen(ctx, rec, role, end, x, req.ClientIP, now); err != nil {
			return err
		}
		req.SessionID = rec.ID
		return nil
	})
	switch {
	case errors.As(err, &refused) && refused.Reason == string(policy.ReasonMaxActive):
		if req.WaitingForPlace {
			return nil // said once when the wait began; the sweep retries quietly
		}
		req.WaitingForPlace, req.Refused = true, refused.Message
		a.Audit.Event(audit.EventExtensionFailed, append(requestFields(req), zap.String("session_id", req.ExtendsSession),
			zap.String("reason", refused.Reason), zap.String("client_ip", req.ClientIP), zap.Bool("retried", true))...)
		return a.Requests.saveRequest(ctx, req)
	case errors.As(err, &refused):
		return lapse(refused.Reason, refused.Message)
	case errors.Is(err, session.ErrSessionNotFound):
		return lapse("session_not_active", "the session ended before the extension was approved")
	case err != nil:
		return err
	}
	req.WaitingForPlace, req.Refused = false, ""
	return a.Requests.saveRequest(ctx, req)
}

// ErrNothingToCollect answers a browser whose session token already carries the
// session's current end, or that holds no valid token of that session.
var ErrNothingToCollect = errors.New("this browser holds no running session with a later end to collect")

// RenewToken hands the browser that holds a session a token carrying the session's
// current end, once an approved extension moved it. presented is the browser's own
// session token: it must be valid now, for user at audience, of exactly that session.
// Another browser of the same user, knowing the password and the request's id but not
// holding the session, gets nothing.
func (a *Workflow) RenewToken(ctx context.Context, user, audience, sessionID, presented, clientIP string) (string, *session.Record, error) {
	now := a.Now()
	refuse := func(reason string) (string, *session.Record, error) {
		a.Audit.Event(audit.EventExtensionFailed, zap.String("user", user), zap.String("session_id", sessionID),
			zap.String("reason", reason), zap.String("client_ip", clientIP))
		return "", nil, ErrNothingToCollect
	}
	rec, err := a.Records.Load(ctx, user, sessionID)
	if errors.Is(err, session.ErrSessionNotFound) {
		return refuse("session_not_found")
	}
	if err != nil {
		return "", nil, err
	}
	claims, err := a.Verifier.Verify(presented, session.Want{Subject: user, Audience: audience, Roles: []string{rec.Role}}, now)
	if err != nil || claims.SessionID != rec.ID {
		return refuse("session_not_held")
	}
	if !rec.Active(now) || a.Revocations.Revoked(rec.ID) || rec.Audience != audience {
		return refuse("session_not_active")
	}
	if rec.Expires.Unix() <= claims.Expiry {
		return "", rec, ErrNothingToCollect // already current: not worth an event
	}
	token, err := a.SignRecord(rec, now)
	if err != nil {
		return "", nil, err
	}
	a.Audit.Event(audit.EventExtensionCollected, zap.String("user", user), zap.String("role", rec.Role), zap.String("session_id", rec.ID),
		zap.String("expires", rec.Expires.UTC().Format(time.RFC3339)), zap.String("client_ip", clientIP))
	return token, rec, nil
}
