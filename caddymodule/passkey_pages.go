package caddymodule

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"

	"go.uber.org/zap"

	"github.com/caddy-jit/caddy-jit/audit"
	"github.com/caddy-jit/caddy-jit/internal/printable"
	"github.com/caddy-jit/caddy-jit/internal/words"
	"github.com/caddy-jit/caddy-jit/policy"
	"github.com/caddy-jit/caddy-jit/stepup"
)

// Passkeys on the pages. Every form that asks for a proof of presence (activation,
// approval, extension, re-confirmation) shows the "stepup" template: the code field,
// and a passkey button that assets/passkey.js brings to life. The script asks
// POST /.jit/passkey for the options of a ceremony bound to the user, this site and the
// form (its passkeyForm), has the browser's authenticator answer them, and submits
// the form with the answer in two hidden fields. The form's own handler finishes the
// ceremony: an answer made for another form, user or site is refused there.

const (
	// passkeyPage answers the script's requests for ceremony options.
	passkeyPage = "passkey"
	// The hidden fields that carry a finished ceremony.
	fieldPasskeyCeremony = "passkey_ceremony"
	fieldPasskeyResponse = "passkey_response"
	// formRegister is the form of a passkey registration.
	formRegister = "register"
	// maxPasskeyForm bounds the form a ceremony is asked for.
	maxPasskeyForm = 200
)

// passkeyForm names a form for the ceremonies made for it, e.g. "activate:db-admin".
func passkeyForm(kind, subject string) string { return kind + ":" + subject }

// site is where a ceremony of the form runs: this site's origin (the audience of its
// sessions), the configured RP ID or else the origin's host, and this browser's
// passkey binding (passkey_cookie.go).
func (h *Handler) passkeySite(r *http.Request, form string) stepup.Site {
	return stepup.Site{Origin: h.audiences.of(r), Form: form, Browser: passkeyCookie(r)}
}

// stepUpView is what the "stepup" template shows of a form's proof of presence.
type stepUpView struct {
	// Form is the passkeyForm the ceremony is for; User whose presence is proved.
	Form string
	User string
	// Code and Passkey say which proofs the step-up accepts here; Registered that
	// the user has a passkey for this site.
	Code, Passkey, Registered bool
	// ErrorField is the invalid field, if it is the code.
	ErrorField string
	// CodeHint replaces the code field's hint; CodeID is the field's id ("code").
	CodeHint string
	CodeID   string
}

// stepUpFor is the step-up view of a form for user, under the role's step_up.
func (h *Handler) stepUpFor(ctx context.Context, r *http.Request, user string, step policy.StepUp, form string) stepUpView {
	return h.stepUps(ctx, r, user)(step, form)
}

// stepUps makes the step-up views of a page's forms for user: whether the user has a
// passkey at this site is read once, when a form first needs it.
func (h *Handler) stepUps(ctx context.Context, r *http.Request, user string) func(step policy.StepUp, form string) stepUpView {
	passkeys := h.app.authority.StepUp.Passkeys()
	site := h.passkeySite(r, "")
	usable := passkeys.Usable(site)
	var registered *bool
	return func(step policy.StepUp, form string) stepUpView {
		v := stepUpView{Form: form, User: user, Code: step.AcceptsCode(), CodeID: "code"}
		if !step.AcceptsPasskey() || !usable {
			return v
		}
		if registered == nil {
			has, err := passkeys.Registered(ctx, user, site)
			if err != nil {
				h.logger.Warn("reading the user's passkeys", zap.String("user", user), zap.Error(err))
			}
			registered = &has
		}
		v.Passkey, v.Registered = true, *registered
		return v
	}
}

// linkableField is the field an error summary may link to: not the code field of a
// form that has none (a passkey-only role), where the error names no field.
func (v stepUpView) linkableField(field string) string {
	if field == "code" && !v.Code {
		return ""
	}
	return field
}

// passkeyProof is the finished ceremony a form carries, or nil when it carries none
// (then its code is the proof).
func (h *Handler) passkeyProof(r *http.Request, form map[string]string, passkeyForm string) *stepup.PasskeyProof {
	ceremony := form[fieldPasskeyCeremony]
	if ceremony == "" && form[fieldPasskeyResponse] == "" {
		return nil
	}
	return &stepup.PasskeyProof{Site: h.passkeySite(r, passkeyForm), Ceremony: ceremony, Response: []byte(form[fieldPasskeyResponse])}
}

// passkeyOptions is the answer to the script: a ceremony's options, or why not.
type passkeyOptions struct {
	Ceremony string          `json:"ceremony,omitempty"`
	Options  json.RawMessage `json:"options,omitempty"`
	Error    string          `json:"error,omitempty"`
}

