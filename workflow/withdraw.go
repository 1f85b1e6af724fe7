package workflow

import (
	"context"
	"errors"

	"github.com/caddy-jit/caddy-jit/audit"
	"github.com/caddy-jit/caddy-jit/session"
	"go.uber.org/zap"
)

// A request is its requester's to withdraw while it is open: one that waits for
// approvers or for a free place, or whose approved session no browser has picked up
// (the asking browser was lost). Withdrawing only ever lowers privilege, so, like
// deactivating, it needs no code; it frees the role for a new request.

// RequestWithdrawn was withdrawn by its requester before its session reached a browser.
const RequestWithdrawn = "withdrawn"

// ErrNotWithdrawable refuses to withdraw a request that is no longer open.
var ErrNotWithdrawable = errors.New("the request is no longer open: there is nothing to withdraw")

// Withdraw ends the user's open request id: a waiting one is closed, and an approved
// one's session, which no browser holds yet, is ended.
func (a *Workflow) Withdraw(ctx context.Context, user, id, clientIP string) (*Request, error) {
	if _, err := a.RequestFor(ctx, user, id); err != nil {
		return nil, err
	}
	var req *Request
	err := a.locks.With(ctx, a.store, requestLock(id), func() error {
		var err error
		req, err = a.withdrawLocked(ctx, user, id, clientIP)
		return err
	})
	return req, err
}

func (a *Workflow) withdrawLocked(ctx context.Context, user, id, clientIP string) (*Request, error) {
	req, err := a.Requests.LoadRequest(ctx, id)
	if err != nil {
		return nil, err
	}
	if req.User != user {
		return nil, ErrRequestNotFound
	}
	open, err := a.stillOpen(ctx, req)
	if err != nil {
		return nil, err
	}
	if !open || req.IsExtension() {
		return req, ErrNotWithdrawable
	}
	now := a.Now()
	if req.SessionID != "" {
		if _, err := a.End(ctx, user, req.SessionID, session.Deactivated, user, "request withdrawn: no browser picked the session up"); err != nil {
			return nil, err
		}
	}
	req.State, req.Decided, req.WaitingForPlace = RequestWithdrawn, now.UTC(), false
	if err := a.Requests.saveRequest(ctx, req); err != nil {
		return nil, err
	}
	fields := append(requestFields(req), zap.String("client_ip", clientIP))
	if req.SessionID != "" {
		fields = append(fields, zap.String("session_id", req.SessionID))
	}
	a.Audit.Event(audit.EventRequestWithdrawn, fields...)
	return req, nil
}

// Withdrawable reports whether the requester may withdraw req now (see Withdraw).
func (a *Workflow) Withdrawable(ctx context.Context, req *Request) bool {
	if req.IsExtension() {
		return false
	}
	open, err := a.stillOpen(ctx, req)
	return err == nil && open
}
