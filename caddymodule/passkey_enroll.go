package caddymodule

import (
	"errors"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"go.uber.org/zap"

	"github.com/caddy-jit/caddy-jit/internal/printable"
	"github.com/caddy-jit/caddy-jit/internal/words"
	"github.com/caddy-jit/caddy-jit/policy"
	"github.com/caddy-jit/caddy-jit/stepup"
)

// The passkeys page, /.jit/enroll without an enrollment link: the signed-in user's
// passkeys for this site, and a form to register another. A registration begins with
// a current TOTP code (POST /.jit/passkey, kind register) and ends here, with the
// browser's answer to that ceremony.

// passkeysPage is what the passkeys page shows.
type passkeysPage struct {
	User     string
	CSRF     string
	Site     string
	Usable   bool
	Passkeys []stepup.Passkey
	// Added names the passkey just registered.
	Added      string
	Name       string
	Error      string
	ErrorField string
	Register   registerView
}

// registerView is what the "register-passkey" template shows: the name typed, and
// whether the registration asks for a code (not when an enrollment link stands for it).
type registerView struct {
	User, Name        string
	NameInvalid, Code bool
}

func (h *Handler) showPasskeys(w http.ResponseWriter, r *http.Request, caller policy.Caller, status int, page passkeysPage) error {
	passkeys := h.app.authority.StepUp.Passkeys()
	site := h.passkeySite(r, formRegister)
	all, err := passkeys.List(r.Context(), caller.User)
	if err != nil {
		return h.enrollStorageError(w, r, caller, err)
	}
	page.User, page.Site, page.Usable = caller.User, site.Origin, passkeys.Usable(site)
	page.CSRF = h.app.authority.Keyring.CSRFToken(caller.User, h.audiences.of(r), now())
	page.Passkeys = all
	page.Register = registerView{User: caller.User, Name: page.Name, NameInvalid: page.ErrorField == "name", Code: true}
	return render(w, status, "passkeys.html", page)
}

// registerPasskey finishes the registration the script began, with the name the user
// gave the passkey.
func (h *Handler) registerPasskey(w http.ResponseWriter, r *http.Request, caller policy.Caller, form map[string]string) error {
	page := passkeysPage{Name: form["name"]}
	fail := func(status int, field, msg string) error {
		page.Error, page.ErrorField = msg, field
		return h.showPasskeys(w, r, caller, status, page)
	}
	if !h.checkPost(r, caller.User, form["csrf"]) {
		return fail(http.StatusForbidden, "", "This form has expired or did not come from this site. Register the passkey again.")
	}
	name := strings.TrimSpace(form["name"])
	if len(name) > stepup.MaxPasskeyName || !utf8.ValidString(name) || printable.String(name) != name {
		return fail(http.StatusBadRequest, "name", "Give the passkey a name of at most 64 characters, without control characters, e.g. \"work laptop\".")
	}
	proof := h.passkeyProof(r, form, formRegister)
	if proof == nil {
		return fail(http.StatusBadRequest, "", "The form carries no passkey: press the button to register one (it needs JavaScript).")
	}
	if token := form["token"]; token != "" {
		return h.registerPasskeyByLink(w, r, caller, token, name, proof)
	}
	pk, err := h.app.authority.StepUp.Passkeys().FinishRegistration(r.Context(), caller.User, proof.Site, proof.Ceremony, name, proof.Response)
	var (
		refused *stepup.PasskeyError
		locked  *stepup.LockedOutError
	)
	switch {
	case err == nil:
		page = passkeysPage{Added: pk.Name}
		return h.showPasskeys(w, r, caller, http.StatusOK, page)
	case errors.As(err, &locked):
		return fail(http.StatusTooManyRequests, "", "Too many failed attempts: you are locked out until "+words.Clock(locked.Until)+".")
	case errors.As(err, &refused):
		return fail(http.StatusBadRequest, "", registrationRefusal(refused.Err))
	}
	h.logger.Error("registering a passkey", zap.String("user", caller.User), zap.Error(err))
	return h.enrollStorageError(w, r, caller, err)
}

// passkeyFirst reports whether an enrollment link's page offers a passkey instead of
// an authenticator app: to a user with nothing enrolled, where passkeys work.
func (h *Handler) passkeyFirst(r *http.Request, caller policy.Caller, enrolled bool) bool {
	passkeys := h.app.authority.StepUp.Passkeys()
	site := h.passkeySite(r, formRegister)
	if enrolled || !passkeys.Usable(site) {
		return false
	}
	all, err := passkeys.List(r.Context(), caller.User)
	return err == nil && len(all) == 0
}

// registerPasskeyByLink finishes a first passkey proven by an enrollment link, which
// it uses up.
func (h *Handler) registerPasskeyByLink(w http.ResponseWriter, r *http.Request, caller policy.Caller, token, name string, proof *stepup.PasskeyProof) error {
	_, err := h.app.authority.StepUp.Passkeys().FinishLinkRegistration(r.Context(), h.linkRegistration(r, caller, token), proof.Ceremony, name, proof.Response)
	var (
		refused *stepup.PasskeyError
		locked  *stepup.LockedOutError
	)
	switch {
	case err == nil:
		http.SetCookie(w, enrollCookieFor(r, "", time.Time{}))
		return h.renderMessage(w, r, http.StatusOK, "Your passkey is registered",
			"From now on, use it to activate your roles: press “Use a passkey” on the activation page. This link is used up; your passkeys are listed on /.jit/enroll.", caller.User)
	case errors.As(err, &locked):
		return h.showConfirmForm(w, r, caller, token, "", http.StatusTooManyRequests, "Too many failed attempts: you are locked out until "+words.Clock(locked.Until)+". This link still works after that, until it expires.", "")
	case errors.As(err, &refused):
		return h.showConfirmForm(w, r, caller, token, "", http.StatusBadRequest, registrationRefusal(refused.Err), "")
	case errors.Is(err, stepup.ErrEnrollLinkHasEnrollment):
		return h.renderMessage(w, r, http.StatusConflict, "You have an authenticator already",
			"A link registers a passkey only for someone with nothing set up yet. Register passkeys on /.jit/enroll with a code of your authenticator app.", caller.User)
	case errors.Is(err, stepup.ErrEnrollLinkOtherBrowser):
		return h.renderMessage(w, r, http.StatusConflict, "This page can no longer register",
			"The link was opened since in another browser (or this browser lost its cookies). Open the link again. If you did not open it anywhere else, someone else may have your link and your password: tell the operators at once.", caller.User)
	}
	return h.enrollLinkRefused(w, r, caller, err)
}

// registrationRefusal says in words what to do about a refused registration.
func registrationRefusal(reason error) string {
	switch reason {
	case stepup.ErrPasskeyDuplicate:
		return "This authenticator is registered already: use it, or register another one."
	case stepup.ErrPasskeyLimit:
		return "You have as many passkeys as allowed. Ask an operator to remove one you no longer use."
	case stepup.ErrPasskeyChallengeExpired, stepup.ErrPasskeyCeremonyUnknown:
		return "The registration expired or was already used. Enter a new code and press the button again."
	case stepup.ErrPasskeyOtherBrowser:
		return "The registration was begun in another browser. Register the passkey again, in this one."
	case stepup.ErrPasskeyUserNotVerified:
		return "Your authenticator did not verify you (PIN or biometric). Register again, and unlock it when asked."
	}
	return "The browser's answer was refused. Enter a new code and register again, on this page."
}