// servePasskeyOptions begins a ceremony for the signed-in user at this site: a
// step-up (kind "login") for the form named, or a registration (kind "register"),
// which needs a current TOTP code. Every ceremony stored counts against the user's
// refusal allowance, so that one client cannot fill the store with them.
func (h *Handler) servePasskeyOptions(w http.ResponseWriter, r *http.Request, caller policy.Caller) error {
	w.Header().Set("Content-Type", "application/json")
	answer := func(status int, o passkeyOptions) error {
		w.WriteHeader(status)
		return json.NewEncoder(w).Encode(o)
	}
	form, err := readForm(w, r, "csrf", "kind", "form", "code", "token")
	if err != nil {
		return answer(http.StatusBadRequest, passkeyOptions{Error: err.Error()})
	}
	if !h.checkPost(r, caller.User, form["csrf"]) {
		return answer(http.StatusForbidden, passkeyOptions{Error: "this page has expired or did not come from this site: reload it and try again"})
	}
	formName := form["form"]
	if formName == "" || len(formName) > maxPasskeyForm || printable.String(formName) != formName {
		return answer(http.StatusBadRequest, passkeyOptions{Error: "the form field must name the form the passkey is for"})
	}
	passkeys := h.app.authority.StepUp.Passkeys()
	site := h.passkeySite(r, formName)
	if !passkeys.Usable(site) {
		return answer(http.StatusBadRequest, passkeyOptions{Error: "passkeys cannot be used at " + site.Origin + ": the jit option rp_id does not cover this site's host"})
	}
	var (
		options  []byte
		ceremony string
		cookie   *http.Cookie
	)
	// The ceremony is bound to this browser: begun with its binding, finished only
	// with it.
	site.Browser, cookie = passkeyBinding(r)
	switch form["kind"] {
	case "login":
		options, ceremony, err = passkeys.BeginLogin(r.Context(), caller.User, site)
	case "register":
		switch {
		case formName != formRegister:
			return answer(http.StatusBadRequest, passkeyOptions{Error: "a registration is for the form " + formRegister})
		case form["token"] != "":
			// A first passkey, proven by the enrollment link this browser opened.
			lr := h.linkRegistration(r, caller, form["token"])
			lr.Site = site
			options, ceremony, err = passkeys.BeginLinkRegistration(r.Context(), lr)
		default:
			if err = h.app.authority.StepUp.Check(r.Context(), caller.User, strings.TrimSpace(form["code"])); err == nil {
				options, ceremony, err = passkeys.BeginRegistration(r.Context(), caller.User, site)
			} else {
				h.registrationCodeRefused(r, caller.User, err)
			}
		}
	default:
		return answer(http.StatusBadRequest, passkeyOptions{Error: "the kind field must be login or register"})
	}
	if err != nil {
		status, msg := passkeyBeginRefused(err, caller.User)
		if status >= 500 {
			h.logger.Error("beginning a passkey ceremony", zap.String("user", caller.User), zap.Error(err))
			w.Header().Set("Retry-After", "5")
		}
		return answer(status, passkeyOptions{Error: msg})
	}
	if !spendRefusal(w) {
		h.app.refusals.refused(refusalKey(caller, caller.User), now())
	}
	http.SetCookie(w, cookie)
	return answer(http.StatusOK, passkeyOptions{Ceremony: ceremony, Options: options})
}

// registrationCodeRefused audits a registration refused for its code, as a
// passkey_failed of the registration; a lockout is audited where it begins.
func (h *Handler) registrationCodeRefused(r *http.Request, user string, err error) {
	for _, reason := range []error{stepup.ErrCodeInvalid, stepup.ErrCodeReplayed, stepup.ErrNotEnrolled} {
		if errors.Is(err, reason) {
			h.app.authority.Audit.Event(audit.EventPasskeyFailed, zap.String("user", user), zap.String("ceremony", stepup.CeremonyRegistration),
				zap.String("reason", reason.Error()), zap.String("client_ip", clientIP(r)))
			return
		}
	}
}

// linkRegistration is a passkey registration by the enrollment link token, from this
// browser.
func (h *Handler) linkRegistration(r *http.Request, caller policy.Caller, token string) stepup.LinkRegistration {
	return stepup.LinkRegistration{Token: token, User: caller.User, Browser: enrollCookie(r), Site: h.passkeySite(r, formRegister), ClientIP: clientIP(r)}
}

// passkeyBeginRefused says why a ceremony could not begin.
func passkeyBeginRefused(err error, user string) (int, string) {
	var locked *stepup.LockedOutError
	switch {
	case errors.Is(err, stepup.ErrEnrollLinkHasEnrollment):
		return http.StatusConflict, "you have an authenticator or a passkey already: register passkeys on /.jit/enroll with your code"
	case errors.Is(err, stepup.ErrEnrollLinkOtherBrowser):
		return http.StatusConflict, "this link was opened since in another browser (or this one lost its cookies): open the link again"
	case errors.Is(err, stepup.ErrEnrollLinkUnknown), errors.Is(err, stepup.ErrEnrollLinkNotYours),
		errors.Is(err, stepup.ErrEnrollLinkUsed), errors.Is(err, stepup.ErrEnrollLinkExpired), errors.Is(err, stepup.ErrEnrollLinkCancelled):
		return http.StatusGone, "this enrollment link cannot be used any more (" + err.Error() + "): ask an operator for a new one"
	case errors.As(err, &locked):
		return http.StatusTooManyRequests, "too many failed attempts: you are locked out until " + words.Clock(locked.Until)
	case errors.Is(err, stepup.ErrPasskeyNotRegistered):
		return http.StatusConflict, "you have no passkey for this site: register one on /.jit/enroll"
	case errors.Is(err, stepup.ErrPasskeyLimit):
		return http.StatusConflict, "you have as many passkeys as allowed: ask an operator to remove one (caddy jit credentials remove " + user + " ID)"
	case errors.Is(err, stepup.ErrCodeInvalid):
		return http.StatusBadRequest, "the code is wrong: enter the current code from your authenticator app"
	case errors.Is(err, stepup.ErrCodeReplayed):
		return http.StatusBadRequest, "this code was already used: wait for the next one"
	case errors.Is(err, stepup.ErrNotEnrolled):
		return http.StatusConflict, "registering a passkey needs a code from your authenticator app, and you have none: ask an operator for an enrollment link"
	}
	return http.StatusServiceUnavailable, "caddy-jit cannot reach its storage: try again in a moment"
}
