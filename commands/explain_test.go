package commands

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
)

// explainCaddyfile is the config of the explain tests. 2026-11-26 is a Thursday.
const explainCaddyfile = `{
	jit {
		groups {http.request.header.Remote-Groups}
		role db-admin {
			max_duration 1h
			default_duration 15m
			max_total 4h
			eligible alice bob group:dba
			eligible grace from 2026-12-01 until 2026-12-31
			eligible henry until 2026-11-01
			eligible ivan until 2026-11-26T09:20:00Z
			approval {
				approvers carol dave group:security
				count 2
			}
			break_glass
			allowed_hours mon-fri 08:00-18:00 Europe/Paris
			allowed_hours sat 10:00-12:00
			max_active 2
		}
		role console-admin {
			max_duration 30m
			ticket "(INC|CHG)-[0-9]+"
			justification optional
			eligible alice group:ops
			allowed_hours mon-fri 08:00-18:00 Europe/Paris
			step_up webauthn
		}
		role pair {
			max_duration 1h
			eligible alice bob
			approval {
				approvers alice bob
				count 2
			}
		}
	}
}
`

func explainConfig(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "Caddyfile")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// runExplain parses args into the command's flags and runs it: exit code, stdout,
// error.
func runExplain(t *testing.T, args ...string) (int, string, error) {
	t.Helper()
	cmd := explainCommand()
	if err := cmd.ParseFlags(args); err != nil {
		t.Fatalf("flags %q: %v", args, err)
	}
	var out, errOut bytes.Buffer
	code, err := cmdExplain(&out, &errOut, caddycmd.Flags{FlagSet: cmd.Flags()})
	return code, out.String(), err
}

