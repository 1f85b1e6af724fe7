// Package caddyjit registers caddy-jit with Caddy, so that operators can build Caddy
// with it the usual way: xcaddy build --with github.com/caddy-jit/caddy-jit. The
// modules live in package caddymodule, the `caddy jit` subcommands in package
// commands; importing this package brings both.
package caddyjit

import (
	// The jit app, the http.handlers.jit handler and the admin API routes.
	_ "github.com/caddy-jit/caddy-jit/caddymodule"
	// The `caddy jit` subcommands.
	_ "github.com/caddy-jit/caddy-jit/commands"
)
