package caddymodule

import (
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/caddy-jit/caddy-jit/audit"
	"github.com/caddy-jit/caddy-jit/internal/printable"
	"github.com/caddy-jit/caddy-jit/internal/words"
	"github.com/caddy-jit/caddy-jit/policy"
	"github.com/caddy-jit/caddy-jit/session"
	"github.com/caddy-jit/caddy-jit/workflow"
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
	// Note introduces the page when it answers something else: the activation page
	// shows an open request instead of its form.
	Note    string
	Request *workflow.Request
	// Waiting makes the page reload itself.
	Waiting bool
	// CSRF is set when the request may be withdrawn: the page then offers it.
	CSRF string
}

// showRequest shows a request to its requester. Once it is approved, the browser that
// made it (and only that one: it holds the pickup secret) receives the session's
// cookie without another code and goes on to where it was going.
func (h *Handler) showRequest(w http.ResponseWriter, r *http.Request, caller policy.Caller, id string, status int, note string) error {
	req, err := h.app.authority.RequestFor(r.Context(), caller.User, id)
	if errors.Is(err, workflow.ErrRequestNotFound) {
		return h.renderMessage(w, r, http.StatusNotFound, "No such request", "You have no request with that id.", caller.User)
	}
	if err != nil {
		return h.storeUnreachable("reading a request", caller.User, err)
	}
	// Cookies ignore ports: a pickup secret of a request made on another site of this
	// host is left for that site.
	sameSite := req.Audience == h.audiences.of(r)
	if secret := pickupSecret(r, id); secret != "" && sameSite && (ready(req) || !req.PickedUp.IsZero() || req.State == workflow.RequestDenied || req.State == workflow.RequestExpired) {
		got := h.collect(w, r, caller.User, pickup{id: id, secret: secret}, h.audiences.of(r))
		if got != nil {
			req = got.Request
		}
		if got != nil && got.Token != "" {
			if got.Record.Started(now()) {
				http.Redirect(w, r, safeReturn(req.Return), http.StatusSeeOther)
				return nil
			}
			return render(w, status, "request.html", scheduledPage(caller, req, got.Record, note))
		}
	}
	page, rec, err := h.requestState(r, caller, req)
	if err != nil {
		return err
	}
	if rec != nil && !req.PickedUp.IsZero() && h.holdsSession(r, caller.User, rec) {
		// The browser that picked the session up, waiting for its start: on to the
		// page it wanted once the session runs.
		if rec.Started(now()) {
			http.Redirect(w, r, safeReturn(req.Return), http.StatusSeeOther)
			return nil
		}
		return render(w, status, "request.html", scheduledPage(caller, req, rec, note))
	}
	page.Note = note
	if h.app.authority.Withdrawable(r.Context(), req) {
		page.CSRF = h.app.authority.Keyring.CSRFToken(caller.User, h.audiences.of(r), now())
	}
	if r.Method == http.MethodPost {
		// The page answers a refused form: reloading it would send the form again.
		page.Waiting = false
	}
	return render(w, status, "request.html", page)
}

func scheduledPage(caller policy.Caller, req *workflow.Request, rec *session.Record, note string) requestPage {
	return requestPage{User: caller.User, Request: req, Note: note, Waiting: true, Title: "Approved and scheduled",
		Message: "Your request was approved. The session starts at " + words.Time(rec.Start) +
			", and this browser holds it."}
}

