package caddymodule

import (
	"context"
	"net/http"
	"net/url"
	"slices"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/caddy-jit/caddy-jit/audit"
	"github.com/caddy-jit/caddy-jit/policy"
	"github.com/caddy-jit/caddy-jit/session"
)

// Fresh proof for dangerous requests inside a session. `jit @deletes ROLE { fresh 5m }`
// admits a matched request only if the session's last step-up (the token's auth_time)
// is younger than 5 minutes. An older one is sent to /.jit/reconfirm (reconfirm_page.go)
// to prove presence again; the session keeps its end either way.
//
// A site often has two jit handlers that both run for such a request: `jit ROLE` for
// everything and `jit @deletes ROLE { fresh 5m }`. Caddy puts the one with a matcher
// first, but in a `route` block the operator's order holds: either may come first.
// The first one verifies the session, strips and sets the identity headers and writes
// the one access event; it leaves its gatedRequest in the request's context, where a
// later one finds the verified claims and applies only its own roles and freshness. A
// later handler that refuses marks the request refused, and the first writes no
// access event.

// provisionFresh writes Fresh once as the audit events and answers show it.
func (h *Handler) provisionFresh() {
	if h.Fresh > 0 {
		h.freshText = policy.FormatDuration(time.Duration(h.Fresh))
	}
}

// gatedKey is the context key of a gatedRequest. Unexported: nothing outside this
// package can put a request through as already admitted.
type gatedKey struct{}

// Value makes a gatedRequest answer for itself under gatedKey.
func (g *gatedRequest) Value(key any) any {
	if key == (gatedKey{}) {
		return g
	}
	return g.Context.Value(key)
}

// admittedBy returns the gated request an earlier jit handler admitted, or nil.
func admittedBy(ctx context.Context) *gatedRequest {
	g, _ := ctx.Value(gatedKey{}).(*gatedRequest)
	return g
}

// admitAgain applies the handler's requirements to a request an earlier jit handler
// admitted: its roles and its freshness, against the claims already verified, and
// its assertion. Where it does not admit, it has answered the request.
func (h *Handler) admitAgain(w http.ResponseWriter, r *http.Request, g *gatedRequest) (bool, error) {
	c, t := g.claims, now()
	if !slices.Contains(h.Roles, c.Role) {
		repl := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
		return false, h.refuse(w, r, repl, c.Subject, session.ErrTokenRole.Error(), t)
	}
	if !h.freshEnough(c, t) {
		return false, h.reauth(w, r, c, t)
	}
	if err := h.assert(r, c, t); err != nil {
		return false, err
	}
	g.requireFresh(h)
	return true, nil
}

// requireFresh notes in the access event that h required a recent step-up; of several
// handlers, the strictest.
func (g *gatedRequest) requireFresh(h *Handler) {
	if h.Fresh > 0 && (g.freshBy == nil || h.Fresh < g.freshBy.Fresh) {
		g.freshBy = h
	}
}

// freshEnough reports whether the session's last step-up is recent enough for the
// handler at t. A token without auth_time is never fresh: whoever holds it proves
// presence again. No allocation: this runs on every gated request.
func (h *Handler) freshEnough(c *session.Claims, t time.Time) bool {
	if h.Fresh <= 0 {
		return true
	}
	return c.AuthTime > 0 && t.Sub(time.Unix(c.AuthTime, 0)) < time.Duration(h.Fresh)
}

// reauth answers a request whose session's step-up is too old for the handler: a page
// navigation (GET or HEAD from a browser) is redirected to the re-confirmation page,
// which sends it back; anything else gets 401 JSON with reauth_url, since a POST or a
// DELETE cannot be replayed after a redirect.
func (h *Handler) reauth(w http.ResponseWriter, r *http.Request, c *session.Claims, t time.Time) error {
	fields := []zap.Field{
		zap.String("user", c.Subject), zap.String("role", c.Role), zap.String("session_id", c.SessionID),
		zap.String("client_ip", clientIP(r)), zap.String("method", r.Method), zap.String("uri", r.RequestURI),
		zap.String("fresh", h.freshText),
	}
	if c.AuthTime > 0 {
		stepped := time.Unix(c.AuthTime, 0)
		fields = append(fields, zap.String("stepped_up", stepped.UTC().Format(time.RFC3339)),
			zap.Int64("step_up_age_s", int64(t.Sub(stepped)/time.Second)))
	}
	if c.BreakGlass {
		fields = append(fields, zap.Bool("break_glass", true))
	}
	countDenial("reauth_required")
	h.app.authority.Audit.Event(audit.EventReauthRequired, fields...)

	target := reconfirmURL(c.SessionID, r.URL.RequestURI())
	if (r.Method == http.MethodGet || r.Method == http.MethodHead) && !wantsJSON(r) {
		w.Header().Set("Cache-Control", "no-store")
		http.Redirect(w, r, target, http.StatusFound)
		return nil
	}
	return writeJSON(w, http.StatusUnauthorized, map[string]string{
		"error": "reauth_required",
		"message": "this request needs a proof of presence younger than " + h.freshText + " in your session of " + c.Role +
			"; confirm it at reauth_url, then send the request again",
		"role":       c.Role,
		"session_id": c.SessionID,
		"fresh":      h.freshText,
		"reauth_url": target,
	})
}

// reconfirmURL is the re-confirmation page for a session, returning to uri afterwards.
func reconfirmURL(sessionID, uri string) string {
	return pagePrefix + reconfirmPage + "?session=" + url.QueryEscape(sessionID) + "&return=" + url.QueryEscape(uri)
}
