package caddymodule

import (
	"context"
	"errors"
	"net/http"
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

// collectAction is where the status page's "collect" button posts: a browser that
// holds a session takes the end an approved extension gave it.
const collectAction = pagePrefix + "extend?collect=1"

// extend answers POST /.jit/extend: more time on a running session (the user's code,
// a justification, a duration), or, with collect=1, the browser's own session token
// renewed to the end approvers granted.
func (h *Handler) extend(w http.ResponseWriter, r *http.Request, caller policy.Caller) error {
	form, err := readForm(w, r, "session", "duration", "justification", "code", "csrf", "collect", fieldPasskeyCeremony, fieldPasskeyResponse)
	if err != nil {
		return h.renderStatus(w, r, caller, http.StatusBadRequest, "", err.Error()+".")
	}
	if !h.checkPost(r, caller.User, form["csrf"]) {
		return h.renderStatus(w, r, caller, http.StatusForbidden, "", "This form has expired or did not come from this site. Try again.")
	}
	if form["collect"] != "" {
		return h.collectExtension(w, r, caller, form["session"])
	}
	d, err := time.ParseDuration(strings.TrimSpace(form["duration"]))
	if err != nil {
		return h.renderStatus(w, r, caller, http.StatusBadRequest, "", "The duration "+printable.Truncate(form["duration"], 20)+" is not a duration such as 30m or 1h.")
	}
	var role *policy.Role
	if rec, err := h.app.authority.Records.Load(r.Context(), caller.User, form["session"]); err == nil {
		role = h.app.roleOf(rec.Role)
		if !h.holdsSession(r, caller.User, rec) {
			// A session is extended only where it is held: another browser that knows
			// the password (and a code) must not receive the session this way. Refused
			// before the code is checked.
			h.app.authority.Audit.Event(audit.EventExtensionFailed, zap.String("user", caller.User), zap.String("session_id", rec.ID),
				zap.String("reason", "session_not_held"), zap.String("client_ip", clientIP(r)))
			return h.renderStatus(w, r, caller, http.StatusForbidden, "",
				"Not extended: this browser does not hold that session. Extend it in the browser that holds it.")
		}
	}
	out, err := h.app.authority.SubmitExtension(r.Context(), workflow.Extension{
		Caller:        caller,
		SessionID:     form["session"],
		Role:          role,
		Duration:      d,
		Justification: strings.TrimSpace(form["justification"]),
		Code:          strings.TrimSpace(form["code"]),
		Passkey:       h.passkeyProof(r, form, passkeyForm("extend", form["session"])),
		ClientIP:      clientIP(r),
	})
	var refused *workflow.ActivationError
	if errors.As(err, &refused) {
		status, _ := activationFailure(refused.Reason)
		switch refused.Reason {
		case string(policy.ReasonMaxTotal), string(policy.ReasonExtensionNotPermitted):
			status = http.StatusForbidden
		case workflow.ReasonExtensionOpen:
			status = http.StatusConflict
		}
		return h.renderStatus(w, r, caller, status, "", "Not extended: "+strings.TrimSuffix(refused.Message, ".")+".")
	}
	if err != nil {
		return h.storeUnreachable("extending a session", caller.User, err)
	}
	if req := out.Request; req != nil {
		// Nothing changed yet: the session keeps its end, and this browser its cookie.
		return h.renderStatus(w, r, caller, http.StatusAccepted, "Your request for more time on "+req.Role+", until "+
			words.Time(req.NewEnd)+", waits for "+words.Plural(req.Needed, "approval")+
			". Once approved, collect it on this page, in this browser: only the browser that holds the session receives its new end.", "")
	}
	rec := out.Record
	if rec.Audience == h.audiences.of(r) {
		http.SetCookie(w, sessionCookieFor(r, out.Token, rec.Expires))
	}
	return h.renderStatus(w, r, caller, http.StatusOK, "Your session of "+rec.Role+" now lasts until "+words.Time(rec.Expires)+".", "")
}

// collectExtension renews the browser's session cookie to the session's current end.
// The browser proves it holds the session with the cookie itself.
func (h *Handler) collectExtension(w http.ResponseWriter, r *http.Request, caller policy.Caller, sessionID string) error {
	token, rec, err := h.app.authority.RenewToken(r.Context(), caller.User, h.audiences.of(r), sessionID, sessionCookie(r), clientIP(r))
	switch {
	case errors.Is(err, workflow.ErrNothingToCollect) && rec != nil:
		return h.renderStatus(w, r, caller, http.StatusOK, "Your session of "+rec.Role+" already runs until "+words.Time(rec.Expires)+".", "")
	case errors.Is(err, workflow.ErrNothingToCollect):
		return h.renderStatus(w, r, caller, http.StatusForbidden, "",
			"Nothing collected: this browser does not hold that session. An extension goes only to the browser that holds the session it extends.")
	case err != nil:
		return h.storeUnreachable("collecting an extension", caller.User, err)
	}
	http.SetCookie(w, sessionCookieFor(r, token, rec.Expires))
	return h.renderStatus(w, r, caller, http.StatusOK, "Your session of "+rec.Role+" now lasts until "+words.Time(rec.Expires)+".", "")
}

// extensionView is what the status page says of a session's latest extension request.
type extensionView struct {
	Request *workflow.Request
	// Waiting, Collect and Refused are exclusive: the request waits for approvers (or
	// for a free place), was applied and can be collected, or was not applied.
	Waiting, Collect bool
	Refused          string
	Action           string
}

// Extension describes rec's latest extension request for the status page, or nil.
// Only reads: a storage failure shows nothing, since the page grants nothing.
func (p statusPage) Extension(rec *session.Record) *extensionView {
	req, err := p.app.authority.ExtensionRequestOf(context.Background(), rec)
	if err != nil || req == nil {
		return nil
	}
	v := &extensionView{Request: req, Action: collectAction}
	switch {
	case req.State == workflow.RequestPending && p.at.Before(req.Deadline):
		v.Waiting = true
	case req.State == workflow.RequestApproved && req.SessionID == "":
		v.Waiting = true
	case req.State == workflow.RequestApproved:
		v.Collect = true
	case req.Refused != "":
		v.Refused = req.Refused
	default:
		return nil
	}
	return v
}

// ExtensionNeedsApproval reports whether extending rec waits for approvers.
func (p statusPage) ExtensionNeedsApproval(rec *session.Record) bool {
	role, ok := p.app.role(rec.Role)
	return ok && role.ExtensionNeedsApproval()
}
