package caddymodule

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
)

const workflowGlobal = `{
	jit {
		notify webhook https://hooks.example.test/all s3cret
		notify webhook https://hooks.slack.test/T000/B000/Z9k2 {
			format slack
		}
		notify email sec@example.test "Ops <ops@example.test>"
		smtp {
			address mail.example.test:587
			from jit@example.test
			username jit
			password hunter2
		}
		role db-admin {
			max_duration 1h
			max_total 4h
			eligible alice bob
			approval {
				approvers carol dave group:sec
				count 2
				expires 2h
			}
			break_glass
			allowed_hours mon-fri 08:00-18:00 Europe/Paris
			allowed_hours sat 10:00-12:00
			max_active 2
			notify webhook https://hooks.example.test/db
		}
	}
}
http://example.com {
	jit db-admin
}
`

func TestCaddyfileWorkflowSettingsAdapt(t *testing.T) {
	cfg, err := adapt(t, workflowGlobal)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := json.Marshal(cfg["apps"].(map[string]any)["jit"])
	var app App
	if err := json.Unmarshal(raw, &app); err != nil {
		t.Fatal(err)
	}
	role := app.Roles["db-admin"]
	switch {
	case role.Approval == nil || strings.Join(role.Approval.Approvers, " ") != "carol dave group:sec" || role.Approval.Count != 2 || time.Duration(role.Approval.Expires) != 2*time.Hour:
		t.Errorf("approval = %+v", role.Approval)
	case !role.BreakGlass || time.Duration(role.MaxTotal) != 4*time.Hour || role.MaxActive != 2:
		t.Errorf("break_glass %v, max_total %v, max_active %d", role.BreakGlass, role.MaxTotal, role.MaxActive)
	case strings.Join(role.AllowedHours, "|") != "mon-fri 08:00-18:00 Europe/Paris|sat 10:00-12:00":
		t.Errorf("allowed_hours = %q", role.AllowedHours)
	case len(role.Notify) != 1 || role.Notify[0].Webhook != "https://hooks.example.test/db":
		t.Errorf("role notify = %+v", role.Notify)
	case len(app.Notify) != 3 || app.Notify[0].Secret != "s3cret" || app.Notify[1].Format != "slack" || len(app.Notify[2].Email) != 2:
		t.Errorf("global notify = %+v", app.Notify)
	case app.SMTP == nil || app.SMTP.Address != "mail.example.test:587" || app.SMTP.Username != "jit":
		t.Errorf("smtp = %+v", app.SMTP)
	}
	built, err := role.build("db-admin")
	if err != nil {
		t.Fatal(err)
	}
	if !built.NeedsApproval() || built.Approval.Count != 2 || len(built.AllowedHours) != 2 || built.AllowedHours[0].Location.String() != "Europe/Paris" {
		t.Errorf("built role = %+v", built)
	}
	// Tuesday 2026-12-01 07:30 UTC is 08:30 in Paris: inside; 17:30 UTC is 18:30: outside.
	if !built.WithinHours(time.Date(2026, 12, 1, 7, 30, 0, 0, time.UTC)) || built.WithinHours(time.Date(2026, 12, 1, 17, 30, 0, 0, time.UTC)) {
		t.Error("allowed_hours are not read in their time zone")
	}
}

