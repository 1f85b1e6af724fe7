package caddymodule

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"html/template"
	"image/png"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/caddy-jit/caddy-jit/audit"
	"github.com/caddy-jit/caddy-jit/internal/qrcode"
	"github.com/caddy-jit/caddy-jit/internal/words"
	"github.com/caddy-jit/caddy-jit/policy"
	"github.com/caddy-jit/caddy-jit/stepup"
)

// Self-service enrollment by link: `caddy jit enroll USER --link` (or POST
// /jit/enrollments/{user}?link=1) makes a single-use link to /.jit/enroll?token=T; the
// user opens it signed in as themselves, scans the QR code of the pending secret that
// this opening made and confirms it with a code (and one of their current
// authenticator, unless the link was made with --replace). Each opening binds its
// secret to the browser with a cookie (enroll_cookie.go) and shows it on that page
// only. See session/enroll_link.go.

const (
	// DefaultEnrollLinkTTL is how long an enrollment link works unless the jit app's
	// enroll_link_ttl or the request says otherwise.
	DefaultEnrollLinkTTL = 24 * time.Hour
	// maxEnrollLinkTTL bounds a link's life, 30d: it carries a secret, pending in
	// storage. CheckEnrollLinkTTL's message names it.
	maxEnrollLinkTTL = 30 * 24 * time.Hour
	// enrollPage is the page's path under pagePrefix.
	enrollPage = "enroll"
)

// EnrollLinkPath is the site-relative address of the enrollment link with token. The
// commands check an admin API's answer against EnrollLinkPath(""), the part before the
// token.
func EnrollLinkPath(token string) string {
	return pagePrefix + enrollPage + "?token=" + url.QueryEscape(token)
}

// enrollLinkTTL picks a link's lifetime: requested, or def when requested is 0.
func enrollLinkTTL(requested, def time.Duration) (time.Duration, error) {
	ttl := requested
	if ttl == 0 {
		ttl = def
	}
	if ttl == 0 {
		ttl = DefaultEnrollLinkTTL
	}
	if err := CheckEnrollLinkTTL(ttl); err != nil {
		return 0, err
	}
	return ttl, nil
}

// CheckEnrollLinkTTL accepts a positive lifetime of at most maxEnrollLinkTTL (30d),
// as the admin API does: `caddy jit enroll --link --ttl` checks with it before it asks.
func CheckEnrollLinkTTL(ttl time.Duration) error {
	if ttl <= 0 || ttl > maxEnrollLinkTTL {
		return fmt.Errorf("an enrollment link's ttl must be positive and at most 30d (%s), not %s",
			policy.FormatDuration(maxEnrollLinkTTL), policy.FormatDuration(ttl))
	}
	return nil
}

// enrollForm is what the enrollment page shows and what its POST carries. Secret and
// QR are set only on the page of an opening: a page shown again after a failed
// confirmation asks for the code of the key already scanned, and shows no key.
type enrollForm struct {
	User    string
	Issuer  string
	Token   string
	CSRF    string
	Expires time.Time
	// LinkPath opens the link again, for a new key.
	LinkPath string
	// Opening names the page of the opening whose key the form confirms.
	Opening string
	// QR is the QR code of the otpauth URI as a data: URL of a PNG image.
	QR template.URL
	// Secret is the pending secret in groups of four, for entering by hand.
	Secret string
	// Enrolled says that the user has an authenticator now, which this one replaces;
	// NeedsCurrent that the form asks for a code of it.
	Enrolled     bool
	NeedsCurrent bool
	// PasskeyFirst offers a passkey instead of an authenticator app: the user has
	// nothing enrolled, and passkeys work at this site.
	PasskeyFirst bool
	Register     registerView
	Error        string
	ErrorField   string
}

// serveEnroll serves GET, HEAD and POST /.jit/enroll for the signed-in caller.
func (h *Handler) serveEnroll(w http.ResponseWriter, r *http.Request, caller policy.Caller) error {
	token := r.URL.Query().Get("token")
	switch {
	case r.Method == http.MethodPost:
		form, err := readForm(w, r, "token", "opening", "code", "current_code", "csrf", "name", fieldPasskeyCeremony, fieldPasskeyResponse)
		if err != nil {
			return h.renderMessage(w, r, http.StatusBadRequest, "The form could not be read", err.Error()+". Open the page again.", caller.User)
		}
		if form["token"] == "" {
			form["token"] = token
		}
		if form["token"] == "" || form[fieldPasskeyCeremony] != "" {
			return h.registerPasskey(w, r, caller, form)
		}
		return h.confirmEnroll(w, r, caller, form)
	case token == "":
		return h.showPasskeys(w, r, caller, http.StatusOK, passkeysPage{})
	}
	switch r.Method {
	case http.MethodHead:
		// A HEAD changes nothing: it makes no opening.
		return h.showConfirmForm(w, r, caller, token, "", http.StatusOK, "", "")
	}
	return h.openEnroll(w, r, caller, token)
}

