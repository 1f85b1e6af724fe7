package caddymodule

import (
	"strings"

	// Time zones for allowed_hours, wherever Caddy runs (a scratch container has no
	// zoneinfo).
	_ "time/tzdata"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/dustin/go-humanize"
)

// The Caddyfile grammar of a role's workflow settings (approval, notify, smtp, hours,
// break-glass, max_active, extensions), beside caddyfile.go's.

// parseApproval reads `approval { approvers SUBJECT…  count N  expires DURATION }`.
func parseApproval(d *caddyfile.Dispenser) (*ApprovalConfig, error) {
	if d.NextArg() {
		return nil, d.Err("approval takes a block: approval { approvers USER…  count N  expires 24h }")
	}
	ac := &ApprovalConfig{}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		switch d.Val() {
		case "approvers":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return nil, d.Err("approvers needs at least one user name or group:NAME")
			}
			for _, s := range args {
				if err := checkSubject(s); err != nil {
					return nil, d.Err(err.Error())
				}
			}
			ac.Approvers = append(ac.Approvers, args...)
		case "count":
			if err := countArg(d, "approval count", maxApprovalCount, &ac.Count); err != nil {
				return nil, err
			}
		case "expires":
			if err := durationArg(d, &ac.Expires); err != nil {
				return nil, err
			}
		default:
			return nil, d.Errf("unrecognized approval setting %q: expected approvers, count or expires", d.Val())
		}
	}
	if _, err := ac.build(); err != nil {
		return nil, d.Err(err.Error())
	}
	return ac, nil
}

// parseNotify reads `notify webhook URL [SECRET] [{ secret S  format json|slack }]` or
// `notify email ADDRESS…`.
func parseNotify(d *caddyfile.Dispenser) (NotifyConfig, error) {
	var n NotifyConfig
	args := d.RemainingArgs()
	if len(args) < 2 {
		return n, d.Err("notify needs a kind and a target: `notify webhook URL [SECRET]` or `notify email ADDRESS…`")
	}
	switch args[0] {
	case "webhook":
		if len(args) > 3 {
			return n, d.Err("notify webhook takes a URL and an optional secret")
		}
		n.Webhook = args[1]
		if len(args) == 3 {
			n.Secret = args[2]
		}
		for nesting := d.Nesting(); d.NextBlock(nesting); {
			switch d.Val() {
			case "secret":
				if err := oneArg(d, &n.Secret); err != nil {
					return n, err
				}
			case "format":
				if err := oneArg(d, &n.Format); err != nil {
					return n, err
				}
			default:
				return n, d.Errf("unrecognized webhook setting %q: expected secret or format", d.Val())
			}
		}
	case "email":
		n.Email = args[1:]
	default:
		return n, d.Errf("notify kind %q: expected webhook or email", args[0])
	}
	if err := n.validate(); err != nil {
		return n, d.Err(err.Error())
	}
	return n, nil
}

// parseSMTP reads `smtp { address HOST:PORT  from ADDRESS  username U  password P  tls MODE }`.
func parseSMTP(d *caddyfile.Dispenser) (*SMTPConfig, error) {
	if d.NextArg() {
		return nil, d.Err("smtp takes a block: smtp { address HOST:PORT  from ADDRESS }")
	}
	s := &SMTPConfig{}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		var dst *string
		switch d.Val() {
		case "address":
			dst = &s.Address
		case "from":
			dst = &s.From
		case "username":
			dst = &s.Username
		case "password":
			dst = &s.Password
		case "tls":
			dst = &s.TLS
		default:
			return nil, d.Errf("unrecognized smtp setting %q: expected address, from, username, password or tls", d.Val())
		}
		if err := oneArg(d, dst); err != nil {
			return nil, err
		}
	}
	if err := s.validate(); err != nil {
		return nil, d.Err(err.Error())
	}
	return s, nil
}

// parseRoleWorkflow handles the workflow settings inside a role block; it reports
// false for a setting that is not one of them.
func parseRoleWorkflow(d *caddyfile.Dispenser, rc *RoleConfig) (bool, error) {
	switch d.Val() {
	case "approval":
		ac, err := parseApproval(d)
		if err != nil {
			return true, err
		}
		rc.Approval = ac
	case "break_glass":
		if d.NextArg() {
			return true, d.ArgErr()
		}
		rc.BreakGlass = true
	case "max_total":
		return true, durationArg(d, &rc.MaxTotal)
	case "allowed_hours":
		args := d.RemainingArgs()
		if _, err := parseHours(args); err != nil {
			return true, d.Errf("allowed_hours: %v", err)
		}
		rc.AllowedHours = append(rc.AllowedHours, strings.Join(args, " "))
	case "max_active":
		if err := countArg(d, "max_active", 0, &rc.MaxActive); err != nil {
			return true, err
		}
	case "notify":
		n, err := parseNotify(d)
		if err != nil {
			return true, err
		}
		rc.Notify = append(rc.Notify, n)
	case "record_bodies":
		rc.RecordBodies = DefaultRecordBodies
		if d.NextArg() {
			size, err := humanize.ParseBytes(d.Val())
			if err != nil || size == 0 || size > maxRecordBodies {
				return true, d.Errf("record_bodies %q: want a size from 1B to 10MiB, e.g. 64KiB", d.Val())
			}
			rc.RecordBodies = int64(size)
		}
		if d.NextArg() {
			return true, d.ArgErr()
		}
	default:
		return parseRoleExtension(d, rc)
	}
	return true, nil
}