func TestCaddyfileWorkflowMistakesFailWithLineAndFix(t *testing.T) {
	role := func(lines string) string {
		return "{\n\tjit {\n\t\trole db-admin {\n\t\t\tmax_duration 1h\n\t\t\teligible alice\n" + lines + "\t\t}\n\t}\n}\nhttp://example.com {\n\tjit db-admin\n}\n"
	}
	global := func(lines string) string {
		return "{\n\tjit {\n" + lines + "\t\trole db-admin {\n\t\t\tmax_duration 1h\n\t\t\teligible alice\n\t\t}\n\t}\n}\nhttp://example.com {\n\tjit db-admin\n}\n"
	}
	tests := []struct {
		name, src, wantLine, wantText string
	}{
		{"approval without approvers", role("\t\t\tapproval {\n\t\t\t\tcount 1\n\t\t\t}\n"), "Caddyfile:", "approval names no approvers"},
		{"approval count too high", role("\t\t\tapproval {\n\t\t\t\tapprovers carol\n\t\t\t\tcount 11\n\t\t\t}\n"), "Caddyfile:8", "approval count"},
		{"more approvals than approvers", role("\t\t\tapproval {\n\t\t\t\tapprovers carol dave\n\t\t\t\tcount 3\n\t\t\t}\n"), "Caddyfile:", "only 2 approvers"},
		{"unknown approval setting", role("\t\t\tapproval {\n\t\t\t\tapprover carol\n\t\t\t}\n"), "Caddyfile:7", `unrecognized approval setting "approver"`},
		{"approval with args", role("\t\t\tapproval carol\n"), "Caddyfile:6", "approval takes a block"},
		{"break_glass with an argument", role("\t\t\tbreak_glass yes\n"), "Caddyfile:6", "wrong argument count"},
		{"bad hours", role("\t\t\tallowed_hours mon-fri 8-18\n"), "Caddyfile:6", "want HH:MM-HH:MM"},
		{"bad days", role("\t\t\tallowed_hours weekdays 08:00-18:00\n"), "Caddyfile:6", `days "weekdays"`},
		{"bad zone", role("\t\t\tallowed_hours daily 08:00-18:00 Mars/Olympus\n"), "Caddyfile:6", `time zone "Mars/Olympus"`},
		{"hours from 24:00", role("\t\t\tallowed_hours daily 24:00-06:00\n"), "Caddyfile:6", "want HH:MM-HH:MM"},
		{"max_active zero", role("\t\t\tmax_active 0\n"), "Caddyfile:6", "max_active"},
		{"max_total below max_duration", role("\t\t\tmax_total 30m\n"), "Caddyfile:", "max_total 30m0s is shorter than max_duration"},
		{"webhook not a URL", role("\t\t\tnotify webhook hooks.example.test/x\n"), "Caddyfile:6", "want an absolute http:// or https:// URL"},
		{"unknown notify kind", role("\t\t\tnotify pager 123\n"), "Caddyfile:6", `notify kind "pager"`},
		{"bad email", global("\t\tsmtp {\n\t\t\taddress mail.example.test:25\n\t\t\tfrom jit@example.test\n\t\t}\n\t\tnotify email not-an-address\n"), "Caddyfile:7", "is not an e-mail address"},
		{"email without smtp", global("\t\tnotify email sec@example.test\n"), "Caddyfile:", "notify email needs a mail server"},
		{"smtp without port", global("\t\tsmtp {\n\t\t\taddress mail.example.test\n\t\t\tfrom jit@example.test\n\t\t}\n"), "Caddyfile:", "want host:port"},
		{"smtp bad tls", global("\t\tsmtp {\n\t\t\taddress mail.example.test:25\n\t\t\tfrom jit@example.test\n\t\t\ttls maybe\n\t\t}\n"), "Caddyfile:", `smtp tls "maybe"`},
		{"smtp username without password", global("\t\tsmtp {\n\t\t\taddress mail.example.test:25\n\t\t\tfrom jit@example.test\n\t\t\tusername u\n\t\t}\n"), "Caddyfile:", "username and password go together"},
		{"webhook bad format", global("\t\tnotify webhook https://h.example.test/ {\n\t\t\tformat xml\n\t\t}\n"), "Caddyfile:", `format "xml"`},
		{"record_bodies zero", role("\t\t\trecord_bodies 0\n"), "Caddyfile:6", `record_bodies "0"`},
		{"record_bodies too big", role("\t\t\trecord_bodies 20MiB\n"), "Caddyfile:6", "from 1B to 10MiB"},
		{"record_bodies two sizes", role("\t\t\trecord_bodies 1KiB 2KiB\n"), "Caddyfile:6", "wrong argument count"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := adapt(t, tt.src)
			if err == nil {
				t.Fatal("the Caddyfile was accepted")
			}
			if !strings.Contains(err.Error(), tt.wantLine) || !strings.Contains(err.Error(), tt.wantText) {
				t.Errorf("error %q should name %s and say %q", err, tt.wantLine, tt.wantText)
			}
		})
	}
}

