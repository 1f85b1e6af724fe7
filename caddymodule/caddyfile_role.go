package caddymodule

import (
	"strconv"
	"time"

	"github.com/caddy-jit/caddy-jit/policy"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// parseRole reads the block of a `role NAME { … }` line of the global jit option (the
// whole grammar is at the top of caddyfile.go); the workflow's lines (approval,
// max_active, extensions …) are parseRoleWorkflow's.
func parseRole(d *caddyfile.Dispenser) (*RoleConfig, error) {
	rc := &RoleConfig{}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		switch d.Val() {
		case "max_duration":
			if err := durationArg(d, &rc.MaxDuration); err != nil {
				return nil, err
			}
		case "default_duration":
			if err := durationArg(d, &rc.DefaultDuration); err != nil {
				return nil, err
			}
		case "justification":
			j, err := parseJustification(d)
			if err != nil {
				return nil, err
			}
			rc.Justification = j
		case "ticket":
			if err := oneArg(d, &rc.Ticket); err != nil {
				return nil, err
			}
			if _, err := compileTicket(rc.Ticket); err != nil {
				return nil, d.Err(err.Error())
			}
		case "step_up":
			if err := oneArg(d, &rc.StepUp); err != nil {
				return nil, err
			}
			if _, err := policy.ParseStepUp(rc.StepUp); err != nil {
				return nil, d.Err(err.Error())
			}
		case "eligible":
			e, err := parseEligible(d)
			if err != nil {
				return nil, err
			}
			rc.Eligible = append(rc.Eligible, e)
		default:
			handled, err := parseRoleWorkflow(d, rc)
			if err != nil {
				return nil, err
			}
			if !handled {
				return nil, d.Errf("unrecognized role setting %q: expected max_duration, default_duration, justification, ticket, eligible, approval, break_glass, max_total, extend_without_approval, allowed_hours, max_active, notify, record_bodies or step_up", d.Val())
			}
		}
	}
	if rc.MaxDuration == 0 {
		return nil, d.Err("the role has no max_duration: add e.g. `max_duration 1h`")
	}
	if rc.DefaultDuration > rc.MaxDuration {
		return nil, d.Errf("default_duration %s is longer than max_duration %s", time.Duration(rc.DefaultDuration), time.Duration(rc.MaxDuration))
	}
	if len(rc.Eligible) == 0 {
		return nil, d.Err("no one is eligible for the role: add `eligible USER…` or `eligible group:NAME`")
	}
	if rc.MaxTotal != 0 && rc.MaxTotal < rc.MaxDuration {
		return nil, d.Errf("max_total %s is shorter than max_duration %s: a session could not even start", time.Duration(rc.MaxTotal), time.Duration(rc.MaxDuration))
	}
	return rc, nil
}

func parseJustification(d *caddyfile.Dispenser) (*JustificationConfig, error) {
	args := d.RemainingArgs()
	switch {
	case len(args) == 1 && args[0] == "optional":
		return &JustificationConfig{Optional: true}, nil
	case len(args) == 1 && args[0] == "required":
		return &JustificationConfig{MinLength: DefaultJustificationMinLength}, nil
	case len(args) == 2 && args[0] == "required":
		n, err := strconv.Atoi(args[1])
		if err != nil || n < 1 || n > 1000 {
			return nil, d.Errf("justification minimum length %q: want a whole number from 1 to 1000", args[1])
		}
		return &JustificationConfig{MinLength: n}, nil
	}
	return nil, d.Err("justification takes `required [MIN_LENGTH]` or `optional`")
}

// parseEligible reads `eligible SUBJECT... [from DATE] [until DATE]`.
func parseEligible(d *caddyfile.Dispenser) (EligibleConfig, error) {
	var e EligibleConfig
	args := d.RemainingArgs()
	for i := 0; i < len(args); i++ {
		switch args[i] {
		case "from", "until":
			if i+1 >= len(args) {
				return e, d.Errf("eligible: %s needs a date, e.g. %s 2026-12-31", args[i], args[i])
			}
			_, err := parseDate(args[i+1], args[i] == "until")
			if err != nil {
				return e, d.Errf("eligible %s: %v", args[i], err)
			}
			if args[i] == "from" {
				e.From = args[i+1]
			} else {
				e.Until = args[i+1]
			}
			i++
		default:
			if e.From != "" || e.Until != "" {
				return e, d.Errf("eligible: subject %q comes after from/until: list the subjects first", args[i])
			}
			if err := checkSubject(args[i]); err != nil {
				return e, d.Err(err.Error())
			}
			e.Subjects = append(e.Subjects, args[i])
		}
	}
	if len(e.Subjects) == 0 {
		return e, d.Err("eligible names no subject: list user names or group:NAME")
	}
	if e.From != "" && e.Until != "" {
		from, _ := parseDate(e.From, false)
		until, _ := parseDate(e.Until, true)
		if !from.Before(until) {
			return e, d.Errf("eligible: from %s is not before until %s", e.From, e.Until)
		}
	}
	return e, nil
}
