package caddymodule

import (
	"errors"
	"net/http"
	"time"

	"github.com/caddy-jit/caddy-jit/internal/words"
	"github.com/caddy-jit/caddy-jit/policy"
	"github.com/caddy-jit/caddy-jit/session"
	"github.com/caddy-jit/caddy-jit/workflow"
)

// statusPage lists the caller's roles and active sessions.
type statusPage struct {
	User     string
	Roles    []eligibleRole
	Sessions []*session.Record
	CSRF     string
	Notice   string
	Error    string
	Audience string
	// Approver is set when the user may decide someone's requests.
	Approver bool
	// StepUp is the proof of presence of each extendable session's form, by id.
	StepUp map[string]stepUpView
	app    *App
	at     time.Time
}

// Scheduled reports whether a session has yet to start.
func (p statusPage) Scheduled(rec *session.Record) bool { return !rec.Started(p.at) }

// Extendable reports whether the status page offers to extend a session.
func (p statusPage) Extendable(rec *session.Record) bool {
	role, ok := p.app.role(rec.Role)
	return ok && rec.Started(p.at) && role.MaxTotal > role.MaxDuration && rec.Expires.Before(rec.Start.Add(role.MaxTotal))
}

type eligibleRole struct {
	Role     *policy.Role
	Until    time.Time
	Activate string
}

// serveStatusPage answers GET /.jit/. A browser whose request was approved gets its
// session here too, and goes on to the page it wanted.
func (h *Handler) serveStatusPage(w http.ResponseWriter, r *http.Request, caller policy.Caller) error {
	t := now()
	if h.holdsAnySession(r, caller.User, t) {
		// One session cookie per browser: the one held is not replaced here. A waiting
		// pickup is made where its role's pages are opened.
		return h.serveStatus(w, r, caller, "")
	}
	got := h.pickUp(w, r, caller.User, func(req *workflow.Request) bool { return ready(req) })
	if got == nil {
		return h.serveStatus(w, r, caller, "")
	}
	if got.Record.Started(t) {
		http.Redirect(w, r, safeReturn(got.Request.Return), http.StatusSeeOther)
		return nil
	}
	return h.serveStatus(w, r, caller, "Your request for "+got.Record.Role+" was approved: the session starts at "+
		words.Time(got.Record.Start)+", and this browser holds it.")
}

func (h *Handler) serveStatus(w http.ResponseWriter, r *http.Request, caller policy.Caller, notice string) error {
	return h.renderStatus(w, r, caller, http.StatusOK, notice, "")
}

func (h *Handler) renderStatus(w http.ResponseWriter, r *http.Request, caller policy.Caller, status int, notice, errMsg string) error {
	t := now()
	page := statusPage{User: caller.User, Notice: notice, Error: errMsg, Audience: h.audiences.of(r),
		CSRF: h.app.authority.Keyring.CSRFToken(caller.User, h.audiences.of(r), t), app: h.app, at: t}
	for _, name := range h.app.roleNames() {
		role, _ := h.app.role(name)
		if d := role.Eligible(caller, t); d.Allowed {
			page.Roles = append(page.Roles, eligibleRole{Role: role, Until: d.EligibleUntil, Activate: activationURL(name, "/")})
		}
		if workflow.ApprovesRole(role, caller) {
			page.Approver = true
		}
	}
	sessions, err := h.app.authority.Records.OfUser(r.Context(), caller.User, t)
	if err != nil {
		return h.storeUnreachable("listing sessions", caller.User, err)
	}
	page.StepUp = map[string]stepUpView{}
	stepUp := h.stepUps(r.Context(), r, caller.User)
	for _, s := range sessions {
		if h.app.authority.Revocations.Revoked(s.ID) {
			continue
		}
		page.Sessions = append(page.Sessions, s)
		if role, ok := h.app.role(s.Role); ok && page.Extendable(s) {
			v := stepUp(role.StepUp, passkeyForm("extend", s.ID))
			v.CodeID = "extend-code-" + s.ID
			page.StepUp[s.ID] = v
		}
	}
	return render(w, status, "status.html", page)
}

func (h *Handler) deactivate(w http.ResponseWriter, r *http.Request, caller policy.Caller) error {
	form, err := h.postedForm(w, r, caller, "the status page", "session")
	if form == nil {
		return err
	}
	_, err = h.app.authority.End(r.Context(), caller.User, form["session"], session.Deactivated, caller.User, "deactivated by the user")
	switch {
	case errors.Is(err, session.ErrSessionNotFound):
		return h.renderMessage(w, r, http.StatusNotFound, "No such session", "You have no session with that id.", caller.User)
	case err != nil:
		return h.storeUnreachable("deactivating a session", caller.User, err)
	}
	if token := sessionCookie(r); token != "" {
		h.app.authority.Verifier.Forget(token)
		http.SetCookie(w, sessionCookieFor(r, "", time.Time{}))
	}
	http.Redirect(w, r, pagePrefix, http.StatusSeeOther)
	return nil
}