func TestExplainCommand(t *testing.T) {
	config := explainConfig(t, explainCaddyfile)
	const thu = "2026-11-26T09:00:00Z" // 10:00 in Paris
	const sat = "2026-11-28T20:00:00Z" // 21:00 in Paris
	tests := []struct {
		name string
		args []string
		code int
		// first is the verdict line; want are lines (or parts of lines) that follow it.
		first string
		want  []string
		not   []string
	}{
		{
			name:  "eligible by name, with approval",
			args:  []string{"alice", "db-admin", "--at", thu},
			code:  0,
			first: "alice MAY activate db-admin at 2026-11-26 09:00 UTC, with the approval of 2 of: carol, dave, group:security",
			want: []string{
				"eligibility: eligible, with no end",
				"  eligible line 1 (eligible alice bob group:dba): names alice; active, with no end (this one applies)",
				"  eligible line 2 (eligible grace from 2026-12-01 00:00 UTC until 2027-01-01 00:00 UTC): does not name alice",
				"allowed hours: inside, until Thu 2026-11-26 18:00 Europe/Paris (2026-11-26 17:00 UTC)",
				"  mon,tue,wed,thu,fri 08:00-18:00 Europe/Paris: inside (Thu 10:00 there)",
				"  sat 10:00-12:00 UTC: outside (Thu 09:00 there)",
				"approval: 2 distinct approvals of: carol, dave, group:security; one denial ends the request; undecided, it expires after 24h",
				"approval: no one approves their own request",
				"break-glass: available in an emergency: no approval, no allowed hours, a justification of at least 10 characters",
				"duration: at most 1h per session (default 15m)",
				"extension: possible, up to 4h in total from the session's start (max_total), never past the eligibility",
				"justification: required, at least 10 characters (at most 1000)",
				"ticket: not asked for",
				"max_active: at most 2 sessions of the role at once; how many are active now is not known offline (caddy jit sessions --role db-admin)",
				"step-up: a passkey of alice's or a TOTP code from their authenticator app (step_up any); whether alice is enrolled or locked out is not checked offline",
			},
			not: []string{"schedule:", "groups:"},
		},
		{
			name:  "eligible by group",
			args:  []string{"sam", "db-admin", "--at", thu, "--groups", "web, dba,security"},
			code:  0,
			first: "sam MAY activate db-admin at 2026-11-26 09:00 UTC, with the approval of 2 of: carol, dave, group:security",
			want: []string{
				"  eligible line 1 (eligible alice bob group:dba): names sam as a member of group:dba; active, with no end (this one applies)",
				"groups: web, dba, security, as given with --groups",
				"approval: sam is one of the approvers, but no one approves their own request: the approvals must come from others",
			},
		},
		{
			name:  "a group not given",
			args:  []string{"sam", "db-admin", "--at", thu},
			code:  1,
			first: "sam MAY NOT activate db-admin at 2026-11-26 09:00 UTC: sam is not eligible for the role db-admin",
			want: []string{
				"eligibility: not eligible: no eligible line names sam or a group of sam's",
				"groups: none given (--groups g1,g2), so group:dba, group:security did not match sam",
				"break-glass: offered by the role, but not to sam now: sam is not eligible for the role db-admin",
			},
		},
		{
			name:  "not eligible",
			args:  []string{"mallory", "db-admin", "--at", thu, "--groups", "web"},
			code:  1,
			first: "mallory MAY NOT activate db-admin at 2026-11-26 09:00 UTC: mallory is not eligible for the role db-admin",
			want:  []string{"  eligible line 1 (eligible alice bob group:dba): does not name mallory"},
			not:   []string{"schedule:", "this one applies"},
		},
		{
			name:  "eligibility window not yet open",
			args:  []string{"grace", "db-admin", "--at", thu},
			code:  1,
			first: "grace MAY NOT activate db-admin at 2026-11-26 09:00 UTC: grace is eligible for the role db-admin only from 2026-12-01T00:00:00Z",
			want: []string{
				"eligibility: not eligible at this time: the lines that name grace are not open",
				"  eligible line 2 (eligible grace from 2026-12-01 00:00 UTC until 2027-01-01 00:00 UTC): names grace; not yet: opens at 2026-12-01 00:00 UTC",
				"schedule: a session can be scheduled to start at 2026-12-01 07:00 UTC (Start at, at most 7 days ahead), once approved",
			},
		},
		{
			name:  "eligibility window ended",
			args:  []string{"henry", "db-admin", "--at", thu},
			code:  1,
			first: "henry MAY NOT activate db-admin at 2026-11-26 09:00 UTC: henry's eligibility for the role db-admin ended at 2026-11-02T00:00:00Z",
			want:  []string{"  eligible line 3 (eligible henry until 2026-11-02 00:00 UTC): names henry; ended at 2026-11-02 00:00 UTC"},
			not:   []string{"schedule:"},
		},
		{
			name:  "eligibility ends before max_duration",
			args:  []string{"ivan", "db-admin", "--at", thu},
			code:  0,
			first: "ivan MAY activate db-admin at 2026-11-26 09:00 UTC, with the approval of 2 of: carol, dave, group:security",
			want: []string{
				"eligibility: eligible until 2026-11-26 09:20 UTC",
				"  eligible line 4 (eligible ivan until 2026-11-26 09:20 UTC): names ivan; active until 2026-11-26 09:20 UTC (this one applies)",
				"duration: a session started at 2026-11-26 09:00 UTC ends by 2026-11-26 09:20 UTC, when ivan's eligibility ends: at most 20m",
			},
		},
		{
			name:  "outside allowed hours, no break-glass",
			args:  []string{"alice", "console-admin", "--at", sat},
			code:  1,
			first: "alice MAY NOT activate console-admin at 2026-11-28 20:00 UTC: the role console-admin can be activated only during its allowed hours (mon,tue,wed,thu,fri 08:00-18:00 Europe/Paris)",
			want: []string{
				"allowed hours: outside; the next window opens Mon 2026-11-30 08:00 Europe/Paris (2026-11-30 07:00 UTC): mon,tue,wed,thu,fri 08:00-18:00 Europe/Paris",
				"  mon,tue,wed,thu,fri 08:00-18:00 Europe/Paris: outside (Sat 21:00 there)",
				"schedule: a session can be scheduled to start at 2026-11-30 07:00 UTC (Start at, at most 7 days ahead)",
				"break-glass: not offered by this role",
				"approval: not needed",
			},
		},
		{
			name:  "outside allowed hours, break-glass available",
			args:  []string{"alice", "db-admin", "--at", sat},
			code:  1,
			first: "alice MAY NOT activate db-admin at 2026-11-28 20:00 UTC, except by break-glass in an emergency: it is outside the role's allowed hours",
			want: []string{
				"allowed hours: outside; the next window opens Mon 2026-11-30 08:00 Europe/Paris (2026-11-30 07:00 UTC): mon,tue,wed,thu,fri 08:00-18:00 Europe/Paris",
				"break-glass: available in an emergency",
			},
		},
		{
			name:  "outside allowed hours, the next window in UTC",
			args:  []string{"alice", "db-admin", "--at", "2026-11-28T09:30:00Z"},
			code:  1,
			first: "alice MAY NOT activate db-admin at 2026-11-28 09:30 UTC, except by break-glass in an emergency: it is outside the role's allowed hours",
			want:  []string{"allowed hours: outside; the next window opens Sat 2026-11-28 10:00 UTC: sat 10:00-12:00 UTC"},
		},
		{
			name:  "at once, ticket required, a date as --at",
			args:  []string{"alice", "console-admin", "--at", "2026-11-26"},
			code:  1,
			first: "alice MAY NOT activate console-admin at 2026-11-26 00:00 UTC: the role console-admin can be activated only during its allowed hours (mon,tue,wed,thu,fri 08:00-18:00 Europe/Paris)",
			want: []string{
				"allowed hours: outside; the next window opens Thu 2026-11-26 08:00 Europe/Paris (2026-11-26 07:00 UTC)",
				"ticket: required, matching (INC|CHG)-[0-9]+ in full",
				"justification: optional (at most 1000 characters)",
			},
		},
		{
			name:  "at once",
			args:  []string{"alice", "console-admin", "--at", "2026-11-26T10:00:00+01:00"},
			code:  0,
			first: "alice MAY activate console-admin at 2026-11-26 09:00 UTC",
			want: []string{
				"ticket: required, matching (INC|CHG)-[0-9]+ in full",
				"max_active: no limit",
				"extension: not possible (no max_total longer than max_duration)",
				"step-up: a passkey or security key of alice's (step_up webauthn); a TOTP code is refused; whether alice has one registered or is locked out is not checked offline",
			},
		},
		{
			name:  "approval that cannot be given",
			args:  []string{"alice", "pair", "--at", thu},
			code:  1,
			first: "alice MAY NOT activate pair at 2026-11-26 09:00 UTC: no request of alice's can be approved: the role needs 2 approvals, and the approvers other than alice are 1 (bob); no one approves their own request",
			want: []string{
				"allowed hours: none set: any time",
				"approval: alice is one of the approvers, but no one approves their own request: the approvals must come from others",
				"approval: cannot be given: 2 needed, and the approvers other than alice are 1 (bob)",
			},
		},
		{
			name:  "control characters in the user",
			args:  []string{"mal\x1b[31mory", "pair", "--at", thu},
			code:  1,
			first: "mal?[31mory MAY NOT activate pair at 2026-11-26 09:00 UTC: mal?[31mory is not eligible for the role pair",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, err := runExplain(t, append([]string{"--config", config}, tt.args...)...)
			if code != tt.code || (err != nil) != (code != 0) {
				t.Fatalf("exit %d (%v), want %d\n%s", code, err, tt.code, out)
			}
			lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
			if lines[0] != tt.first {
				t.Errorf("verdict\n%s\nwant\n%s", lines[0], tt.first)
			}
			for _, w := range tt.want {
				found := false
				for _, l := range lines[1:] {
					if strings.HasPrefix(l, w) {
						found = true
					}
				}
				if !found {
					t.Errorf("no line starts with %q:\n%s", w, out)
				}
			}
			for _, n := range tt.not {
				if strings.Contains(out, n) {
					t.Errorf("output has %q:\n%s", n, out)
				}
			}
			if strings.ContainsAny(out, "\x1b\x07") {
				t.Errorf("control characters in the output: %q", out)
			}
		})
	}
}

