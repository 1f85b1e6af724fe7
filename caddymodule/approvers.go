package caddymodule

import (
	"github.com/caddy-jit/caddy-jit/policy"
	"github.com/caddy-jit/caddy-jit/workflow"
)

// approvesSomeRole reports whether the caller is an approver of any configured role:
// the approvals page is theirs, and the status page links to it. It reads only the
// configuration, never storage.
func (a *App) approvesSomeRole(caller policy.Caller) bool {
	for _, role := range a.roles {
		if workflow.ApprovesRole(role, caller) {
			return true
		}
	}
	return false
}