// requestState describes a request as it stands, handing nothing over; for a request
// whose session is still running, it returns the session's record too.
func (h *Handler) requestState(r *http.Request, caller policy.Caller, req *workflow.Request) (requestPage, *session.Record, error) {
	page := requestPage{User: caller.User, Request: req}
	switch req.State {
	case workflow.RequestPending:
		page.Title, page.Waiting = "Waiting for approval", true
		page.Message = "Your request waits for " + words.Plural(req.Needed-req.Approvals(), "more approval") + ". It expires at " + words.Time(req.Deadline) + " unless decided."
	case workflow.RequestDenied:
		page.Title = "Request denied"
		d, _ := req.Denial()
		page.Message = "Your request was denied by " + d.By + ": " + d.Comment
	case workflow.RequestExpired:
		page.Title = "Request expired"
		page.Message = "Your request was not decided in time, so it expired. Activate the role again if you still need it."
	case workflow.RequestApproved:
		if req.IsExtension() {
			page.Title = "Extension approved"
			page.Message = "Your request for more time was approved. Collect the new end on your status page, in the browser that holds the session."
			break
		}
		if req.SessionID == "" {
			page.Title, page.Waiting = "Approved, waiting for a free place", true
			page.Message = "Your request was approved, but the role is held by as many people as it allows at once (max_active). Your session starts as soon as one of theirs ends."
			break
		}
		rec, err := h.app.authority.Records.Load(r.Context(), caller.User, req.SessionID)
		if err != nil {
			return page, nil, h.storeUnreachable("reading an approved request's session", caller.User, err)
		}
		switch {
		case !rec.Active(now()) || h.app.authority.Revocations.Revoked(rec.ID):
			page.Title = "Session over"
			page.Message = "The session this request started has ended."
			return page, nil, nil
		case !req.PickedUp.IsZero():
			page.Title = "Approved"
			page.Message = "Your request was approved, and its session was handed to the browser you made the request in, at " +
				words.Time(req.PickedUp) + ". Only that browser holds it."
		default:
			page.Title = "Approved"
			page.Message = "Your request was approved. Its session goes only to the browser you made the request in: " +
				"open this page, or the page you wanted, there. This browser did not make the request, so it gets nothing. " +
				"If that browser is lost, withdraw the request (its session ends unused) and ask again."
		}
		return page, rec, nil
	}
	return page, nil, nil
}

// approvalsPage lists the requests an approver may decide.
type approvalsPage struct {
	User     string
	Requests []*workflow.Request
	CSRF     string
	Notice   string
	Error    string
	// StepUp is the proof of presence of each request's form, by id.
	StepUp map[string]stepUpView
}

func (h *Handler) showApprovals(w http.ResponseWriter, r *http.Request, caller policy.Caller, notice, errMsg string, status int) error {
	return h.showApprovalsOf(w, r, caller, "", notice, errMsg, status)
}

// showApprovalsOf shows the requests waiting for the caller, or only the one with id:
// the page a notification links to. Opening it decides nothing.
func (h *Handler) showApprovalsOf(w http.ResponseWriter, r *http.Request, caller policy.Caller, id, notice, errMsg string, status int) error {
	// The page is for approvers. Whether the caller is one follows from the roles as
	// configured, so anyone else is turned away without a read of storage.
	if !h.app.approvesSomeRole(caller) {
		return h.renderMessage(w, r, http.StatusForbidden, "Not an approver",
			"You approve no role, so no request can wait for your decision. Each role's approval block names its approvers.", caller.User)
	}
	pending, err := h.app.authority.Pending(r.Context(), caller, h.app.roleOf)
	if err != nil {
		return h.storeUnreachable("listing requests", caller.User, err)
	}
	if id != "" {
		pending = slices.DeleteFunc(pending, func(req *workflow.Request) bool { return req.ID != id })
		if len(pending) == 0 {
			return h.renderMessage(w, r, http.StatusNotFound, "Not waiting for you",
				"No request "+printable.Truncate(id, 40)+" waits for your decision: it was decided, withdrawn or expired, or it is not for you to decide. See all requests waiting for you on /.jit/approvals.", caller.User)
		}
	}
	page := approvalsPage{
		User: caller.User, Requests: pending, Notice: notice, Error: errMsg,
		CSRF:   h.app.authority.Keyring.CSRFToken(caller.User, h.audiences.of(r), now()),
		StepUp: map[string]stepUpView{},
	}
	stepUp := h.stepUps(r.Context(), r, caller.User)
	for _, req := range pending {
		var step policy.StepUp
		if role := h.app.roleOf(req.Role); role != nil {
			step = role.StepUp
		}
		v := stepUp(step, passkeyForm("decide", req.ID))
		v.CodeID, v.CodeHint = "code-"+req.ID, "The 6-digit code your own authenticator app shows for "+caller.User+"."
		page.StepUp[req.ID] = v
	}
	return render(w, status, "approvals.html", page)
}

