package caddymodule

import (
	"errors"
	"net/http"
	"slices"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/caddy-jit/caddy-jit/audit"
	"github.com/caddy-jit/caddy-jit/internal/printable"
	"github.com/caddy-jit/caddy-jit/internal/words"
	"github.com/caddy-jit/caddy-jit/policy"
	"github.com/caddy-jit/caddy-jit/workflow"
)

// activationForm is what the activation page shows and what its POST carries.
type activationForm struct {
	User          string
	Role          *policy.Role
	EligibleUntil time.Time
	Durations     []time.Duration
	Duration      time.Duration
	Justification string
	Ticket        string
	// Start is the scheduled start as typed, BreakGlass the emergency box.
	Start      string
	BreakGlass bool
	Return     string
	CSRF       string
	Error      string
	// ErrorField names the input the error is about, for the error summary link.
	ErrorField string
	StepUp     stepUpView
}

func (h *Handler) showActivation(w http.ResponseWriter, r *http.Request, caller policy.Caller) error {
	q := r.URL.Query()
	role, ok := h.app.role(q.Get("role"))
	if !ok {
		return h.renderMessage(w, r, http.StatusNotFound, "Unknown role",
			"There is no role named "+q.Get("role")+". Follow the link from the page you wanted to open.", caller.User)
	}
	d := role.Eligible(caller, now())
	if !d.Allowed {
		return h.renderMessage(w, r, http.StatusForbidden, "Not eligible", d.Message+".", caller.User)
	}
	if shown, err := h.showOpenRequest(w, r, caller, role.Name, http.StatusOK); shown || err != nil {
		return err
	}
	return h.renderActivation(w, http.StatusOK, activationForm{
		User:          caller.User,
		Role:          role,
		EligibleUntil: d.EligibleUntil,
		Duration:      role.DefaultDuration,
		Return:        safeReturn(q.Get("return")),
	}, r)
}

func (h *Handler) renderActivation(w http.ResponseWriter, status int, f activationForm, r *http.Request) error {
	f.Durations = durationChoices(f.Role.MaxDuration, f.Role.DefaultDuration, f.Duration)
	f.CSRF = h.app.authority.Keyring.CSRFToken(f.User, h.audiences.of(r), now())
	f.StepUp = h.stepUpFor(r.Context(), r, f.User, f.Role.StepUp, passkeyForm("activate", f.Role.Name))
	f.ErrorField = f.StepUp.linkableField(f.ErrorField)
	f.StepUp.ErrorField = f.ErrorField
	return render(w, status, "activate.html", f)
}

// durationChoices offers common durations up to the role's maximum, plus the default,
// the maximum and the one the user picked.
func durationChoices(maxD, def, picked time.Duration) []time.Duration {
	var out []time.Duration
	seen := map[time.Duration]bool{}
	add := func(d time.Duration) {
		if d > 0 && d <= maxD && !seen[d] {
			seen[d] = true
			out = append(out, d)
		}
	}
	for _, d := range []time.Duration{5 * time.Minute, 15 * time.Minute, 30 * time.Minute, time.Hour, 2 * time.Hour, 4 * time.Hour, 8 * time.Hour, 12 * time.Hour, 24 * time.Hour} {
		add(d)
	}
	add(def)
	add(maxD)
	add(picked)
	slices.Sort(out)
	return out
}