// openEnroll shows a new pending secret, which this opening binds to this browser.
func (h *Handler) openEnroll(w http.ResponseWriter, r *http.Request, caller policy.Caller, token string) error {
	ctx := r.Context()
	pending, err := h.app.authority.StepUp.OpenEnrollmentLink(ctx, token, caller.User, clientIP(r))
	if err != nil {
		return h.enrollLinkRefused(w, r, caller, err)
	}
	qr, err := qrDataURL(pending.URI)
	if err != nil {
		return caddyhttp.Error(http.StatusInternalServerError, err)
	}
	http.SetCookie(w, enrollCookieFor(r, pending.Browser, pending.Expires))
	return render(w, http.StatusOK, "enroll.html", enrollForm{
		User:         caller.User,
		Issuer:       h.app.Issuer,
		Token:        token,
		CSRF:         h.app.authority.Keyring.CSRFToken(caller.User, h.audiences.of(r), now()),
		Expires:      pending.Expires,
		LinkPath:     EnrollLinkPath(token),
		Opening:      pending.Opening,
		QR:           qr,
		Secret:       groupsOfFour(pending.Secret),
		Enrolled:     pending.Enrolled,
		NeedsCurrent: pending.NeedsCurrentCode,
		PasskeyFirst: h.passkeyFirst(r, caller, pending.Enrolled),
		Register:     registerView{User: caller.User},
	})
}

// showConfirmForm renders the link's form without a key, with an error when a
// confirmation failed.
func (h *Handler) showConfirmForm(w http.ResponseWriter, r *http.Request, caller policy.Caller, token, opening string, status int, errMsg, errField string) error {
	info, err := h.app.authority.StepUp.InspectEnrollmentLink(r.Context(), token, caller.User, clientIP(r))
	if err != nil {
		return h.enrollLinkRefused(w, r, caller, err)
	}
	return render(w, status, "enroll.html", enrollForm{
		User:         caller.User,
		Issuer:       h.app.Issuer,
		Token:        token,
		CSRF:         h.app.authority.Keyring.CSRFToken(caller.User, h.audiences.of(r), now()),
		Expires:      info.Expires,
		LinkPath:     EnrollLinkPath(token),
		Opening:      opening,
		Enrolled:     info.Enrolled,
		NeedsCurrent: info.NeedsCurrentCode,
		PasskeyFirst: h.passkeyFirst(r, caller, info.Enrolled),
		Register:     registerView{User: caller.User},
		Error:        errMsg,
		ErrorField:   errField,
	})
}

// confirmEnroll checks the codes the user typed against the secret this browser's
// opening showed (and their current authenticator, where the link needs it).
func (h *Handler) confirmEnroll(w http.ResponseWriter, r *http.Request, caller policy.Caller, form map[string]string) error {
	token, opening := form["token"], form["opening"]
	if !h.checkPost(r, caller.User, form["csrf"]) {
		h.app.authority.Audit.Event(audit.EventEnrollLinkFailed, zap.String("user", caller.User), zap.String("reason", "csrf"),
			zap.String("client_ip", clientIP(r)))
		return h.showConfirmForm(w, r, caller, token, opening, http.StatusForbidden,
			"This form has expired or did not come from this site. Enter the current code and confirm again.", "")
	}
	err := h.app.authority.StepUp.ConfirmEnrollment(r.Context(), stepup.EnrollConfirmation{
		Token: token, User: caller.User, Browser: enrollCookie(r), Opening: opening,
		Code: strings.TrimSpace(form["code"]), CurrentCode: strings.TrimSpace(form["current_code"]), ClientIP: clientIP(r),
	})
	var locked *stepup.LockedOutError
	switch {
	case err == nil:
		http.SetCookie(w, enrollCookieFor(r, "", time.Time{}))
		return h.renderMessage(w, r, http.StatusOK, "Your authenticator is set up",
			"From now on, use the codes of this authenticator to activate your roles. The code you just entered has been used; the next one activates.", caller.User)
	case errors.As(err, &locked):
		return h.showConfirmForm(w, r, caller, token, opening, http.StatusTooManyRequests,
			"Too many wrong codes: you are locked out until "+words.Clock(locked.Until)+". This link still works after that, until it expires.", "code")
	case errors.Is(err, stepup.ErrCodeInvalid):
		return h.showConfirmForm(w, r, caller, token, opening, http.StatusBadRequest,
			"The code is wrong: enter the code your app shows now for the key you scanned from this link.", "code")
	case errors.Is(err, stepup.ErrCodeReplayed):
		return h.showConfirmForm(w, r, caller, token, opening, http.StatusBadRequest,
			"This code was already used: wait for the next one.", "code")
	case errors.Is(err, stepup.ErrCurrentCodeRequired):
		return h.showConfirmForm(w, r, caller, token, opening, http.StatusBadRequest,
			"Enter a code of your current authenticator as well: this link replaces it only with one. Lost it? Ask an operator for a link that replaces it.", "current_code")
	case errors.Is(err, stepup.ErrCurrentCodeInvalid):
		return h.showConfirmForm(w, r, caller, token, opening, http.StatusBadRequest,
			"The code of your current authenticator is wrong: enter the code it shows now.", "current_code")
	case errors.Is(err, stepup.ErrCurrentCodeReplayed):
		return h.showConfirmForm(w, r, caller, token, opening, http.StatusBadRequest,
			"The code of your current authenticator was already used: wait for its next one.", "current_code")
	case errors.Is(err, stepup.ErrEnrollLinkOtherBrowser):
		return h.renderMessage(w, r, http.StatusConflict, "This page can no longer confirm",
			"The key on this page is no longer the link's: the link was opened since in another browser (or this browser lost its cookies), which made a new key. Open the link again for a new one. If you did not open it anywhere else, someone else may have your link and your password: tell the operators at once.", caller.User)
	case errors.Is(err, stepup.ErrEnrollLinkReopened):
		return h.renderMessage(w, r, http.StatusConflict, "This page is out of date",
			"The link was opened again in this browser since this page was shown, which made a new key. Use the latest page, or open the link again, and scan the key it shows.", caller.User)
	}
	return h.enrollLinkRefused(w, r, caller, err)
}

