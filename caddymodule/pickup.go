package caddymodule

import (
	"errors"
	"net/http"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/caddy-jit/caddy-jit/policy"
	"github.com/caddy-jit/caddy-jit/session"
	"github.com/caddy-jit/caddy-jit/workflow"
)

// A request that waits for approvers hands its session only to the browser that asked
// (session/pickup.go). That browser holds the request's pickup secret in a cookie of
// its own, named after the request, so that requests for two roles made in one browser
// do not displace each other. The cookies are HttpOnly and never reach the upstream.
const (
	PickupCookiePrefix       = CookieName + "_pickup_"
	SecurePickupCookiePrefix = SecureCookieName + "_pickup_"
	// maxPickups bounds the pickup cookies read from one request: each may cost a
	// storage read.
	maxPickups = 8
)

type pickup struct{ id, secret string }

func pickupPrefix(r *http.Request) string {
	if r.TLS != nil {
		return SecurePickupCookiePrefix
	}
	return PickupCookiePrefix
}

// pickups returns the well-formed pickup cookies a browser sent, at most maxPickups.
func pickups(r *http.Request) []pickup {
	prefix := pickupPrefix(r)
	var out []pickup
	for _, c := range r.Cookies() {
		id, ok := strings.CutPrefix(c.Name, prefix)
		if !ok || !workflow.ValidPickupSecret(c.Value) {
			continue
		}
		out = append(out, pickup{id: id, secret: c.Value})
		if len(out) == maxPickups {
			break
		}
	}
	return out
}

// pickupSecret returns the secret this browser holds for one request, or "".
func pickupSecret(r *http.Request, id string) string {
	c, err := r.Cookie(pickupPrefix(r) + id)
	if err != nil || !workflow.ValidPickupSecret(c.Value) {
		return ""
	}
	return c.Value
}

// hasPickupCookie is the gate's cheap test before it looks any further.
func hasPickupCookie(r *http.Request) bool {
	for _, line := range r.Header["Cookie"] {
		if strings.Contains(line, PickupCookiePrefix) {
			return true
		}
	}
	return false
}

func pickupCookieFor(r *http.Request, id, secret string, expires time.Time) *http.Cookie {
	c := &http.Cookie{
		Name:     pickupPrefix(r) + id,
		Value:    secret,
		Path:     "/",
		Expires:  expires,
		MaxAge:   max(1, int((time.Until(expires)+time.Second-1)/time.Second)),
		HttpOnly: true,
		SameSite: http.SameSiteLaxMode,
		Secure:   r.TLS != nil,
	}
	if secret == "" {
		c.MaxAge, c.Expires = -1, time.Unix(0, 0)
	}
	return c
}

// ready reports whether a request's session may be handed over now. An extension's
// new end goes to the browser holding its session instead (extension_pages.go).
func ready(req *workflow.Request) bool {
	return req.State == workflow.RequestApproved && req.SessionID != "" && req.PickedUp.IsZero() && !req.IsExtension()
}

// pickUp hands over the session of the first request, among those this browser asked
// for, that want accepts and that is ready: it sets the session cookie and returns
// the pickup. Secrets with nothing left to pick up are forgotten on the way. Any
// failure hands over nothing.
func (h *Handler) pickUp(w http.ResponseWriter, r *http.Request, user string, want func(*workflow.Request) bool) *workflow.PickedUp {
	audience := h.audiences.of(r)
	for _, p := range pickups(r) {
		req, err := h.app.authority.Requests.LoadRequest(r.Context(), p.id)
		if errors.Is(err, workflow.ErrRequestNotFound) {
			http.SetCookie(w, pickupCookieFor(r, p.id, "", time.Time{}))
			continue
		}
		if err != nil {
			h.logger.Error("reading a request to hand over its session", zap.String("user", user), zap.Error(err))
			continue
		}
		// Another user's request (a shared browser) or another site's (cookies ignore
		// ports) is left alone, its secret kept for its own browser session.
		if req.User != user || req.Audience != audience || !want(req) {
			continue
		}
		if got := h.collect(w, r, user, p, audience); got != nil && got.Token != "" {
			return got
		}
	}
	return nil
}

