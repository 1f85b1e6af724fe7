package caddymodule

import (
	"encoding/json"
	"errors"
	"maps"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/caddy-jit/caddy-jit/audit"
	"github.com/caddy-jit/caddy-jit/policy"
	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
)

// How the handler answers what it will not or cannot serve: in JSON to an API
// client, with a page to a browser. The admin API answers its errors through
// caddy.APIError (admin.go), which Caddy writes as JSON itself.

// wantsJSON reports whether the client asked for JSON and not for a page.
func wantsJSON(r *http.Request) bool {
	accept := r.Header.Get("Accept")
	return strings.Contains(accept, "application/json") && !strings.Contains(accept, "text/html")
}

// writeJSON answers with v as JSON, never cached or sniffed as something else.
func writeJSON(w http.ResponseWriter, status int, v any) error {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}

// gateRefusal is how the gate turns a request away: a stable code for programs, a
// title for the page and a sentence for people, and any further fields for the
// JSON answer.
type gateRefusal struct {
	status      int
	code, title string
	message     string
	user        string
	jsonFields  map[string]any
}

// turnAway answers a request the gate turns away in the form the client asked
// for: to an API client {"error": code, "message": message} and the further
// fields, to a browser a page with the title and the message.
func (h *Handler) turnAway(w http.ResponseWriter, r *http.Request, g gateRefusal) error {
	if wantsJSON(r) {
		body := map[string]any{"error": g.code, "message": g.message}
		maps.Copy(body, g.jsonFields)
		return writeJSON(w, g.status, body)
	}
	return h.renderMessage(w, r, g.status, g.title, g.message, g.user)
}

// storeUnreachable logs why a page could not be served (doing what, for whom) and
// answers 503 without the details, which stay in the log.
func (h *Handler) storeUnreachable(doing, user string, err error) error {
	h.logger.Error(doing, zap.String("user", user), zap.Error(err))
	return caddyhttp.Error(http.StatusServiceUnavailable, errors.New("the session store could not be reached"))
}

// stale reports whether the revocation set is too old to trust: storage has been
// unreachable for longer than max_staleness, so a revocation made elsewhere may be
// missing here.
func (a *App) stale(t time.Time) bool {
	return t.Sub(a.authority.LastSync()) > time.Duration(a.MaxStaleness)
}

func (h *Handler) storageStale(w http.ResponseWriter, r *http.Request, user string) error {
	countDenial("revocations_stale")
	h.app.authority.Audit.Event(audit.EventAccessDenied, zap.String("user", user), zap.String("reason", "revocations_stale"),
		zap.String("client_ip", clientIP(r)), zap.String("method", r.Method), zap.String("uri", r.RequestURI))
	msg := "caddy-jit cannot reach its storage, so it cannot be sure which sessions were revoked; privileged access is paused until storage is back (last successful check " +
		h.app.authority.LastSync().UTC().Format(time.RFC3339) + ")."
	w.Header().Set("Retry-After", "5")
	return h.turnAway(w, r, gateRefusal{status: http.StatusServiceUnavailable, code: "storage_unavailable", title: "Access paused", message: msg, user: user})
}

// refuse answers a request without an admitting session: an eligible caller is sent
// to activation, anyone else is forbidden.
func (h *Handler) refuse(w http.ResponseWriter, r *http.Request, repl *caddy.Replacer, user, reason string, t time.Time) error {
	caller := h.app.caller(repl, user)
	var eligible *policy.Role
	for _, name := range h.Roles {
		role, _ := h.app.role(name)
		if role.Eligible(caller, t).Allowed {
			eligible = role
			break
		}
	}
	fields := []zap.Field{
		zap.String("user", user), zap.String("reason", reason), zap.String("client_ip", clientIP(r)),
		zap.String("method", r.Method), zap.String("uri", r.RequestURI), zap.Strings("roles", h.Roles),
	}
	countDenial(reason)
	if eligible == nil {
		h.app.authority.Audit.Event(audit.EventAccessDenied, append(fields, zap.Bool("eligible", false))...)
		return h.forbidden(w, r, user)
	}
	h.app.authority.Audit.Event(audit.EventAccessDenied, append(fields, zap.Bool("eligible", true))...)
	target := activationURL(eligible.Name, r.URL.RequestURI())
	if wantsJSON(r) {
		return writeJSON(w, http.StatusUnauthorized, map[string]string{
			"error":        "activation_required",
			"message":      "this resource needs an active session of the role " + eligible.Name + "; activate it at activate_url",
			"role":         eligible.Name,
			"activate_url": target,
		})
	}
	w.Header().Set("Cache-Control", "no-store")
	http.Redirect(w, r, target, http.StatusFound)
	return nil
}

func (h *Handler) noIdentity(w http.ResponseWriter, r *http.Request) error {
	msg := "no authenticated user: caddy-jit needs an identity from an authentication handler placed before it " +
		"(basic_auth or forward_auth), read from the placeholder " + h.app.Identity +
		" (see \"no authenticated user\" in caddy-jit's docs/troubleshooting.md)"
	return h.turnAway(w, r, gateRefusal{status: http.StatusUnauthorized, code: "unauthenticated", title: "Sign-in required", message: msg})
}

func (h *Handler) forbidden(w http.ResponseWriter, r *http.Request, user string) error {
	msg := user + " is not eligible for any role that this page requires (" + strings.Join(h.Roles, ", ") + "). " +
		"If you should be, ask an operator (see \"is not eligible for any role\" in caddy-jit's docs/troubleshooting.md)."
	return h.turnAway(w, r, gateRefusal{status: http.StatusForbidden, code: "not_eligible", title: "Access denied", message: msg, user: user})
}

// activationURL is the activation page for a role, returning to uri afterwards.
func activationURL(role, uri string) string {
	return pagePrefix + "activate?role=" + url.QueryEscape(role) + "&return=" + url.QueryEscape(uri)
}
