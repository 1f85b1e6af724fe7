package caddymodule

import (
	"testing"
	"time"

	"github.com/caddy-jit/caddy-jit/policy"
)

func TestApprovesSomeRole(t *testing.T) {
	app := &App{roles: map[string]*policy.Role{
		"viewer":  {Name: "viewer"},
		"deploy":  {Name: "deploy", Approval: &policy.Approval{Approvers: []string{"carol"}, Count: 1, Expires: time.Hour}},
		"billing": {Name: "billing", Approval: &policy.Approval{Approvers: []string{"group:finance"}, Count: 1, Expires: time.Hour}},
	}}
	tests := []struct {
		name   string
		caller policy.Caller
		want   bool
	}{
		{"approver by name", policy.Caller{User: "carol"}, true},
		{"approver through a group", policy.Caller{User: "erin", Groups: []string{"finance"}}, true},
		{"eligible, approves nothing", policy.Caller{User: "bob", Groups: []string{"ops"}}, false},
		{"a user named like the group", policy.Caller{User: "finance"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := app.approvesSomeRole(tt.caller); got != tt.want {
				t.Errorf("approvesSomeRole(%+v) = %v, want %v", tt.caller, got, tt.want)
			}
		})
	}
	if (&App{}).approvesSomeRole(policy.Caller{User: "carol"}) {
		t.Error("with no roles configured, carol approves some role")
	}
}
