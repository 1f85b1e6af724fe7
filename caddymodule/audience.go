package caddymodule

import (
	"net/http"
	"strings"
	"sync"
)

// maxCachedAudiences bounds the audience cache: a site answers for few host names,
// and a client inventing Host headers must not grow it.
const maxCachedAudiences = 64

// audienceCache remembers the audience of each host a handler serves, so that the hot
// path does not build the same origin string on every request.
type audienceCache struct {
	mu    sync.RWMutex
	plain map[string]string
	tls   map[string]string
}

func (c *audienceCache) of(r *http.Request) string {
	if c == nil {
		return siteAudience(r)
	}
	m := &c.plain
	if r.TLS != nil {
		m = &c.tls
	}
	c.mu.RLock()
	aud, ok := (*m)[r.Host]
	c.mu.RUnlock()
	if ok {
		return aud
	}
	aud = siteAudience(r)
	c.mu.Lock()
	if *m == nil {
		*m = make(map[string]string)
	}
	if len(*m) < maxCachedAudiences {
		(*m)[r.Host] = aud
	}
	c.mu.Unlock()
	return aud
}

// siteAudience is the site's origin, the audience of its tokens: a token made for one
// site is refused by every other, even on the same host.
func siteAudience(r *http.Request) string {
	scheme, defaultPort := "http://", ":80"
	if r.TLS != nil {
		scheme, defaultPort = "https://", ":443"
	}
	host := strings.ToLower(strings.TrimSuffix(r.Host, defaultPort))
	return scheme + host
}