func TestExplainCommandNoGroupsPlaceholder(t *testing.T) {
	config := explainConfig(t, `{
	jit {
		role ops {
			max_duration 1h
			eligible group:ops
		}
	}
}
`)
	code, out, err := runExplain(t, "--config", config, "sam", "ops", "--groups", "ops", "--at", "2026-11-26T09:00:00Z")
	if code != 0 || err != nil {
		t.Fatalf("exit %d (%v)\n%s", code, err, out)
	}
	if !strings.Contains(out, "\ngroups: the config sets no `groups` placeholder, so at run time caddy-jit sees no groups and group:NAME subjects match no one\n") {
		t.Errorf("no warning about the groups placeholder:\n%s", out)
	}
}

func TestExplainCommandJSON(t *testing.T) {
	config := explainConfig(t, explainCaddyfile)
	code, out, err := runExplain(t, "--config", config, "alice", "db-admin", "--at", "2026-11-28T20:00:00Z", "--json")
	if code != 1 || err == nil || err.Error() != "alice may activate db-admin only by break-glass" {
		t.Fatalf("exit %d (%v)", code, err)
	}
	var x struct {
		User        string                `json:"user"`
		Role        string                `json:"role"`
		Verdict     string                `json:"verdict"`
		Reason      string                `json:"reason"`
		ScheduleAt  string                `json:"schedule_at"`
		BreakGlass  struct{ Usable bool } `json:"break_glass"`
		Eligibility struct {
			Eligible bool
			Grants   []struct {
				Covers  bool
				By      string
				State   string
				Applies bool
			}
		}
		Hours struct {
			Within     bool
			NextOpen   string `json:"next_open"`
			NextWindow string `json:"next_window"`
		} `json:"allowed_hours"`
		Duration struct{ Max, Longest string }
		Approval struct {
			Count     int
			Approvers []string
			Expires   string
		}
	}
	if err := json.Unmarshal([]byte(out), &x); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if x.User != "alice" || x.Role != "db-admin" || x.Verdict != "break_glass_only" || x.Reason != "outside_allowed_hours" ||
		!x.BreakGlass.Usable || !x.Eligibility.Eligible || !x.Eligibility.Grants[0].Applies || x.Eligibility.Grants[0].By != "alice" ||
		x.Eligibility.Grants[1].State != "not_yet_open" || x.Hours.Within || x.Hours.NextOpen != "2026-11-30T08:00:00+01:00" ||
		x.ScheduleAt != "2026-11-30T07:00:00Z" || x.Duration.Max != "1h" || x.Approval.Count != 2 || x.Approval.Expires != "24h" {
		t.Errorf("JSON %+v\n%s", x, out)
	}
}

