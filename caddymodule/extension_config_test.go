package caddymodule

import (
	"encoding/json"
	"strings"
	"testing"
)

// extensionRole is a Caddyfile with one role whose settings are body.
func extensionRole(body string) string {
	return `{
	jit {
		role vault {
			max_duration 1h
			eligible alice
` + body + `
		}
	}
}
http://example.com {
	jit vault
}
`
}

func TestExtendWithoutApprovalOption(t *testing.T) {
	const approval = "\t\t\tapproval {\n\t\t\t\tapprovers bob\n\t\t\t}\n"
	tests := []struct {
		name string
		body string
		// parseErr is part of the Caddyfile error; buildErr of the role's build error.
		parseErr, buildErr string
		needsApproval      bool
	}{
		{name: "default: an approval role's extensions need approval", body: approval + "max_total 4h", needsApproval: true},
		{name: "the option", body: approval + "max_total 4h\nextend_without_approval"},
		{name: "without approval", body: "max_total 4h\nextend_without_approval", buildErr: "needs an approval block"},
		{name: "without extensions", body: approval + "extend_without_approval", buildErr: "needs max_total longer than max_duration"},
		{name: "a value", body: approval + "max_total 4h\nextend_without_approval yes", parseErr: `takes no value, got "yes"`},
		{name: "a typo", body: approval + "max_total 4h\nextend_without_aproval", parseErr: "extend_without_approval, allowed_hours"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := adapt(t, extensionRole(tt.body))
			if tt.parseErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.parseErr) {
					t.Fatalf("adapt = %v, want an error saying %q", err, tt.parseErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			raw, _ := json.Marshal(cfg["apps"].(map[string]any)["jit"])
			var app App
			if err := json.Unmarshal(raw, &app); err != nil {
				t.Fatal(err)
			}
			role := app.Roles["vault"]
			built, err := role.build("vault")
			if tt.buildErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.buildErr) {
					t.Fatalf("build = %v, want an error saying %q", err, tt.buildErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := built.ExtensionNeedsApproval(); got != tt.needsApproval {
				t.Fatalf("ExtensionNeedsApproval = %v, want %v (config %s)", got, tt.needsApproval, raw)
			}
		})
	}
}