// enrollLinkRefused explains a link that cannot be used, in plain words, and has the
// browser forget its binding to it.
func (h *Handler) enrollLinkRefused(w http.ResponseWriter, r *http.Request, caller policy.Caller, err error) error {
	var linkErr *stepup.EnrollLinkError
	errors.As(err, &linkErr)
	if (linkErr != nil || errors.Is(err, stepup.ErrEnrollLinkUnknown)) && enrollCookie(r) != "" {
		http.SetCookie(w, enrollCookieFor(r, "", time.Time{}))
	}
	switch {
	case errors.Is(err, stepup.ErrEnrollLinkUnknown):
		return h.renderMessage(w, r, http.StatusNotFound, "Unknown enrollment link",
			"This enrollment link does not exist: check that you opened the whole link, or ask an operator for a new one.", caller.User)
	case errors.Is(err, stepup.ErrEnrollLinkNotYours):
		return h.renderMessage(w, r, http.StatusForbidden, "Not your enrollment link",
			"This enrollment link was made for another user, and you are signed in as "+caller.User+". Sign in as the user it was made for, or ask an operator for a link of your own.", caller.User)
	case errors.Is(err, stepup.ErrEnrollLinkUsed) && linkErr != nil:
		return h.renderMessage(w, r, http.StatusGone, "Enrollment link already used",
			"This enrollment link was already used, at "+words.Time(linkErr.At)+", and works only once. If that was not you, tell the operators at once; for another authenticator, ask them for a new link.", caller.User)
	case errors.Is(err, stepup.ErrEnrollLinkCancelled) && linkErr != nil:
		when := ""
		if !linkErr.At.IsZero() {
			when = ", at " + words.Time(linkErr.At)
		}
		return h.renderMessage(w, r, http.StatusGone, "Enrollment link cancelled",
			"This enrollment link was cancelled"+when+": a newer link was made for you, or you were enrolled since. Use the newest link you were sent, or ask an operator for a new one.", caller.User)
	case errors.Is(err, stepup.ErrEnrollLinkExpired) && linkErr != nil:
		return h.renderMessage(w, r, http.StatusGone, "Enrollment link expired",
			"This enrollment link expired at "+words.Time(linkErr.At)+". Ask an operator for a new one.", caller.User)
	}
	return h.enrollStorageError(w, r, caller, err)
}

func (h *Handler) enrollStorageError(w http.ResponseWriter, r *http.Request, caller policy.Caller, err error) error {
	h.logger.Error("enrollment link: storage error", zap.String("user", caller.User), zap.Error(err))
	w.Header().Set("Retry-After", "5")
	return h.renderMessage(w, r, http.StatusServiceUnavailable, "Enrollment unavailable",
		"caddy-jit cannot reach its storage, so nothing was changed. Try again in a moment; if it persists, tell the operators.", caller.User)
}

// qrDataURL is the QR code of content as a PNG image in a data: URL, for an <img>
// that the pages' CSP allows (img-src data:).
func qrDataURL(content string) (template.URL, error) {
	img, err := qrcode.Image(content)
	if err != nil {
		return "", err
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		return "", fmt.Errorf("encoding a QR code image: %v", err)
	}
	// The URL is ours through and through (a fixed prefix and base64), so it is safe
	// to mark it as such for html/template.
	return template.URL("data:image/png;base64," + base64.StdEncoding.EncodeToString(buf.Bytes())), nil
}

// groupsOfFour writes a base32 secret as "ABCD EFGH …", easier to copy by hand;
// authenticator apps ignore the spaces.
func groupsOfFour(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i += 4 {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(s[i:min(i+4, len(s))])
	}
	return b.String()
}
