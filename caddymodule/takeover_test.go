package caddymodule

import (
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/caddy-jit/caddy-jit/internal/testkit"
)

// Caddy's orders of Start and Stop over two configs that share one state: what each
// leaves in force, and where the audit events go.
func TestTakeoverFollowsTheConfigThatRuns(t *testing.T) {
	tests := []struct {
		name string
		// steps run in order: "A+" starts A, "B-" stops B.
		steps      []string
		wantApp    string // "" for none
		wantOutput string // whose output the next event reaches
	}{
		{"A runs", []string{"A+"}, "A", "A"},
		{"a reload to B", []string{"A+", "B+", "A-"}, "B", "B"},
		{"a reload to B, then shutdown", []string{"A+", "B+", "A-", "B-"}, "", "B"},
		{"B's start failed after B's jit app started", []string{"A+", "B+", "B-"}, "A", "A"},
		{"B failed to start, then a reload to C", []string{"A+", "B+", "B-", "C+", "A-"}, "C", "C"},
		{"B failed to start, then shutdown", []string{"A+", "B+", "B-", "A-"}, "", "A"},
		{"two reloads", []string{"A+", "B+", "A-", "C+", "B-"}, "C", "C"},
		{"a reload to B, then C's start failed", []string{"A+", "B+", "A-", "C+", "C-"}, "B", "B"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := newGate(t, gateOptions{recordBodies: 16})
			shared, authority := g.h.app.shared, g.h.app.authority
			apps := map[string]*App{}
			outputs := map[string]*testkit.SyncBuffer{}
			for _, name := range []string{"A", "B", "C"} {
				outputs[name] = &testkit.SyncBuffer{}
				apps[name] = &App{shared: shared, authority: authority, logger: zap.NewNop(), start: newStartGate(),
					auditOut: outputs[name], auditErrors: &auditErrorSink{logger: zap.NewNop()},
					run: &appRun{settings: &syncSettings{interval: time.Hour, authority: authority}}}
			}
			currentApp.Store(nil)
			t.Cleanup(func() {
				currentApp.Store(nil)
				shared.state.Chain.Unbatch(time.Now())
			})
			for _, step := range tt.steps {
				a := apps[step[:1]]
				var err error
				if step[1] == '+' {
					err = a.Start()
				} else {
					err = a.Stop()
				}
				if err != nil {
					t.Fatalf("%s: %v", step, err)
				}
			}

			got := ""
			for name, a := range apps {
				if currentApp.Load() == a {
					got = name
				}
			}
			if got != tt.wantApp {
				t.Errorf("the admin API talks to %q, want %q", got, tt.wantApp)
			}
			wantSettings := apps[tt.wantOutput].run.settings
			if shared.settings.Load() != wantSettings {
				t.Errorf("the sync loop's settings are not %s's", tt.wantOutput)
			}
			authority.Audit.Event("takeover_probe")
			shared.state.Chain.Flush()
			for name, out := range outputs {
				reached := strings.Contains(out.String(), "takeover_probe")
				if reached != (name == tt.wantOutput) {
					t.Errorf("%s's audit output has the event: %v, want it in %s's only", name, reached, tt.wantOutput)
				}
			}
			// No app keeps another alive once that one stopped.
			for name, a := range apps {
				if before := a.run.before.Load(); before != nil && before.run.stopped.Load() {
					t.Errorf("%s still holds a stopped app to fall back on", name)
				}
			}
		})
	}
}
