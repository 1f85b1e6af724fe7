package caddymodule

import (
	"embed"
	"encoding/json"
	"errors"
	"html/template"
	"mime"
	"net/http"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/caddy-jit/caddy-jit/policy"
	"github.com/caddy-jit/caddy-jit/session"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed assets/style.css
var styleCSS []byte

//go:embed assets/app.js
var appJS []byte

var pageTemplates = template.Must(template.New("").Funcs(template.FuncMap{
	"duration": policy.FormatDuration,
	"clock":    func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04 UTC") },
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
// inline script or style, no frames around our pages, forms posting only to this origin.
const contentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

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
func (h *Handler) servePage(w http.ResponseWriter, r *http.Request) error {
	setPageHeaders(w.Header())
	sub := strings.TrimPrefix(r.URL.Path, pagePrefix)
	switch sub {
	case "jwks.json":
		if !allowMethods(w, r, http.MethodGet, http.MethodHead) {
			return nil
		}
		w.Header().Set("Content-Type", "application/jwk-set+json")
		w.Header().Set("Cache-Control", "public, max-age=300")
		_, err := w.Write(h.app.authority.Keyring.JWKS())
		return err
	case "style.css":
		if !allowMethods(w, r, http.MethodGet, http.MethodHead) {
			return nil
		}
		w.Header().Set("Content-Type", "text/css; charset=utf-8")
		w.Header().Set("Cache-Control", "public, max-age=3600")
		_, err := w.Write(styleCSS)
		return err
	case "app.js":
		if !allowMethods(w, r, http.MethodGet, http.MethodHead) {
			return nil
		}
		w.Header().Set("Content-Type", "text/javascript; charset=utf-8")
		w.Header().Set("Cache-Control", "public, max-age=3600")
		_, err := w.Write(appJS)
		return err
	}

	repl := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	user := repl.ReplaceAll(h.app.Identity, "")
	if user == "" || len(user) > maxUserLength {
		return h.noIdentity(w, r)
	}
	caller := h.app.caller(repl, user)
	switch sub {
	case "":
		if !allowMethods(w, r, http.MethodGet, http.MethodHead) {
			return nil
		}
		return h.serveStatus(w, r, caller, "")
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
	case enrollPage:
		if !allowMethods(w, r, http.MethodGet, http.MethodHead, http.MethodPost) {
			return nil
		}
		return h.serveEnroll(w, r, caller)
	}
	if id, ok := strings.CutPrefix(sub, "requests/"); ok {
		if !allowMethods(w, r, http.MethodGet, http.MethodHead) {
			return nil
		}
		return h.showRequest(w, r, caller, id)
	}
	return h.renderMessage(w, r, http.StatusNotFound, "Not found", "There is no caddy-jit page at "+r.URL.Path+".", user)
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

// checkPost applies both CSRF defences to a state-changing request.
func (h *Handler) checkPost(r *http.Request, user, token string) bool {
	if err := crossOrigin.Check(r); err != nil {
		return false
	}
	return h.app.authority.Keyring.CheckCSRF(token, user, h.audiences.of(r), now())
}

func (h *Handler) activate(w http.ResponseWriter, r *http.Request, caller policy.Caller) error {
	form, err := readForm(w, r, "role", "duration", "justification", "ticket", "code", "return", "csrf", "start", "break_glass")
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
		Justification: truncateRunes(form["justification"], policy.MaxJustificationLength+1),
		Ticket:        truncateRunes(form["ticket"], policy.MaxTicketLength+1),
		Return:        safeReturn(form["return"]),
		Duration:      role.DefaultDuration,
		Start:         truncateRunes(strings.TrimSpace(form["start"]), 40),
		BreakGlass:    form["break_glass"] != "",
	}
	fail := func(status int, field, msg string) error {
		f.Error, f.ErrorField = msg, field
		f.EligibleUntil = role.Eligible(caller, now()).EligibleUntil
		return h.renderActivation(w, status, f, r)
	}
	if !h.checkPost(r, caller.User, form["csrf"]) {
		h.app.authority.Audit.Event(session.EventActivationFailed, zap.String("user", caller.User), zap.String("role", role.Name),
			zap.String("reason", "csrf"), zap.String("client_ip", clientIP(r)))
		return fail(http.StatusForbidden, "", "This form has expired or did not come from this site. Check the details and submit it again.")
	}
	if raw := strings.TrimSpace(form["duration"]); raw != "" {
		d, err := time.ParseDuration(raw)
		if err != nil {
			return fail(http.StatusBadRequest, "duration", "The duration "+truncateRunes(raw, 20)+" is not a duration such as 30m or 1h.")
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
	res, err := h.app.authority.Submit(r.Context(), session.Activation{
		Caller:        caller,
		Role:          role,
		Audience:      h.audiences.of(r),
		Duration:      f.Duration,
		Justification: strings.TrimSpace(form["justification"]),
		Ticket:        strings.TrimSpace(form["ticket"]),
		Code:          strings.TrimSpace(form["code"]),
		ClientIP:      clientIP(r),
		UserAgent:     truncateRunes(r.UserAgent(), 256),
		Start:         start,
		BreakGlass:    f.BreakGlass,
		Return:        f.Return,
	})
	var refused *session.ActivationError
	if errors.As(err, &refused) {
		status, field := activationFailure(refused.Reason)
		return fail(status, field, sentence(refused.Message))
	}
	if err != nil {
		h.logger.Error("activation failed: storage error", zap.String("user", caller.User), zap.String("role", role.Name), zap.Error(err))
		h.app.authority.Audit.Event(session.EventActivationFailed, zap.String("user", caller.User), zap.String("role", role.Name),
			zap.String("reason", "storage_unavailable"), zap.String("client_ip", clientIP(r)))
		w.Header().Set("Retry-After", "5")
		return h.renderMessage(w, r, http.StatusServiceUnavailable, "Activation unavailable",
			"caddy-jit cannot reach its storage, so no session was started. Try again in a moment; if it persists, tell the operators.", caller.User)
	}
	if res.Request != nil {
		http.Redirect(w, r, requestURL(res.Request.ID), http.StatusSeeOther)
		return nil
	}
	http.SetCookie(w, sessionCookieFor(r, res.Token, res.Record.Expires))
	if !res.Record.Started(now()) {
		return h.serveStatus(w, r, caller, "Your session of "+role.Name+" is scheduled: it starts at "+res.Record.Start.UTC().Format("2006-01-02 15:04 UTC")+".")
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
	default:
		return http.StatusBadRequest, "code"
	}
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
	app      *App
	at       time.Time
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
		if role.Approval != nil && slices.ContainsFunc(role.Approval.Approvers, func(s string) bool {
			return s == caller.User || (strings.HasPrefix(s, policy.GroupPrefix) && slices.Contains(caller.Groups, strings.TrimPrefix(s, policy.GroupPrefix)))
		}) {
			page.Approver = true
		}
	}
	sessions, err := h.app.authority.Records.OfUser(r.Context(), caller.User, t)
	if err != nil {
		h.logger.Error("listing sessions", zap.String("user", caller.User), zap.Error(err))
		return caddyhttp.Error(http.StatusServiceUnavailable, errors.New("the session store could not be reached"))
	}
	for _, s := range sessions {
		if !h.app.authority.Revocations.Revoked(s.ID) {
			page.Sessions = append(page.Sessions, s)
		}
	}
	return render(w, status, "status.html", page)
}

func (h *Handler) deactivate(w http.ResponseWriter, r *http.Request, caller policy.Caller) error {
	form, err := readForm(w, r, "session", "csrf")
	if err != nil {
		return h.renderMessage(w, r, http.StatusBadRequest, "The form could not be read", err.Error()+".", caller.User)
	}
	if !h.checkPost(r, caller.User, form["csrf"]) {
		return h.renderMessage(w, r, http.StatusForbidden, "Form expired", "This form has expired or did not come from this site. Open the status page and try again.", caller.User)
	}
	_, err = h.app.authority.End(r.Context(), caller.User, form["session"], session.Deactivated, caller.User, "deactivated by the user")
	switch {
	case errors.Is(err, session.ErrSessionNotFound):
		return h.renderMessage(w, r, http.StatusNotFound, "No such session", "You have no session with that id.", caller.User)
	case err != nil:
		h.logger.Error("deactivating a session", zap.String("user", caller.User), zap.Error(err))
		return caddyhttp.Error(http.StatusServiceUnavailable, errors.New("the session store could not be reached"))
	}
	if token := sessionCookie(r); token != "" {
		h.app.authority.Verifier.Forget(token)
		http.SetCookie(w, sessionCookieFor(r, "", time.Time{}))
	}
	http.Redirect(w, r, pagePrefix, http.StatusSeeOther)
	return nil
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

func writeJSON(w http.ResponseWriter, status int, v any) error {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}

func truncateRunes(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n])
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
