package caddymodule

import (
	"errors"
	"net/http"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/caddy-jit/caddy-jit/audit"
	"github.com/caddy-jit/caddy-jit/internal/printable"
	"github.com/caddy-jit/caddy-jit/policy"
	"github.com/caddy-jit/caddy-jit/session"
	"github.com/caddy-jit/caddy-jit/workflow"
)

// reconfirmPage is where a route with `fresh` sends a session whose step-up is too
// old: GET /.jit/reconfirm?session=ID&return=PATH shows the form, POST proves
// presence with the role's step_up and sends the browser back to PATH with the
// session's new token. Only the browser that holds the session may confirm it.
const reconfirmPage = "reconfirm"

// reconfirmForm is what the re-confirmation page shows and what its POST carries.
type reconfirmForm struct {
	User      string
	SessionID string
	Role      string
	// SteppedUp is the session's last proof of presence; Expires its end, which a
	// re-confirmation does not move.
	SteppedUp time.Time
	Expires   time.Time
	Return    string
	CSRF      string
	Error     string
	// ErrorField names the input the error is about, for the error summary link.
	ErrorField string
	StepUp     stepUpView
}

// serveReconfirm answers GET, HEAD and POST /.jit/reconfirm.
func (h *Handler) serveReconfirm(w http.ResponseWriter, r *http.Request, caller policy.Caller) error {
	if r.Method == http.MethodPost {
		return h.reconfirm(w, r, caller)
	}
	q := r.URL.Query()
	rec, role, err := h.heldSession(w, r, caller, q.Get("session"), false)
	if rec == nil {
		return err
	}
	return h.renderReconfirm(w, r, http.StatusOK, reconfirmForm{User: caller.User, Return: safeReturn(q.Get("return"))}, rec, role)
}

func (h *Handler) reconfirm(w http.ResponseWriter, r *http.Request, caller policy.Caller) error {
	form, err := h.postedForm(w, r, caller, "the page you wanted", "session", "return", "code",
		fieldPasskeyCeremony, fieldPasskeyResponse)
	if form == nil {
		return err
	}
	rec, role, err := h.heldSession(w, r, caller, form["session"], true)
	if rec == nil {
		return err
	}
	f := reconfirmForm{User: caller.User, Return: safeReturn(form["return"])}
	token, confirmed, err := h.app.authority.Reconfirm(r.Context(), workflow.Reconfirmation{
		Caller:    caller,
		SessionID: rec.ID,
		Role:      role,
		Code:      strings.TrimSpace(form["code"]),
		Passkey:   h.passkeyProof(r, form, passkeyForm(reconfirmPage, rec.ID)),
		ClientIP:  clientIP(r),
	})
	var refused *workflow.ActivationError
	if errors.As(err, &refused) {
		status, field := reconfirmFailure(refused.Reason)
		f.Error, f.ErrorField = sentence(refused.Message), field
		return h.renderReconfirm(w, r, status, f, rec, role)
	}
	if err != nil {
		return h.storeUnreachable("re-confirming a session", caller.User, err)
	}
	http.SetCookie(w, sessionCookieFor(r, token, confirmed.Expires))
	http.Redirect(w, r, f.Return, http.StatusSeeOther)
	return nil
}

// heldSession reads the caller's session id for the page and checks that this
// browser holds it: another browser of the same user, which knows the password and
// perhaps a code, gets nothing, not even the form. Where it is refused, it answers
// the request itself and the record is nil; a refused POST (posted) is audited.
func (h *Handler) heldSession(w http.ResponseWriter, r *http.Request, caller policy.Caller, id string, posted bool) (*session.Record, *policy.Role, error) {
	refuse := func(status int, reason, title, msg string) (*session.Record, *policy.Role, error) {
		if posted {
			h.app.authority.Audit.Event(audit.EventReconfirmFailed, zap.String("user", caller.User),
				zap.String("session_id", printable.Truncate(id, 64)), zap.String("reason", reason), zap.String("client_ip", clientIP(r)))
		}
		return nil, nil, h.renderMessage(w, r, status, title, msg, caller.User)
	}
	rec, err := h.app.authority.Records.Load(r.Context(), caller.User, id)
	if errors.Is(err, session.ErrSessionNotFound) {
		return refuse(http.StatusNotFound, workflow.ReasonSessionNotFound, "No such session",
			"You have no session with this id. Open the page you wanted again.")
	}
	if err != nil {
		return nil, nil, h.storeUnreachable("reading a session to re-confirm", caller.User, err)
	}
	if !rec.Active(now()) {
		return refuse(http.StatusForbidden, workflow.ReasonSessionNotActive, "Session ended",
			"Your session of "+rec.Role+" has ended, so there is nothing to confirm. Open the page you wanted again to activate the role.")
	}
	if !h.holdsSession(r, caller.User, rec) {
		return refuse(http.StatusForbidden, "session_not_held", "Not confirmed",
			"This browser does not hold that session. Confirm it in the browser that holds it.")
	}
	role := h.app.roleOf(rec.Role)
	if role == nil {
		return refuse(http.StatusForbidden, string(policy.ReasonUnknownRole), "Not confirmed",
			"The role "+rec.Role+" is no longer configured. Ask an operator.")
	}
	return rec, role, nil
}

func (h *Handler) renderReconfirm(w http.ResponseWriter, r *http.Request, status int, f reconfirmForm, rec *session.Record, role *policy.Role) error {
	f.SessionID, f.Role, f.SteppedUp, f.Expires = rec.ID, rec.Role, rec.SteppedUpAt(), rec.Expires
	f.CSRF = h.app.authority.Keyring.CSRFToken(f.User, h.audiences.of(r), now())
	f.StepUp = h.stepUpFor(r.Context(), r, f.User, role.StepUp, passkeyForm(reconfirmPage, rec.ID))
	f.ErrorField = f.StepUp.linkableField(f.ErrorField)
	f.StepUp.ErrorField = f.ErrorField
	return render(w, status, "reconfirm.html", f)
}

// reconfirmFailure maps a refused re-confirmation to its status code and the form
// field it concerns.
func reconfirmFailure(reason string) (int, string) {
	switch reason {
	case workflow.ReasonSessionNotFound:
		return http.StatusNotFound, ""
	case workflow.ReasonSessionNotActive, string(policy.ReasonUnknownRole):
		return http.StatusForbidden, ""
	}
	return activationFailure(reason)
}
