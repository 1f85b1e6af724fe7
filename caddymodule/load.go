package caddymodule

import (
	"errors"
	"fmt"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/caddy-jit/caddy-jit/policy"
)

// Reading the jit app of a config without running it: the `caddy jit` commands that
// work offline (explain, report, and the operator commands when the admin API is off)
// need the settings, the roles and the user-name rules exactly as a running Caddy
// would build them from the same config, so they get them from here, built once.

// ErrNoApp is LoadApp's answer for a config without a jit app (no global `jit`
// option): each command says what that means for it.
var ErrNoApp = errors.New("the config has no jit app (global `jit` option)")

// LoadApp reads the jit app of cfg as Provision does, without storage and without
// starting anything: the settings with their defaults, user names in canonical form,
// the policy's roles built (PolicyRoles), and everything Validate checks. A config
// that Caddy would refuse to run is refused here too.
func LoadApp(cfg *caddy.Config) (*App, error) {
	raw, ok := cfg.AppsRaw["jit"]
	if !ok {
		return nil, ErrNoApp
	}
	var app App
	if err := caddy.StrictUnmarshalJSON(raw, &app); err != nil {
		return nil, fmt.Errorf("reading the jit app: %v", err)
	}
	if err := app.build(); err != nil {
		return nil, err
	}
	return &app, nil
}

// PolicyRoles are the roles the gate decides with, by name, built from the config
// once. They are the app's own: read them, do not change them.
func (a *App) PolicyRoles() map[string]*policy.Role { return a.roles }

// CanonicalUser checks a user name given to the admin API or a command (printable,
// no slash, bounded) and returns it in the canonical form of user_names, as the gate
// and the stored records know the user: with case_insensitive, ALICE is alice.
func (a *App) CanonicalUser(name string) (string, error) { return userArg(a.names, name) }

// EnrollLinkLifetime is how long an enrollment link works: requested, or the app's
// enroll_link_ttl when requested is 0; an error when that is not positive or longer
// than 30 days (CheckEnrollLinkTTL).
func (a *App) EnrollLinkLifetime(requested time.Duration) (time.Duration, error) {
	return enrollLinkTTL(requested, time.Duration(a.EnrollLinkTTL))
}
