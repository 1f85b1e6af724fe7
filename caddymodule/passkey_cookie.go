package caddymodule

import (
	"net/http"
	"strings"
	"time"

	"github.com/caddy-jit/caddy-jit/internal/random"
)

// The passkey cookie binds each passkey ceremony to the browser that began it: it
// holds a random value whose SHA-256 is stored with the ceremony, and a ceremony is
// finished only by a browser that sends it. Whoever else learns a ceremony's id and
// options (a shared screen, a proxy log) cannot answer it with an authenticator of
// their own, not even with the user's password. HttpOnly and SameSite=Strict; over
// HTTPS the __Host- prefix pins it to this host (and so to the path /), over HTTP it
// is sent to the pages under /.jit/ only. Each ceremony begun renews it.
const (
	PasskeyCookieName       = "jit_passkey"
	SecurePasskeyCookieName = "__Host-jit_passkey"
	// passkeyCookieBytes random bytes make the value.
	passkeyCookieBytes = 32
	// passkeyCookieLife outlasts the ceremonies begun with it (2 minutes each).
	passkeyCookieLife = 10 * time.Minute
)

// passkeyCookie returns the browser's passkey binding, or "" when it sends none of the
// right shape. Only the name of this scheme counts: an HTTPS request's plain-named
// cookie could have been planted by a sibling host.
func passkeyCookie(r *http.Request) string {
	name := PasskeyCookieName
	if r.TLS != nil {
		name = SecurePasskeyCookieName
	}
	c, err := r.Cookie(name)
	if err != nil {
		return ""
	}
	v := strings.Trim(c.Value, `"`)
	if !random.IsToken(v, passkeyCookieBytes) {
		return ""
	}
	return v
}

// passkeyBinding is the browser's binding for a new ceremony (its own, or a new one)
// and the cookie that keeps it for passkeyCookieLife more.
func passkeyBinding(r *http.Request) (string, *http.Cookie) {
	value := passkeyCookie(r)
	if value == "" {
		value = random.Token(passkeyCookieBytes)
	}
	c := &http.Cookie{
		Name:     PasskeyCookieName,
		Value:    value,
		Path:     pagePrefix,
		MaxAge:   int(passkeyCookieLife / time.Second),
		Expires:  now().Add(passkeyCookieLife),
		HttpOnly: true,
		SameSite: http.SameSiteStrictMode,
	}
	if r.TLS != nil {
		c.Name, c.Path, c.Secure = SecurePasskeyCookieName, "/", true
	}
	return value, c
}
