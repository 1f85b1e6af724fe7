package caddymodule

import (
	"encoding/json"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

func init() {
	httpcaddyfile.RegisterGlobalOption("jit", parseGlobalOption)
	httpcaddyfile.RegisterDirective("jit", parseDirective)
	// After forward_auth, so the identity is known, and before every handler that
	// serves or proxies; so operators need no `order` line.
	httpcaddyfile.RegisterDirectiveOrder("jit", httpcaddyfile.After, "forward_auth")
}

// parseGlobalOption parses the `jit` global option into the jit app:
//
//	jit {
//		issuer NAME
//		identity PLACEHOLDER
//		groups PLACEHOLDER
//		user_names case_sensitive|case_insensitive
//		sync_interval DURATION
//		max_staleness DURATION
//		key_rotation DURATION
//		enroll_link_ttl DURATION
//		rp_id DOMAIN
//		store redis {
//			address HOST:PORT...  |  sentinel MASTER HOST:PORT...
//			username NAME
//			password SECRET
//			db N
//			tls [{ ca FILE }]
//			key_prefix PREFIX
//		}
//		lockout {
//			max_failures N
//			duration DURATION
//		}
//		refusals {
//			burst N
//			refill DURATION
//		}
//		role NAME {
//			max_duration DURATION
//			default_duration DURATION
//			justification required [MIN_LENGTH] | optional
//			ticket REGEX
//			eligible SUBJECT... [from DATE] [until DATE]
//			approval {
//				approvers SUBJECT...
//				count N
//				expires DURATION
//			}
//			break_glass
//			max_total DURATION
//			extend_without_approval
//			allowed_hours DAYS HH:MM-HH:MM [TIME_ZONE]
//			max_active N
//			notify webhook URL [SECRET] | notify email ADDRESS...
//			record_bodies [SIZE]
//			step_up webauthn|totp|any
//		}
//		notify webhook URL [SECRET] [{ secret S  format json|slack }]
//		notify email ADDRESS...
//		smtp {
//			address HOST:PORT
//			from ADDRESS
//			username USER
//			password PASSWORD
//			tls starttls|implicit|none
//		}
//	}
//
// Every mistake fails the load with the file and line of the offending token.
func parseGlobalOption(d *caddyfile.Dispenser, existing any) (any, error) {
	if existing != nil {
		return nil, d.Err("the jit global option is given twice: merge the two blocks into one")
	}
	app := &App{Roles: map[string]*RoleConfig{}}
	d.Next() // the option name
	if d.NextArg() {
		return nil, d.ArgErr()
	}
	for d.NextBlock(0) {
		switch d.Val() {
		case "issuer":
			if err := oneArg(d, &app.Issuer); err != nil {
				return nil, err
			}
		case "identity":
			if err := oneArg(d, &app.Identity); err != nil {
				return nil, err
			}
		case "groups":
			if err := oneArg(d, &app.Groups); err != nil {
				return nil, err
			}
		case "user_names":
			if err := oneArg(d, &app.UserNames); err != nil {
				return nil, err
			}
			if _, err := parseUserNames(app.UserNames); err != nil {
				return nil, d.Err(err.Error())
			}
		case "sync_interval":
			if err := durationArg(d, &app.SyncInterval); err != nil {
				return nil, err
			}
		case "max_staleness":
			if err := durationArg(d, &app.MaxStaleness); err != nil {
				return nil, err
			}
		case "key_rotation":
			if err := durationArg(d, &app.KeyRotation); err != nil {
				return nil, err
			}
		case "enroll_link_ttl":
			if err := durationArg(d, &app.EnrollLinkTTL); err != nil {
				return nil, err
			}
			if err := CheckEnrollLinkTTL(time.Duration(app.EnrollLinkTTL)); err != nil {
				return nil, d.Errf("enroll_link_ttl: %v", err)
			}
		case "store":
			if app.Store != nil {
				return nil, d.Err("store is given twice: keep one")
			}
			sc, err := parseStore(d)
			if err != nil {
				return nil, err
			}
			app.Store = sc
		case "rp_id":
			if err := oneArg(d, &app.RPID); err != nil {
				return nil, err
			}
			if err := checkRPID(app.RPID); err != nil {
				return nil, d.Errf("rp_id: %v", err)
			}
		case "lockout":
			if d.NextArg() {
				return nil, d.ArgErr()
			}
			app.Lockout = &LockoutConfig{}
			if err := parseLockout(d, app.Lockout); err != nil {
				return nil, err
			}
		case "role":
			var name string
			if err := oneArg(d, &name); err != nil {
				return nil, err
			}
			if _, dup := app.Roles[name]; dup {
				return nil, d.Errf("role %s is declared twice", name)
			}
			if !validRoleName.MatchString(name) {
				return nil, d.Errf("role name %q: use 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit", name)
			}
			rc, err := parseRole(d)
			if err != nil {
				return nil, err
			}
			app.Roles[name] = rc
		case "notify":
			n, err := parseNotify(d)
			if err != nil {
				return nil, err
			}
			app.Notify = append(app.Notify, n)
		case "refusals":
			if app.Refusals != nil {
				return nil, d.Err("refusals is given twice")
			}
			c, err := parseRefusals(d)
			if err != nil {
				return nil, err
			}
			app.Refusals = c
		case "audit":
			if app.Audit != nil {
				return nil, d.Err("audit is given twice")
			}
			c, err := parseAudit(d)
			if err != nil {
				return nil, err
			}
			app.Audit = c
		case "smtp":
			if app.SMTP != nil {
				return nil, d.Err("smtp is given twice")
			}
			s, err := parseSMTP(d)
			if err != nil {
				return nil, err
			}
			app.SMTP = s
		default:
			return nil, d.Errf("unrecognized jit option %q: expected issuer, identity, groups, user_names, sync_interval, max_staleness, key_rotation, enroll_link_ttl, rp_id, store, lockout, refusals, notify, smtp, audit or role", d.Val())
		}
	}
	if len(app.Roles) == 0 {
		return nil, d.Err("the jit option declares no role: add `role NAME { max_duration 1h  eligible USER }`")
	}
	if err := app.validateNotify(); err != nil {
		return nil, d.Err(err.Error())
	}
	// Names that meet only in canonical form (bob and Bob, case-insensitive) fail
	// here, where they are written; the config keeps them as written.
	names, _ := parseUserNames(app.UserNames)
	if _, err := canonicalRoles(app.Roles, names); err != nil {
		return nil, d.Err(err.Error())
	}
	return httpcaddyfile.App{Name: "jit", Value: caddyconfig.JSON(app, nil)}, nil
}

func parseLockout(d *caddyfile.Dispenser, l *LockoutConfig) error {
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		switch d.Val() {
		case "max_failures":
			if err := countArg(d, "lockout max_failures", 100, &l.MaxFailures); err != nil {
				return err
			}
		case "duration":
			if err := durationArg(d, &l.Duration); err != nil {
				return err
			}
		default:
			return d.Errf("unrecognized lockout setting %q: expected max_failures or duration", d.Val())
		}
	}
	return nil
}

