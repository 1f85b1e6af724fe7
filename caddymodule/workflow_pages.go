package caddymodule

import (
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/caddy-jit/caddy-jit/policy"
	"github.com/caddy-jit/caddy-jit/session"
)

func requestURL(id string) string { return pagePrefix + "requests/" + url.PathEscape(id) }

// parseStart reads the activation form's start: the browser's datetime-local value
// (taken as UTC, as the form says) or an RFC 3339 time.
func parseStart(s string) (time.Time, error) {
	for _, layout := range []string{time.RFC3339, "2006-01-02T15:04", "2006-01-02T15:04:05"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t, nil
		}
	}
	return time.Time{}, errors.New("The start " + s + " is not a time such as 2026-12-01T08:00 (UTC).")
}

// requestPage is the requester's view of a request.
type requestPage struct {
	Title, Message, User string
	Request              *session.Request
	// Waiting makes the page reload itself.
	Waiting bool
}

// showRequest shows a request to its requester; once approved it hands over the
// session's cookie, without another code, and sends them where they were going.
func (h *Handler) showRequest(w http.ResponseWriter, r *http.Request, caller policy.Caller, id string) error {
	req, err := h.app.authority.RequestFor(r.Context(), caller.User, id)
	if errors.Is(err, session.ErrRequestNotFound) {
		return h.renderMessage(w, r, http.StatusNotFound, "No such request", "You have no request with that id.", caller.User)
	}
	if err != nil {
		h.logger.Error("reading a request", zap.String("user", caller.User), zap.Error(err))
		return caddyhttp.Error(http.StatusServiceUnavailable, errors.New("the session store could not be reached"))
	}
	page := requestPage{User: caller.User, Request: req}
	t := now()
	switch req.State {
	case session.RequestPending:
		page.Title, page.Waiting = "Waiting for approval", true
		page.Message = "Your request waits for " + plural(req.Needed-req.Approvals(), "more approval") + ". It expires at " + req.Deadline.UTC().Format("2006-01-02 15:04 UTC") + " unless decided."
	case session.RequestDenied:
		page.Title = "Request denied"
		d, _ := req.Denial()
		page.Message = "Your request was denied by " + d.By + ": " + d.Comment
	case session.RequestExpired:
		page.Title = "Request expired"
		page.Message = "Your request was not decided in time, so it expired. Activate the role again if you still need it."
	case session.RequestApproved:
		if req.SessionID == "" {
			page.Title, page.Waiting = "Approved, waiting for a free place", true
			page.Message = "Your request was approved, but the role is held by as many people as it allows at once (max_active). Your session starts as soon as one of theirs ends."
			break
		}
		rec, err := h.app.authority.Records.Load(r.Context(), caller.User, req.SessionID)
		if err != nil {
			h.logger.Error("reading an approved request's session", zap.String("user", caller.User), zap.Error(err))
			return caddyhttp.Error(http.StatusServiceUnavailable, errors.New("the session store could not be reached"))
		}
		if !rec.Active(t) || h.app.authority.Revocations.Revoked(rec.ID) {
			page.Title = "Session over"
			page.Message = "The session this request started has ended."
			break
		}
		if rec.Audience == h.audiences.of(r) {
			token, err := h.app.authority.SignRecord(rec, t)
			if err != nil {
				return caddyhttp.Error(http.StatusInternalServerError, err)
			}
			http.SetCookie(w, sessionCookieFor(r, token, rec.Expires))
		}
		if !rec.Started(t) {
			page.Title, page.Waiting = "Approved and scheduled", true
			page.Message = "Your request was approved. The session starts at " + rec.Start.UTC().Format("2006-01-02 15:04 UTC") + "."
			break
		}
		http.Redirect(w, r, safeReturn(req.Return), http.StatusSeeOther)
		return nil
	}
	return render(w, http.StatusOK, "request.html", page)
}

func plural(n int, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return strconv.Itoa(n) + " " + word + "s"
}

// approvalsPage lists the requests an approver may decide.
type approvalsPage struct {
	User     string
	Requests []*session.Request
	CSRF     string
	Notice   string
	Error    string
}

func (h *Handler) showApprovals(w http.ResponseWriter, r *http.Request, caller policy.Caller, notice, errMsg string, status int) error {
	pending, err := h.app.authority.Pending(r.Context(), caller, h.app.roleOf)
	if err != nil {
		h.logger.Error("listing requests", zap.String("user", caller.User), zap.Error(err))
		return caddyhttp.Error(http.StatusServiceUnavailable, errors.New("the session store could not be reached"))
	}
	return render(w, status, "approvals.html", approvalsPage{
		User: caller.User, Requests: pending, Notice: notice, Error: errMsg,
		CSRF: h.app.authority.Keyring.CSRFToken(caller.User, h.audiences.of(r), now()),
	})
}