func TestExplainCommandNow(t *testing.T) {
	saved := now
	t.Cleanup(func() { now = saved })
	now = func() time.Time { return time.Date(2026, 11, 28, 20, 0, 0, 0, time.FixedZone("X", 3600)) }
	config := explainConfig(t, explainCaddyfile)
	_, out, _ := runExplain(t, "--config", config, "alice", "db-admin")
	if !strings.HasPrefix(out, "alice MAY NOT activate db-admin at 2026-11-28 19:00 UTC, except by break-glass") {
		t.Errorf("not asked about now:\n%s", out)
	}
}

func TestExplainCommandErrors(t *testing.T) {
	config := explainConfig(t, explainCaddyfile)
	noJit := explainConfig(t, ":8080 {\n\trespond ok\n}\n")
	broken := explainConfig(t, "{\n\tjit {\n\t\trole x {\n\t\t\tmax_duration 1h\n\t\t}\n\t}\n}\n")
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"unknown role", []string{"--config", config, "alice", "db-admn"},
			`unknown role "db-admn": declared roles are console-admin, db-admin, pair, in ` + config},
		{"bad --at", []string{"--config", config, "alice", "db-admin", "--at", "tomorrow"},
			`--at "tomorrow": want an RFC 3339 time such as 2026-11-26T09:00:00Z or 2026-11-26T10:00:00+01:00, or a date such as 2026-11-26 (its start, in UTC)`},
		{"bad --at, time without zone", []string{"--config", config, "alice", "db-admin", "--at", "2026-11-26T09:00:00"}, `--at "2026-11-26T09:00:00": want`},
		{"no role", []string{"--config", config, "alice"}, "want a user and a role, got 1 arguments"},
		{"too many", []string{"--config", config, "alice", "db-admin", "extra"}, "want a user and a role, got 3 arguments"},
		{"no config", []string{"alice", "db-admin"}, "--config is required"},
		{"adapter without config", []string{"--adapter", "caddyfile", "alice", "db-admin"}, "--config is required"},
		{"missing config", []string{"--config", filepath.Join(t.TempDir(), "Caddyfile"), "alice", "db-admin"}, "loading "},
		{"no jit app", []string{"--config", noJit, "alice", "db-admin"}, "has no jit app"},
		{"a config that does not load", []string{"--config", broken, "alice", "x"}, "loading "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, err := runExplain(t, tt.args...)
			if code != explainExitError || err == nil {
				t.Fatalf("exit %d (%v), want 2\n%s", code, err, out)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q, want %q", err, tt.want)
			}
			if out != "" {
				t.Errorf("output on error: %s", out)
			}
		})
	}
}

