package caddymodule

import (
	"context"
	"net/http"
	"time"

	"go.uber.org/zap"

	"github.com/caddy-jit/caddy-jit/session"
)

// replaceTimeout bounds ending the session a new one replaces; the new one is
// handed over whatever happens.
const replaceTimeout = 5 * time.Second

// endReplaced ends the session this browser's cookie holds, when a new session of the
// same user (newID) is about to take the cookie's place: one session cookie per
// browser, so the old token leaves the browser, and a token no browser holds must not
// stay valid for whoever copied it. The old session ends as "replaced", by its user:
// its own event, then its session_ended. A scheduled session the cookie holds ends
// too. A cookie that is not this user's session here (another user's, expired,
// revoked, forged) is left alone: this browser's user may
// end only their own session. A failure to end it is logged; the old session then
// lasts until its expiry, as it would have before.
func (h *Handler) endReplaced(r *http.Request, user, newID string) {
	token := sessionCookie(r)
	if token == "" {
		return
	}
	t := now()
	old, err := h.app.authority.Verifier.VerifyHeld(token, session.Want{Subject: user, Audience: h.audiences.of(r), Roles: h.app.roleNames(), Rules: h.app.roles}, t)
	if err != nil || old.SessionID == newID {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), replaceTimeout)
	defer cancel()
	_, err = h.app.authority.End(ctx, user, old.SessionID, session.Replaced, user, "replaced by session "+newID+" in the same browser")
	if err != nil {
		h.logger.Error("ending the session a new one replaces in the same browser: it stays valid until it expires; revoke it with `caddy jit revoke`",
			zap.String("user", user), zap.String("session_id", old.SessionID), zap.String("replaced_by", newID), zap.Error(err))
	}
}