// collect asks for one request's session with this browser's secret, setting the
// session cookie when it is handed over and forgetting a secret that is spent.
func (h *Handler) collect(w http.ResponseWriter, r *http.Request, user string, p pickup, audience string) *workflow.PickedUp {
	got, err := h.app.authority.Pickup(r.Context(), user, p.id, p.secret, audience, clientIP(r))
	switch {
	case errors.Is(err, workflow.ErrPickupRefused):
		http.SetCookie(w, pickupCookieFor(r, p.id, "", time.Time{}))
		return nil
	case errors.Is(err, workflow.ErrRequestNotFound):
		return nil
	case err != nil:
		h.logger.Error("handing over an approved session", zap.String("user", user), zap.Error(err))
		return nil
	}
	if got.Done {
		http.SetCookie(w, pickupCookieFor(r, p.id, "", time.Time{}))
	}
	if got.Token != "" {
		h.endReplaced(r, user, got.Record.ID)
		http.SetCookie(w, sessionCookieFor(r, got.Token, got.Record.Expires))
	}
	return got
}

// pickUpAtGate runs when a request has no admitting session: a browser that asked for
// one of this route's roles, and whose request was approved, gets its session here
// and goes on to the upstream without another code.
func (h *Handler) pickUpAtGate(w http.ResponseWriter, r *http.Request, user string, t time.Time) *session.Claims {
	if !hasPickupCookie(r) {
		return nil
	}
	got := h.pickUp(w, r, user, func(req *workflow.Request) bool {
		// A session that starts later is handed over on its request's page, which
		// says when it starts.
		return ready(req) && !req.Start.After(t) && h.guards(req.Role)
	})
	if got == nil {
		return nil
	}
	claims, err := h.app.authority.Verifier.Verify(got.Token, session.Want{Subject: user, Audience: h.audiences.of(r), Roles: h.Roles, Rules: h.app.roles}, t)
	if err != nil {
		return nil
	}
	return claims
}

// guards reports whether a session of role opens this handler's routes.
func (h *Handler) guards(role string) bool {
	for _, name := range h.Roles {
		if name == role {
			return true
		}
	}
	return false
}

// showOpenRequest shows the caller's open request for a role, if there is one, in
// place of the activation form: a second request is not offered while one is open.
func (h *Handler) showOpenRequest(w http.ResponseWriter, r *http.Request, caller policy.Caller, role string, status int) (bool, error) {
	open, err := h.app.authority.OpenRequest(r.Context(), caller.User, role)
	if err != nil {
		return true, h.storeUnreachable("looking for an open request", caller.User, err)
	}
	if open == nil {
		return false, nil
	}
	return true, h.showRequest(w, r, caller, open.ID, status,
		"You already have a request for "+role+", so no second one is offered. It stands as follows.")
}

// holdsSession reports whether this browser's session cookie is a valid token of the
// session rec (as of its start, so that a session scheduled for later counts): the
// browser that picked it up, or that activated it.
func (h *Handler) holdsSession(r *http.Request, user string, rec *session.Record) bool {
	token := sessionCookie(r)
	if token == "" {
		return false
	}
	at := now()
	if rec.Start.After(at) {
		at = rec.Start
	}
	claims, err := h.app.authority.Verifier.Verify(token, session.Want{Subject: user, Audience: h.audiences.of(r), Roles: []string{rec.Role}, Rules: h.app.roles}, at)
	return err == nil && claims.SessionID == rec.ID
}

// holdsAnySession reports whether this browser's session cookie admits it now, for
// any role.
func (h *Handler) holdsAnySession(r *http.Request, user string, t time.Time) bool {
	token := sessionCookie(r)
	if token == "" {
		return false
	}
	_, err := h.app.authority.Verifier.Verify(token, session.Want{Subject: user, Audience: h.audiences.of(r), Roles: h.app.roleNames(), Rules: h.app.roles}, t)
	return err == nil
}
