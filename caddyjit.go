// Package caddyjit registers caddy-jit's Caddy modules, so that operators can build
// Caddy with it the usual way: xcaddy build --with github.com/caddy-jit/caddy-jit.
// The modules themselves live in package caddymodule.
package caddyjit

import (
	// The jit app, the http.handlers.jit handler, the admin API routes and the
	// `caddy jit` subcommands.
	_ "github.com/caddy-jit/caddy-jit/caddymodule"
)
