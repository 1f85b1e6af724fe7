// Package commands owns the `caddy jit …` subcommands: enroll (and enrollment links),
// sessions, revoke, unlock and rotate-keys for operators; audit verify, audit session
// and report over the audit log; and explain, which says why a user may or may not
// activate a role. It registers them with Caddy's command line when imported (the
// root package caddyjit imports it).
//
// The operator commands talk to the admin API of a running Caddy (the routes of
// package caddymodule, in the JSON of internal/adminapi). When the config given with
// --config turns the admin API off, they work on its storage directly, with the same
// authority.Authority methods the admin API runs, on the jit app that
// caddymodule.LoadApp reads from the config; explain and report read their roles
// through LoadApp too. The commands never build the jit app any other way. Only the
// root package imports this one: caddymodule must never, or the two would import
// each other.
package commands