func TestWorkflowJSONConfigRefusedLikeTheCaddyfile(t *testing.T) {
	base := func() RoleConfig {
		return RoleConfig{MaxDuration: caddyDuration(time.Hour), Eligible: []EligibleConfig{{Subjects: []string{"a"}}}}
	}
	tests := []struct {
		name   string
		change func(*RoleConfig)
		want   string
	}{
		{"approvers with control characters", func(rc *RoleConfig) { rc.Approval = &ApprovalConfig{Approvers: []string{"a\nb"}} }, "not a user name"},
		{"negative approval expiry", func(rc *RoleConfig) {
			rc.Approval = &ApprovalConfig{Approvers: []string{"c"}, Expires: caddyDuration(-time.Hour)}
		}, "must be positive"},
		{"negative max_active", func(rc *RoleConfig) { rc.MaxActive = -1 }, "must not be negative"},
		{"bad hours", func(rc *RoleConfig) { rc.AllowedHours = []string{"mon 9-5"} }, "allowed_hours"},
		{"webhook and email at once", func(rc *RoleConfig) {
			rc.Notify = []NotifyConfig{{Webhook: "https://h.example.test/", Email: []string{"a@example.test"}}}
		}, "not both"},
		{"empty notify", func(rc *RoleConfig) { rc.Notify = []NotifyConfig{{}} }, "names no target"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rc := base()
			tt.change(&rc)
			if _, err := rc.build("role"); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v, want an error saying %q", err, tt.want)
			}
		})
	}
}

func TestParseHoursWindows(t *testing.T) {
	tests := []struct {
		in       string
		wantDays string
		from, to int
	}{
		{"daily 00:00-24:00", "0123456", 0, 24 * 60},
		{"mon-fri 08:00-18:00", "12345", 8 * 60, 18 * 60},
		{"fri-mon 22:00-06:00", "0156", 22 * 60, 6 * 60},
		{"sat,sun 10:30-12:15 UTC", "06", 10*60 + 30, 12*60 + 15},
		{"MON,wed-thu 09:00-17:00", "134", 9 * 60, 17 * 60},
	}
	for _, tt := range tests {
		w, err := parseHours(strings.Fields(tt.in))
		if err != nil {
			t.Errorf("%q: %v", tt.in, err)
			continue
		}
		var days strings.Builder
		for d, on := range w.Days {
			if on {
				days.WriteByte(byte('0' + d))
			}
		}
		if days.String() != tt.wantDays || w.From != tt.from || w.To != tt.to {
			t.Errorf("%q: days %s %d-%d, want %s %d-%d", tt.in, days.String(), w.From, w.To, tt.wantDays, tt.from, tt.to)
		}
	}
}

func caddyDuration(d time.Duration) caddy.Duration { return caddy.Duration(d) }

func TestCaddyfileRecordBodies(t *testing.T) {
	for src, want := range map[string]int64{"record_bodies": DefaultRecordBodies, "record_bodies 16B": 16, "record_bodies 1MiB": 1 << 20} {
		cfg, err := adapt(t, "{\n\tjit {\n\t\trole r {\n\t\t\tmax_duration 1h\n\t\t\teligible a\n\t\t\t"+src+"\n\t\t}\n\t}\n}\nhttp://example.com {\n\tjit r\n}\n")
		if err != nil {
			t.Fatalf("%s: %v", src, err)
		}
		raw, _ := json.Marshal(cfg["apps"].(map[string]any)["jit"])
		var app App
		if err := json.Unmarshal(raw, &app); err != nil {
			t.Fatal(err)
		}
		role, err := app.Roles["r"].build("r")
		if err != nil || role.RecordBodies != want {
			t.Errorf("%s: RecordBodies %d (%v), want %d", src, role.RecordBodies, err, want)
		}
	}
}
