package caddymodule

import (
	"embed"
	"errors"
	"html/template"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/caddy-jit/caddy-jit/internal/words"
	"github.com/caddy-jit/caddy-jit/policy"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed assets/style.css
var styleCSS []byte

//go:embed assets/app.js
var appJS []byte

//go:embed assets/passkey.js
var passkeyJS []byte

var pageTemplates = template.Must(template.New("").Funcs(template.FuncMap{
	"duration": policy.FormatDuration,
	"clock":    words.Time,
	"ago": func(t time.Time) string {
		d := now().Sub(t)
		if d < time.Minute {
			return "less than a minute ago"
		}
		return policy.FormatDuration(d.Truncate(time.Minute)) + " ago"
	},
	"left": func(t time.Time) string {
		d := t.Sub(now())
		if d < time.Minute {
			return "less than a minute left"
		}
		return policy.FormatDuration(d.Truncate(time.Minute)) + " left"
	},
}).ParseFS(templateFS, "templates/*.html"))

// contentSecurityPolicy allows our own stylesheet and script and nothing else: no
// inline script or style, no frames around our pages, forms posting only to this origin,
// and the script's requests (passkey.js asks POST /.jit/passkey for a ceremony) only to it.
const contentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

// maxFormSize bounds an activation or deactivation form.
const maxFormSize = 16 << 10

// crossOrigin refuses cross-site state-changing requests using Fetch metadata; the
// CSRF token bound to the user is the second, independent check.
var crossOrigin = http.NewCrossOriginProtection()

func setPageHeaders(h http.Header) {
	h.Set("Content-Security-Policy", contentSecurityPolicy)
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-store")
}

// servePage serves everything under /.jit/. None of it ever reaches the upstream.
func (h *Handler) servePage(w http.ResponseWriter, r *http.Request) (err error) {
	setPageHeaders(w.Header())
	sub := strings.TrimPrefix(r.URL.Path, pagePrefix)
	switch sub {
	case "jwks.json":
		jwks, err := h.app.publishedKeys()
		if err != nil {
			return err
		}
		return servePublic(w, r, "application/jwk-set+json", 300, jwks)
	case "style.css":
		return servePublic(w, r, "text/css; charset=utf-8", 3600, styleCSS)
	case "app.js":
		return servePublic(w, r, "text/javascript; charset=utf-8", 3600, appJS)
	case "passkey.js":
		return servePublic(w, r, "text/javascript; charset=utf-8", 3600, passkeyJS)
	}

	repl := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	user := h.app.identity(repl)
	if user == "" {
		return h.noIdentity(w, r)
	}
	caller := h.app.caller(repl, user)
	// Refused POSTs are limited per user (refusals.go): a limited user is answered 429
	// here, before any form is read or storage touched. Not counted: cross-site POSTs,
	// which checkPost refuses anyway (browsers send basic_auth credentials along, so a
	// page elsewhere could otherwise spend the user's allowance), and deactivation,
	// which only lowers privilege.
	if r.Method == http.MethodPost && sub != "deactivate" && crossOrigin.Check(r) == nil {
		key := refusalKey(caller, user)
		if limited, err := h.limitedPost(w, r, key); limited {
			return err
		}
		h.app.refusals.reserve(key, now())
		rec := newRefusalRecorder(w)
		w = rec
		defer func() { h.countRefusal(key, rec, err) }()
	}
	switch sub {
	case "":
		if !allowMethods(w, r, http.MethodGet, http.MethodHead) {
			return nil
		}
		return h.serveStatusPage(w, r, caller)
	case "activate":
		if !allowMethods(w, r, http.MethodGet, http.MethodHead, http.MethodPost) {
			return nil
		}
		if r.Method == http.MethodPost {
			return h.activate(w, r, caller)
		}
		return h.showActivation(w, r, caller)
	case "deactivate":
		if !allowMethods(w, r, http.MethodPost) {
			return nil
		}
		return h.deactivate(w, r, caller)
	case "withdraw":
		if !allowMethods(w, r, http.MethodPost) {
			return nil
		}
		return h.withdraw(w, r, caller)
	case "extend":
		if !allowMethods(w, r, http.MethodPost) {
			return nil
		}
		return h.extend(w, r, caller)
	case "approvals":
		if !allowMethods(w, r, http.MethodGet, http.MethodHead, http.MethodPost) {
			return nil
		}
		if r.Method == http.MethodPost {
			return h.decide(w, r, caller)
		}
		return h.showApprovals(w, r, caller, "", "", http.StatusOK)
	case reconfirmPage:
		if !allowMethods(w, r, http.MethodGet, http.MethodHead, http.MethodPost) {
			return nil
		}
		return h.serveReconfirm(w, r, caller)
	case passkeyPage, enrollPage + "/" + passkeyPage:
		// The second path is the same, under the enrollment cookie's path: a first
		// passkey by link is proven by that cookie.
		if !allowMethods(w, r, http.MethodPost) {
			return nil
		}
		return h.servePasskeyOptions(w, r, caller)
	case enrollPage:
		if !allowMethods(w, r, http.MethodGet, http.MethodHead, http.MethodPost) {
			return nil
		}
		return h.serveEnroll(w, r, caller)
	}
	if id, ok := strings.CutPrefix(sub, "approvals/"); ok {
		if !allowMethods(w, r, http.MethodGet, http.MethodHead) {
			return nil
		}
		return h.showApprovalsOf(w, r, caller, id, "", "", http.StatusOK)
	}
	if id, ok := strings.CutPrefix(sub, "requests/"); ok {
		if !allowMethods(w, r, http.MethodGet, http.MethodHead) {
			return nil
		}
		return h.showRequest(w, r, caller, id, http.StatusOK, "")
	}
	return h.renderMessage(w, r, http.StatusNotFound, "Not found", "There is no caddy-jit page at "+r.URL.Path+".", user)
}

// servePublic answers a GET or HEAD for a file that is the same for everyone (the
// signing keys, the style sheet, the script), which caches may keep for maxAge
// seconds.
func servePublic(w http.ResponseWriter, r *http.Request, contentType string, maxAge int, body []byte) error {
	if !allowMethods(w, r, http.MethodGet, http.MethodHead) {
		return nil
	}
	w.Header().Set("Content-Type", contentType)
	w.Header().Set("Cache-Control", "public, max-age="+strconv.Itoa(maxAge))
	_, err := w.Write(body)
	return err
}

func allowMethods(w http.ResponseWriter, r *http.Request, methods ...string) bool {
	for _, m := range methods {
		if r.Method == m {
			return true
		}
	}
	w.Header().Set("Allow", strings.Join(methods, ", "))
	http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
	return false
}

// readForm parses a bounded url-encoded POST body, refusing repeated fields: a field
// given twice is a confused or hostile client, never a browser submitting our form.
func readForm(w http.ResponseWriter, r *http.Request, fields ...string) (map[string]string, error) {
	ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if ct != "application/x-www-form-urlencoded" {
		return nil, errors.New("the form must be sent as application/x-www-form-urlencoded")
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxFormSize)
	if err := r.ParseForm(); err != nil {
		return nil, errors.New("the form could not be read: it is malformed or larger than 16 KiB")
	}
	out := make(map[string]string, len(fields))
	for _, name := range fields {
		values := r.PostForm[name]
		if len(values) > 1 {
			return nil, errors.New("the form field " + name + " was sent more than once")
		}
		if len(values) == 1 {
			out[name] = values[0]
		}
	}
	return out, nil
}

// postedForm reads the fields of a form posted from one of our pages, then checks
// that it came from there (checkPost). Where either fails it answers with a page
// that says so and sends the user back to page, and the form is nil.
func (h *Handler) postedForm(w http.ResponseWriter, r *http.Request, caller policy.Caller, page string, fields ...string) (map[string]string, error) {
	form, err := readForm(w, r, append(fields, "csrf")...)
	if err != nil {
		return nil, h.renderMessage(w, r, http.StatusBadRequest, "The form could not be read", err.Error()+".", caller.User)
	}
	if !h.checkPost(r, caller.User, form["csrf"]) {
		return nil, h.renderMessage(w, r, http.StatusForbidden, "Form expired", "This form has expired or did not come from this site. Open "+page+" and try again.", caller.User)
	}
	return form, nil
}

// checkPost applies both CSRF defences to a state-changing request.
func (h *Handler) checkPost(r *http.Request, user, token string) bool {
	if err := crossOrigin.Check(r); err != nil {
		return false
	}
	return h.app.authority.Keyring.CheckCSRF(token, user, h.audiences.of(r), now())
}

func sessionCookieFor(r *http.Request, token string, expires time.Time) *http.Cookie {
	c := &http.Cookie{
		Name:    CookieName,
		Value:   token,
		Path:    "/",
		Expires: expires,
		// Rounded up: the browser keeps the cookie to the session's last second (the
		// token itself expires on time either way).
		MaxAge:   max(1, int((time.Until(expires)+time.Second-1)/time.Second)),
		HttpOnly: true,
		SameSite: http.SameSiteLaxMode,
	}
	if r.TLS != nil {
		c.Name, c.Secure = SecureCookieName, true
	}
	if token == "" {
		c.MaxAge, c.Expires = -1, time.Unix(0, 0)
	}
	return c
}

type messagePage struct {
	Title, Message, User string
}

func (h *Handler) renderMessage(w http.ResponseWriter, _ *http.Request, status int, title, msg, user string) error {
	setPageHeaders(w.Header())
	return render(w, status, "message.html", messagePage{Title: title, Message: msg, User: user})
}

func render(w http.ResponseWriter, status int, name string, data any) error {
	var buf strings.Builder
	if err := pageTemplates.ExecuteTemplate(&buf, name, data); err != nil {
		return caddyhttp.Error(http.StatusInternalServerError, err)
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, err := w.Write([]byte(buf.String()))
	return err
}

// sentence makes a refusal's message, written to be embedded ("the code is wrong: …"),
// a sentence of its own for a page: a capital first letter and a full stop.
func sentence(msg string) string {
	if msg == "" {
		return msg
	}
	r, size := utf8.DecodeRuneInString(msg)
	msg = string(unicode.ToUpper(r)) + msg[size:]
	if !strings.HasSuffix(msg, ".") {
		msg += "."
	}
	return msg
}