func (h *Handler) decide(w http.ResponseWriter, r *http.Request, caller policy.Caller) error {
	form, err := readForm(w, r, "request", "decision", "comment", "code", "csrf")
	if err != nil {
		return h.showApprovals(w, r, caller, "", err.Error()+".", http.StatusBadRequest)
	}
	if !h.checkPost(r, caller.User, form["csrf"]) {
		h.app.authority.Audit.Event(session.EventApprovalFailed, zap.String("by", caller.User), zap.String("request_id", truncateRunes(form["request"], 40)),
			zap.String("reason", "csrf"), zap.String("client_ip", clientIP(r)))
		return h.showApprovals(w, r, caller, "", "This form has expired or did not come from this site. Check the request and decide again.", http.StatusForbidden)
	}
	var approve bool
	switch form["decision"] {
	case "approve":
		approve = true
	case "deny":
	default:
		return h.showApprovals(w, r, caller, "", "The decision must be approve or deny.", http.StatusBadRequest)
	}
	req, err := h.app.authority.Decide(r.Context(), session.Approval{
		RequestID: form["request"],
		Approver:  caller,
		Role:      h.roleOfRequest(r, form["request"]),
		Approve:   approve,
		Comment:   form["comment"],
		Code:      strings.TrimSpace(form["code"]),
		ClientIP:  clientIP(r),
	})
	var refused *session.ActivationError
	if errors.As(err, &refused) {
		status := http.StatusBadRequest
		switch refused.Reason {
		case string(policy.ReasonSelfApproval), string(policy.ReasonNotApprover):
			status = http.StatusForbidden
		case string(policy.ReasonAlreadyDecided):
			status = http.StatusConflict
		case "locked_out":
			status = http.StatusTooManyRequests
		case "request_not_found":
			status = http.StatusNotFound
		}
		return h.showApprovals(w, r, caller, "", sentence(refused.Message), status)
	}
	if err != nil {
		h.logger.Error("deciding a request", zap.String("user", caller.User), zap.Error(err))
		return caddyhttp.Error(http.StatusServiceUnavailable, errors.New("the session store could not be reached"))
	}
	notice := "You denied " + req.User + "'s request for " + req.Role + "."
	if approve {
		notice = "You approved " + req.User + "'s request for " + req.Role + " (" + strconv.Itoa(req.Approvals()) + " of " + strconv.Itoa(req.Needed) + ")."
	}
	return h.showApprovals(w, r, caller, notice, "", http.StatusOK)
}

// roleOfRequest finds the configured role a request is for, or nil; Decide refuses a
// nil role.
func (h *Handler) roleOfRequest(r *http.Request, id string) *policy.Role {
	req, err := h.app.authority.Records.LoadRequest(r.Context(), id)
	if err != nil {
		return nil
	}
	return h.app.roleOf(req.Role)
}

func (h *Handler) extend(w http.ResponseWriter, r *http.Request, caller policy.Caller) error {
	form, err := readForm(w, r, "session", "duration", "justification", "code", "csrf")
	if err != nil {
		return h.renderStatus(w, r, caller, http.StatusBadRequest, "", err.Error()+".")
	}
	if !h.checkPost(r, caller.User, form["csrf"]) {
		return h.renderStatus(w, r, caller, http.StatusForbidden, "", "This form has expired or did not come from this site. Try again.")
	}
	d, err := time.ParseDuration(strings.TrimSpace(form["duration"]))
	if err != nil {
		return h.renderStatus(w, r, caller, http.StatusBadRequest, "", "The duration "+truncateRunes(form["duration"], 20)+" is not a duration such as 30m or 1h.")
	}
	var role *policy.Role
	if rec, err := h.app.authority.Records.Load(r.Context(), caller.User, form["session"]); err == nil {
		role = h.app.roleOf(rec.Role)
	}
	token, rec, err := h.app.authority.Extend(r.Context(), session.Extension{
		Caller:        caller,
		SessionID:     form["session"],
		Role:          role,
		Duration:      d,
		Justification: strings.TrimSpace(form["justification"]),
		Code:          strings.TrimSpace(form["code"]),
		ClientIP:      clientIP(r),
	})
	var refused *session.ActivationError
	if errors.As(err, &refused) {
		status, _ := activationFailure(refused.Reason)
		if refused.Reason == string(policy.ReasonMaxTotal) || refused.Reason == string(policy.ReasonExtensionNotPermitted) {
			status = http.StatusForbidden
		}
		return h.renderStatus(w, r, caller, status, "", "Not extended: "+strings.TrimSuffix(refused.Message, ".")+".")
	}
	if err != nil {
		h.logger.Error("extending a session", zap.String("user", caller.User), zap.Error(err))
		return caddyhttp.Error(http.StatusServiceUnavailable, errors.New("the session store could not be reached"))
	}
	if rec.Audience == h.audiences.of(r) {
		http.SetCookie(w, sessionCookieFor(r, token, rec.Expires))
	}
	return h.renderStatus(w, r, caller, http.StatusOK, "Your session of "+rec.Role+" now lasts until "+rec.Expires.UTC().Format("2006-01-02 15:04 UTC")+".", "")
}
