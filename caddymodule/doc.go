// Package caddymodule adapts caddy-jit to Caddy: the `jit` app (the global option that
// declares roles and who is eligible), the `http.handlers.jit` handler (the site
// directive that guards a route and serves the pages under /.jit/), the Caddyfile
// syntax of both, and the admin API routes. The `caddy jit` subcommands live in
// package commands, which reads a config's jit app through LoadApp; this package
// never imports it.
//
// It stays thin: decisions come from package policy, and sessions, keys, TOTP and
// audit from package session.
package caddymodule