// TestExplainCommandThroughCobra runs explain as Caddy does: registered under jit,
// with its exit codes.
func TestExplainCommandThroughCobra(t *testing.T) {
	config := explainConfig(t, explainCaddyfile)
	exitCode := func(err error) int {
		if err == nil {
			return 0
		}
		// caddycmd's exitError carries codes above 1; any other error exits 1.
		if v := reflect.ValueOf(err); v.Kind() == reflect.Pointer && v.Elem().Kind() == reflect.Struct {
			if f := v.Elem().FieldByName("ExitCode"); f.IsValid() {
				return int(f.Int())
			}
		}
		return 1
	}
	tests := []struct {
		args []string
		code int
		out  string
	}{
		{[]string{"alice", "db-admin", "--at", "2026-11-26T09:00:00Z"}, 0, "alice MAY activate db-admin"},
		{[]string{"alice", "db-admin", "--at", "2026-11-28T20:00:00Z"}, 1, "except by break-glass"},
		{[]string{"mallory", "db-admin", "--at", "2026-11-26T09:00:00Z"}, 1, "mallory MAY NOT activate"},
		{[]string{"alice", "nope"}, 2, ""},
		{[]string{"alice", "db-admin", "--at", "x"}, 2, ""},
		{[]string{"alice", "db-admin", "--no-such-flag"}, 2, ""},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			out, _, err := runJitStreams(t, append([]string{"explain", "--config", config}, tt.args...)...)
			if got := exitCode(err); got != tt.code {
				t.Fatalf("exit %d, want %d (%v)\n%s", got, tt.code, err, out)
			}
			if !strings.Contains(out, tt.out) {
				t.Errorf("output lacks %q:\n%s", tt.out, out)
			}
		})
	}
}

// `caddy jit explain` answers for the user the gate would see: ALICE is alice when
// names are case-insensitive, and not otherwise.
func TestExplainUsesCanonicalNames(t *testing.T) {
	const roles = `
		role deploy {
			max_duration 1h
			eligible Alice group:Ops
		}
	}
}
`
	tests := []struct {
		option, user, groups string
		code                 int
		first                string
	}{
		{"user_names case_insensitive", "ALICE", "", explainExitMay, "alice MAY activate deploy"},
		{"user_names case_insensitive", "sam", "OPS", explainExitMay, "sam MAY activate deploy"},
		{"", "ALICE", "", explainExitMayNot, "ALICE MAY NOT activate deploy"},
		{"", "Alice", "", explainExitMay, "Alice MAY activate deploy"},
		{"", "sam", "ops", explainExitMayNot, "sam MAY NOT activate deploy"},
	}
	for _, tt := range tests {
		config := explainConfig(t, "{\n\tjit {\n\t\t"+tt.option+roles)
		args := []string{"--config", config, "--at", "2026-11-26T09:00:00Z", tt.user, "deploy"}
		if tt.groups != "" {
			args = append(args, "--groups", tt.groups)
		}
		code, out, _ := runExplain(t, args...)
		if code != tt.code || !strings.HasPrefix(out, tt.first) {
			t.Errorf("%q: explain %s (groups %q) = exit %d, %q; want exit %d, starting %q", tt.option, tt.user, tt.groups, code, firstLine(out), tt.code, tt.first)
		}
	}
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}