func oneArg(d *caddyfile.Dispenser, dst *string) error {
	if !d.NextArg() {
		return d.ArgErr()
	}
	*dst = d.Val()
	if d.NextArg() {
		return d.ArgErr()
	}
	return nil
}

// countArg reads the one argument of a setting that counts something (what, in
// errors): a whole number from 1 to most, or of at least 1 where most is 0.
func countArg(d *caddyfile.Dispenser, what string, most int, dst *int) error {
	var s string
	if err := oneArg(d, &s); err != nil {
		return err
	}
	if n, err := strconv.Atoi(s); err == nil && n >= 1 && (most == 0 || n <= most) {
		*dst = n
		return nil
	}
	if most == 0 {
		return d.Errf("%s %q: want a whole number of at least 1", what, s)
	}
	return d.Errf("%s %q: want a whole number from 1 to %d", what, s, most)
}

func durationArg(d *caddyfile.Dispenser, dst *caddy.Duration) error {
	setting := d.Val()
	var s string
	if err := oneArg(d, &s); err != nil {
		return err
	}
	dur, err := caddy.ParseDuration(s)
	if err != nil || dur <= 0 {
		return d.Errf("%s %q: want a positive duration such as 30m, 1h or 1d", setting, s)
	}
	*dst = caddy.Duration(dur)
	return nil
}

