package caddymodule

import (
	"net/http"
	"strings"
	"time"

	"github.com/caddy-jit/caddy-jit/stepup"
)

// The enrollment cookie binds a link's latest opening to the browser that opened it:
// it holds a random value whose SHA-256 is stored with the opening's pending secret, so
// only that browser can confirm the secret, whoever else knows the link and the
// password. HttpOnly and SameSite=Lax; over HTTPS the __Host- prefix pins it to this
// host (and so to the path /), over HTTP it is sent to the enrollment page only.
const (
	EnrollCookieName       = "jit_enroll"
	SecureEnrollCookieName = "__Host-jit_enroll"
)

// enrollCookieFor sets the binding value until the link expires, or, for value "",
// deletes it.
func enrollCookieFor(r *http.Request, value string, expires time.Time) *http.Cookie {
	c := &http.Cookie{
		Name:     EnrollCookieName,
		Value:    value,
		Path:     pagePrefix + enrollPage,
		HttpOnly: true,
		SameSite: http.SameSiteLaxMode,
	}
	if r.TLS != nil {
		c.Name, c.Path, c.Secure = SecureEnrollCookieName, "/", true
	}
	if value == "" {
		c.MaxAge, c.Expires = -1, time.Unix(0, 0)
		return c
	}
	c.Expires = expires
	c.MaxAge = max(1, int((time.Until(expires)+time.Second-1)/time.Second))
	return c
}

// enrollCookie returns the browser's binding value, or "" when it sends none of the
// right shape. Only the name of this scheme counts: an HTTPS request's plain-named
// cookie could have been planted by a sibling host.
func enrollCookie(r *http.Request) string {
	name := EnrollCookieName
	if r.TLS != nil {
		name = SecureEnrollCookieName
	}
	c, err := r.Cookie(name)
	if err != nil {
		return ""
	}
	v := strings.Trim(c.Value, `"`)
	if len(v) > stepup.EnrollBindingLength {
		return ""
	}
	return v
}
