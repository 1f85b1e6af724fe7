package caddymodule

import (
	"errors"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/caddy-jit/caddy-jit/policy"
)

// parseRoleExtension handles the extension settings inside a role block; it reports
// false for a setting that is not one of them.
//
//	extend_without_approval
func parseRoleExtension(d *caddyfile.Dispenser, rc *RoleConfig) (bool, error) {
	switch d.Val() {
	case "extend_without_approval":
		if d.NextArg() {
			return true, d.Errf("extend_without_approval takes no value, got %q", d.Val())
		}
		rc.ExtendWithoutApproval = true
		return true, nil
	}
	return false, nil
}

// buildExtension adds the extension rule to r, after its approval and max_total. The
// option only makes sense where extensions exist and would otherwise need approval;
// anywhere else it would promise something the role does not do, so it is refused.
func (rc *RoleConfig) buildExtension(r *policy.Role) error {
	if !rc.ExtendWithoutApproval {
		return nil
	}
	switch {
	case !r.NeedsApproval():
		return errors.New("extend_without_approval needs an approval block: without approval, sessions are extended with the holder's code alone anyway")
	case r.MaxTotal <= r.MaxDuration:
		return errors.New("extend_without_approval needs max_total longer than max_duration: otherwise sessions of the role cannot be extended")
	}
	r.ExtendWithoutApproval = true
	return nil
}