// parseDirective parses the `jit` site directive:
//
//	jit [<matcher>] ROLE... {
//		audience ORIGIN
//		assertion [AUDIENCE]
//		fresh DURATION
//	}
//
// A request passes under an active session of any listed role; with fresh, only if
// the session's last step-up is younger than DURATION. With a matcher, the route also
// matches /.jit/*, so that the activation pages stay reachable.
func parseDirective(h httpcaddyfile.Helper) ([]httpcaddyfile.ConfigValue, error) {
	h.Next() // the directive name
	matcherSet, err := h.ExtractMatcherSet()
	if err != nil {
		return nil, err
	}
	h.Next() // the directive name again: the extraction rewound the dispenser
	handler := &Handler{Roles: h.RemainingArgs()}
	if len(handler.Roles) == 0 {
		return nil, h.Err("jit needs at least one role, e.g. `jit console-admin`")
	}
	for h.NextBlock(0) {
		switch h.Val() {
		case "audience":
			if err := oneArg(h.Dispenser, &handler.Audience); err != nil {
				return nil, err
			}
			if err := checkAudience(handler.Audience); err != nil {
				return nil, h.Err(err.Error())
			}
		case "assertion":
			handler.Assertion = true
			if h.NextArg() {
				handler.AssertionAudience = h.Val()
				if h.NextArg() {
					return nil, h.ArgErr()
				}
				if err := checkAssertionAudience(handler.AssertionAudience); err != nil {
					return nil, h.Err(err.Error())
				}
			}
		case "fresh":
			if handler.Fresh != 0 {
				return nil, h.Err("fresh is given twice")
			}
			if err := durationArg(h.Dispenser, &handler.Fresh); err != nil {
				return nil, err
			}
		default:
			return nil, h.Errf("unrecognized jit subdirective %q: expected audience, assertion or fresh", h.Val())
		}
	}
	if err := checkDeclaredRoles(h, handler.Roles); err != nil {
		return nil, err
	}
	if matcherSet == nil {
		return h.NewRoute(nil, handler), nil
	}
	route := caddyhttp.Route{
		MatcherSetsRaw: []caddy.ModuleMap{
			matcherSet,
			{"path": caddyconfig.JSON(caddyhttp.MatchPath{pagePrefix + "*"}, nil)},
		},
		HandlersRaw: []json.RawMessage{caddyconfig.JSONModuleObject(handler, "handler", "jit", nil)},
	}
	return []httpcaddyfile.ConfigValue{{Class: "route", Value: route}}, nil
}

// checkDeclaredRoles fails at the directive's line when it names a role that the
// global option does not declare.
func checkDeclaredRoles(h httpcaddyfile.Helper, roles []string) error {
	opt, _ := h.Option("jit").(httpcaddyfile.App)
	var app App
	if opt.Value != nil {
		if err := json.Unmarshal(opt.Value, &app); err != nil {
			return h.Errf("reading the jit global option: %v", err)
		}
	}
	if len(app.Roles) == 0 {
		return h.Err("jit names roles, but no role is declared: add a global `jit { role NAME { … } }` option")
	}
	declared := make([]string, 0, len(app.Roles))
	for name := range app.Roles {
		declared = append(declared, name)
	}
	for _, role := range roles {
		if _, ok := app.Roles[role]; !ok {
			return h.Errf("unknown role %q: declared roles are %s", role, strings.Join(slices.Sorted(slices.Values(declared)), ", "))
		}
	}
	return nil
}
