package caddymodule

import (
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"

	"github.com/caddy-jit/caddy-jit/internal/printable"
)

// maxCachedAudiences bounds the audience cache: a site answers for few host names,
// and a client inventing Host headers must not grow it.
const maxCachedAudiences = 64

// audienceCache remembers the audience of each host and listener a handler serves, so
// that the hot path does not build the same origin string on every request.
type audienceCache struct {
	// fixed, when set, is the audience of every request: the handler's audience.
	fixed string
	mu    sync.RWMutex
	m     map[audienceKey]string
}

type audienceKey struct {
	host string
	port int
	tls  bool
}

func (c *audienceCache) of(r *http.Request) string {
	if c == nil {
		return siteAudience(r)
	}
	if c.fixed != "" {
		return c.fixed
	}
	key := audienceKey{host: r.Host, port: listenerPort(r), tls: r.TLS != nil}
	c.mu.RLock()
	aud, ok := c.m[key]
	c.mu.RUnlock()
	if ok {
		return aud
	}
	aud = siteAudience(r)
	c.mu.Lock()
	if c.m == nil {
		c.m = make(map[audienceKey]string)
	}
	if len(c.m) < maxCachedAudiences {
		c.m[key] = aud
	}
	c.mu.Unlock()
	return aud
}

// siteAudience is the site's origin, the audience of its tokens: a token made for one
// site is refused by every other, even on the same host. The host name comes from the
// request, which Caddy has routed by it; the port comes from the listener that took
// the connection, never from the Host header, which a client could set to another
// site's port (Caddy's host matcher ignores ports).
func siteAudience(r *http.Request) string {
	scheme, defaultPort := "http://", 80
	if r.TLS != nil {
		scheme, defaultPort = "https://", 443
	}
	host := r.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	} else {
		host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	}
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	host = strings.ToLower(host)
	port := listenerPort(r)
	if port == 0 || port == defaultPort {
		return scheme + host
	}
	return scheme + host + ":" + strconv.Itoa(port)
}

// listenerPort is the local port of the connection, or 0 if unknown.
func listenerPort(r *http.Request) int {
	if addr, ok := r.Context().Value(http.LocalAddrContextKey).(*net.TCPAddr); ok {
		return addr.Port
	}
	return 0
}

// checkAudience accepts an origin: scheme, host and optional port, nothing else.
func checkAudience(aud string) error {
	u, err := url.Parse(aud)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil ||
		(u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || aud != strings.ToLower(aud) {
		return fmt.Errorf("audience %q is not an origin: write it as https://console.example or http://console.example:8080, in lower case", aud)
	}
	if strings.HasSuffix(aud, "/") {
		return fmt.Errorf("audience %q ends with a slash: write the origin alone, e.g. %s", aud, strings.TrimSuffix(aud, "/"))
	}
	return nil
}

// checkAssertionAudience accepts what an upstream may expect in aud: a URL or any other
// identifier, printable and short.
func checkAssertionAudience(aud string) error {
	if aud == "" || len(aud) > 256 || strings.ContainsFunc(aud, printable.IsControl) || strings.ContainsAny(aud, " \t") {
		return fmt.Errorf("assertion audience %q: want the upstream's identifier, e.g. https://grafana.internal:3000, without spaces or control characters, at most 256 bytes", aud)
	}
	return nil
}