func (h *Handler) activate(w http.ResponseWriter, r *http.Request, caller policy.Caller) error {
	form, err := readForm(w, r, "role", "duration", "justification", "ticket", "code", "return", "csrf", "start", "break_glass",
		fieldPasskeyCeremony, fieldPasskeyResponse)
	if err != nil {
		return h.renderMessage(w, r, http.StatusBadRequest, "The form could not be read", err.Error()+". Open the activation page again.", caller.User)
	}
	role, ok := h.app.role(form["role"])
	if !ok {
		return h.renderMessage(w, r, http.StatusBadRequest, "Unknown role", "The form names no declared role. Open the activation page again from the link you followed.", caller.User)
	}
	f := activationForm{
		User:          caller.User,
		Role:          role,
		Justification: printable.Truncate(form["justification"], policy.MaxJustificationLength+1),
		Ticket:        printable.Truncate(form["ticket"], policy.MaxTicketLength+1),
		Return:        safeReturn(form["return"]),
		Duration:      role.DefaultDuration,
		Start:         printable.Truncate(strings.TrimSpace(form["start"]), 40),
		BreakGlass:    form["break_glass"] != "",
	}
	fail := func(status int, field, msg string) error {
		f.Error, f.ErrorField = msg, field
		f.EligibleUntil = role.Eligible(caller, now()).EligibleUntil
		return h.renderActivation(w, status, f, r)
	}
	if !h.checkPost(r, caller.User, form["csrf"]) {
		h.app.authority.Audit.Event(audit.EventActivationFailed, zap.String("user", caller.User), zap.String("role", role.Name),
			zap.String("reason", "csrf"), zap.String("client_ip", clientIP(r)))
		return fail(http.StatusForbidden, "", "This form has expired or did not come from this site. Check the details and submit it again.")
	}
	if raw := strings.TrimSpace(form["duration"]); raw != "" {
		d, err := time.ParseDuration(raw)
		if err != nil {
			return fail(http.StatusBadRequest, "duration", "The duration "+printable.Truncate(raw, 20)+" is not a duration such as 30m or 1h.")
		}
		f.Duration = d
	}
	var start time.Time
	if f.Start != "" {
		if start, err = parseStart(f.Start); err != nil {
			return fail(http.StatusBadRequest, "start", err.Error())
		}
	}
	if v := form["break_glass"]; v != "" && v != "on" {
		return fail(http.StatusBadRequest, "break_glass", "The break-glass box must be sent as on, or not at all.")
	}
	res, err := h.app.authority.Submit(r.Context(), workflow.Activation{
		Caller:        caller,
		Role:          role,
		Audience:      h.audiences.of(r),
		Duration:      f.Duration,
		Justification: strings.TrimSpace(form["justification"]),
		Ticket:        strings.TrimSpace(form["ticket"]),
		Code:          strings.TrimSpace(form["code"]),
		Passkey:       h.passkeyProof(r, form, passkeyForm("activate", role.Name)),
		ClientIP:      clientIP(r),
		UserAgent:     printable.Truncate(r.UserAgent(), 256),
		Start:         start,
		BreakGlass:    f.BreakGlass,
		Return:        f.Return,
	})
	var refused *workflow.ActivationError
	if errors.As(err, &refused) && refused.Reason == workflow.ReasonRequestOpen {
		if shown, err := h.showOpenRequest(w, r, caller, role.Name, http.StatusConflict); shown || err != nil {
			return err
		}
	}
	if errors.As(err, &refused) {
		status, field := activationFailure(refused.Reason)
		return fail(status, field, sentence(refused.Message))
	}
	if err != nil {
		h.logger.Error("activation failed: storage error", zap.String("user", caller.User), zap.String("role", role.Name), zap.Error(err))
		h.app.authority.Audit.Event(audit.EventActivationFailed, zap.String("user", caller.User), zap.String("role", role.Name),
			zap.String("reason", "storage_unavailable"), zap.String("client_ip", clientIP(r)))
		w.Header().Set("Retry-After", "5")
		return h.renderMessage(w, r, http.StatusServiceUnavailable, "Activation unavailable",
			"caddy-jit cannot reach its storage, so no session was started. Try again in a moment; if it persists, tell the operators.", caller.User)
	}
	if res.Request != nil {
		http.SetCookie(w, pickupCookieFor(r, res.Request.ID, res.PickupSecret, res.Request.PickupExpiry()))
		http.Redirect(w, r, requestURL(res.Request.ID), http.StatusSeeOther)
		return nil
	}
	h.endReplaced(r, caller.User, res.Record.ID)
	http.SetCookie(w, sessionCookieFor(r, res.Token, res.Record.Expires))
	if !res.Record.Started(now()) {
		return h.serveStatus(w, r, caller, "Your session of "+role.Name+" is scheduled: it starts at "+words.Time(res.Record.Start)+".")
	}
	http.Redirect(w, r, f.Return, http.StatusSeeOther)
	return nil
}

// activationFailure maps a refusal to its status code and the form field it concerns.
func activationFailure(reason string) (int, string) {
	switch reason {
	case string(policy.ReasonNotEligible):
		return http.StatusForbidden, ""
	case "locked_out":
		return http.StatusTooManyRequests, "code"
	case string(policy.ReasonDurationInvalid), string(policy.ReasonDurationTooLong):
		return http.StatusBadRequest, "duration"
	case string(policy.ReasonJustificationMissing), string(policy.ReasonJustificationTooShort), string(policy.ReasonJustificationTooLong):
		return http.StatusBadRequest, "justification"
	case string(policy.ReasonTicketInvalid):
		return http.StatusBadRequest, "ticket"
	case string(policy.ReasonStartInvalid), string(policy.ReasonBreakGlassScheduled):
		return http.StatusBadRequest, "start"
	case string(policy.ReasonBreakGlassNotAllowed):
		return http.StatusBadRequest, "break_glass"
	case string(policy.ReasonOutsideHours), string(policy.ReasonMaxActive):
		return http.StatusForbidden, ""
	case workflow.ReasonRequestOpen, workflow.ReasonPlaceContended:
		return http.StatusConflict, ""
	default:
		return http.StatusBadRequest, "code"
	}
}