func (h *Handler) decide(w http.ResponseWriter, r *http.Request, caller policy.Caller) error {
	form, err := readForm(w, r, "request", "decision", "comment", "code", "csrf", fieldPasskeyCeremony, fieldPasskeyResponse)
	if err != nil {
		return h.showApprovals(w, r, caller, "", err.Error()+".", http.StatusBadRequest)
	}
	if !h.checkPost(r, caller.User, form["csrf"]) {
		h.app.authority.Audit.Event(audit.EventApprovalFailed, zap.String("by", caller.User), zap.String("request_id", printable.Truncate(form["request"], 40)),
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
	req, err := h.app.authority.Decide(r.Context(), workflow.Approval{
		RequestID: form["request"],
		Approver:  caller,
		Role:      h.roleOfRequest(r, form["request"]),
		Approve:   approve,
		Comment:   form["comment"],
		Code:      strings.TrimSpace(form["code"]),
		Passkey:   h.passkeyProof(r, form, passkeyForm("decide", form["request"])),
		ClientIP:  clientIP(r),
	})
	var refused *workflow.ActivationError
	if errors.As(err, &refused) {
		status := http.StatusBadRequest
		switch refused.Reason {
		case string(policy.ReasonSelfApproval), string(policy.ReasonNotApprover):
			status = http.StatusForbidden
			if refused.Reason == string(policy.ReasonSelfApproval) && !h.app.approvesSomeRole(caller) {
				// The requester, who approves nothing: the approvals page would only say
				// so, and not why this decision was refused. Their own request tells
				// them nothing new.
				return h.renderMessage(w, r, status, "Not decided", sentence(refused.Message)+
					" Someone the role names as an approver decides it; its state is on /.jit/requests/"+printable.Truncate(form["request"], 40)+".", caller.User)
			}
		case string(policy.ReasonAlreadyDecided):
			status = http.StatusConflict
		case "locked_out":
			status = http.StatusTooManyRequests
		case "request_not_found":
			status = http.StatusNotFound
		}
		return h.showApprovals(w, r, caller, "", sentence(refused.Message), status)
	}
	if errors.Is(err, workflow.ErrRequestChanged) {
		return h.showApprovals(w, r, caller, "", sentence(err.Error()), http.StatusConflict)
	}
	if err != nil {
		return h.storeUnreachable("deciding a request", caller.User, err)
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
	req, err := h.app.authority.Requests.LoadRequest(r.Context(), id)
	if err != nil {
		return nil
	}
	return h.app.roleOf(req.Role)
}

// withdraw answers POST /.jit/withdraw: the requester closes an open request (its
// unpicked session, if approved, ends) and may ask again.
func (h *Handler) withdraw(w http.ResponseWriter, r *http.Request, caller policy.Caller) error {
	form, err := h.postedForm(w, r, caller, "the request's page", "request")
	if form == nil {
		return err
	}
	req, err := h.app.authority.Withdraw(r.Context(), caller.User, form["request"], clientIP(r))
	switch {
	case errors.Is(err, workflow.ErrRequestNotFound):
		return h.renderMessage(w, r, http.StatusNotFound, "No such request", "You have no request with that id.", caller.User)
	case errors.Is(err, workflow.ErrNotWithdrawable):
		return h.showRequest(w, r, caller, req.ID, http.StatusConflict, "This request is no longer open, so there is nothing to withdraw.")
	case err != nil:
		return h.storeUnreachable("withdrawing a request", caller.User, err)
	}
	http.SetCookie(w, pickupCookieFor(r, req.ID, "", time.Time{}))
	http.Redirect(w, r, activationURL(req.Role, safeReturn(req.Return)), http.StatusSeeOther)
	return nil
}
