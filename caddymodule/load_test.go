package caddymodule

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
)

// loadTestConfig adapts a Caddyfile into the config LoadApp reads.
func loadTestConfig(t *testing.T, src string) *caddy.Config {
	t.Helper()
	adapted, err := adapt(t, src)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := json.Marshal(adapted)
	if err != nil {
		t.Fatal(err)
	}
	var cfg caddy.Config
	if err := json.Unmarshal(raw, &cfg); err != nil {
		t.Fatal(err)
	}
	return &cfg
}

// LoadApp builds what Provision builds, without storage: defaults, roles, canonical
// names.
func TestLoadAppBuildsWhatProvisionBuilds(t *testing.T) {
	src := strings.Replace(validGlobal, "\t\tsync_interval 2s\n", "\t\tsync_interval 2s\n\t\tuser_names case_insensitive\n", 1)
	src = strings.Replace(src, "eligible alice group:dba", "eligible Alice group:DBA", 1)
	app, err := LoadApp(loadTestConfig(t, src))
	if err != nil {
		t.Fatal(err)
	}
	if app.Issuer != "Example Corp" || app.Lockout.MaxFailures != 3 || app.MaxStaleness != caddy.Duration(DefaultMaxStaleness) ||
		app.EnrollLinkTTL != caddy.Duration(DefaultEnrollLinkTTL) {
		t.Errorf("settings %+v, want the config's with defaults filled in", app)
	}
	roles := app.PolicyRoles()
	if len(roles) != 2 || roles["db-admin"] == nil || roles["viewer"] == nil {
		t.Fatalf("roles %v, want db-admin and viewer", roles)
	}
	if got := roles["db-admin"].Eligibility[0].Subjects; len(got) != 2 || got[0] != "alice" || got[1] != "group:dba" {
		t.Errorf("db-admin's first eligible line names %q, want the canonical alice and group:dba", got)
	}
	if user, err := app.CanonicalUser("ALICE"); err != nil || user != "alice" {
		t.Errorf("CanonicalUser(ALICE) = %q, %v; want alice", user, err)
	}
	if c, err := app.CanonicalCaller("ALICE", []string{"DBA"}); err != nil || c.User != "alice" || len(c.Groups) != 1 || c.Groups[0] != "dba" {
		t.Errorf("CanonicalCaller(ALICE, DBA) = %+v, %v", c, err)
	}
	if ttl, err := app.EnrollLinkLifetime(0); err != nil || ttl != DefaultEnrollLinkTTL {
		t.Errorf("EnrollLinkLifetime(0) = %s, %v; want the default %s", ttl, err, DefaultEnrollLinkTTL)
	}
	if _, err := app.EnrollLinkLifetime(31 * 24 * time.Hour); err == nil {
		t.Error("EnrollLinkLifetime(31d): want an error")
	}
	cfg := app.AuthorityConfig(nil, time.Now)
	if cfg.Issuer != "Example Corp" || cfg.MaxFailures != 3 || cfg.LockoutDuration != 30*time.Minute {
		t.Errorf("AuthorityConfig %+v, want the app's issuer and lockout", cfg)
	}
}

// LoadApp refuses what Caddy would refuse to run; the Caddyfile adapter catches most
// of it earlier, so these configs are JSON.
func TestLoadAppRefuses(t *testing.T) {
	for _, tt := range []struct {
		name, app, want string
	}{
		{"no jit app", "", ErrNoApp.Error()},
		{"a setting Validate refuses", `{"sync_interval": "1m", "max_staleness": "30s"}`, "max_staleness (30s) must be longer than sync_interval (1m0s)"},
		{"a role without max_duration", `{"roles": {"r": {"eligible": [{"subjects": ["alice"]}]}}}`, "role r: max_duration is required"},
		{"an unknown field", `{"isuer": "Example Corp"}`, `unknown field "isuer"`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := &caddy.Config{}
			if tt.app != "" {
				cfg.AppsRaw = caddy.ModuleMap{"jit": json.RawMessage(tt.app)}
			}
			_, err := LoadApp(cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %v, want one saying %q", err, tt.want)
			}
			if (tt.app == "") != errors.Is(err, ErrNoApp) {
				t.Errorf("error %v: ErrNoApp only for a config without a jit app", err)
			}
		})
	}
}
