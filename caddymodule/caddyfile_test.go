package caddymodule

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	_ "github.com/caddyserver/caddy/v2/modules/standard"
)

func adapt(t *testing.T, src string) (map[string]any, error) {
	t.Helper()
	return adaptForFuzz(src)
}

func adaptForFuzz(src string) (map[string]any, error) {
	out, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(src), map[string]any{"filename": "Caddyfile"})
	if err != nil {
		return nil, err
	}
	var cfg map[string]any
	if err := json.Unmarshal(out, &cfg); err != nil {
		return nil, err
	}
	return cfg, nil
}

const validGlobal = `{
	jit {
		issuer "Example Corp"
		rp_id example.com
		identity {http.request.header.X-Remote-User}
		groups {http.request.header.X-Remote-Groups}
		sync_interval 2s
		lockout {
			max_failures 3
			duration 30m
		}
		role db-admin {
			max_duration 2h
			default_duration 30m
			justification required 20
			ticket "INC-[0-9]+"
			eligible alice group:dba
			eligible bob from 2026-01-01 until 2026-12-31
			step_up webauthn
		}
		role viewer {
			max_duration 8h
			justification optional
			eligible carol until 2027-01-01T12:00:00Z
		}
	}
}
`

func TestCaddyfileAdaptsToTheJitAppAndHandler(t *testing.T) {
	cfg, err := adapt(t, validGlobal+`
http://example.com {
	@admin path /admin*
	jit @admin db-admin viewer
	respond ok
}
`)
	if err != nil {
		t.Fatal(err)
	}
	app, _ := json.Marshal(cfg["apps"].(map[string]any)["jit"])
	want := `{"groups":"{http.request.header.X-Remote-Groups}","identity":"{http.request.header.X-Remote-User}","issuer":"Example Corp",` +
		`"lockout":{"duration":1800000000000,"max_failures":3},"roles":{"db-admin":{"default_duration":1800000000000,` +
		`"eligible":[{"subjects":["alice","group:dba"]},{"from":"2026-01-01","subjects":["bob"],"until":"2026-12-31"}],` +
		`"justification":{"min_length":20},"max_duration":7200000000000,"step_up":"webauthn","ticket":"INC-[0-9]+"},` +
		`"viewer":{"eligible":[{"subjects":["carol"],"until":"2027-01-01T12:00:00Z"}],"justification":{"optional":true},"max_duration":28800000000000}},` +
		`"rp_id":"example.com","sync_interval":2000000000}`
	if string(app) != want {
		t.Errorf("jit app:\n got %s\nwant %s", app, want)
	}

	server, _ := json.Marshal(cfg["apps"].(map[string]any)["http"])
	route := `{"handle":[{"handler":"jit","roles":["db-admin","viewer"]}],"match":[{"path":["/admin*"]},{"path":["/.jit/*"]}]}`
	if !strings.Contains(string(server), route) {
		t.Errorf("the jit route should match the operator's matcher or /.jit/*; http app:\n%s", server)
	}
}

func TestCaddyfileOrdersJitAfterForwardAuthWithoutAnOrderLine(t *testing.T) {
	cfg, err := adapt(t, validGlobal+`
http://example.com {
	reverse_proxy 127.0.0.1:9
	jit viewer
	basic_auth {
		alice $2a$04$abcdefghijklmnopqrstuuJ6ZDxBz3pXNiyJHbRtj2lCB2J7Ahbs6
	}
}
`)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := json.Marshal(cfg)
	s := string(raw)
	auth, jit, proxy := strings.Index(s, `"authentication"`), strings.Index(s, `"handler":"jit"`), strings.Index(s, `"reverse_proxy"`)
	if auth < 0 || jit < 0 || proxy < 0 || !(auth < jit && jit < proxy) {
		t.Errorf("want basic_auth, then jit, then reverse_proxy; got positions %d, %d, %d in\n%s", auth, jit, proxy, s)
	}
}

func TestCaddyfileMistakesFailWithFileLineAndWhatToFix(t *testing.T) {
	site := "\nhttp://example.com {\n\tjit db-admin\n}\n"
	tests := []struct {
		name, src, wantLine, wantText string
	}{
		{"unknown option", "{\n\tjit {\n\t\tissuer x\n\t\tfrobnicate 1\n\t}\n}" + site, "Caddyfile:4", `unrecognized jit option "frobnicate"`},
		{"unknown role setting", "{\n\tjit {\n\t\trole db-admin {\n\t\t\tmax_duration 1h\n\t\t\teligible alice\n\t\t\tmax_duratoin 2h\n\t\t}\n\t}\n}" + site, "Caddyfile:6", `unrecognized role setting "max_duratoin"`},
		{"unknown lockout setting", "{\n\tjit {\n\t\tlockout {\n\t\t\tattempts 3\n\t\t}\n\t\trole db-admin {\n\t\t\tmax_duration 1h\n\t\t\teligible alice\n\t\t}\n\t}\n}" + site, "Caddyfile:4", `unrecognized lockout setting "attempts"`},
		{"bad duration", "{\n\tjit {\n\t\trole db-admin {\n\t\t\tmax_duration forever\n\t\t\teligible alice\n\t\t}\n\t}\n}" + site, "Caddyfile:4", `max_duration "forever": want a positive duration`},
		{"negative duration", "{\n\tjit {\n\t\trole db-admin {\n\t\t\tmax_duration -1h\n\t\t\teligible alice\n\t\t}\n\t}\n}" + site, "Caddyfile:4", `max_duration "-1h": want a positive duration`},
		{"default longer than max", "{\n\tjit {\n\t\trole db-admin {\n\t\t\tmax_duration 1h\n\t\t\tdefault_duration 2h\n\t\t\teligible alice\n\t\t}\n\t}\n}" + site, "Caddyfile:", "default_duration 2h0m0s is longer than max_duration 1h0m0s"},
		{"bad regex", "{\n\tjit {\n\t\trole db-admin {\n\t\t\tmax_duration 1h\n\t\t\tticket INC-[0-9\n\t\t\teligible alice\n\t\t}\n\t}\n}" + site, "Caddyfile:5", "not a valid regular expression"},
		{"bad date", "{\n\tjit {\n\t\trole db-admin {\n\t\t\tmax_duration 1h\n\t\t\teligible alice until 31/12/2026\n\t\t}\n\t}\n}" + site, "Caddyfile:5", "neither a date (2026-12-31) nor an RFC 3339 time"},
		{"from after until", "{\n\tjit {\n\t\trole db-admin {\n\t\t\tmax_duration 1h\n\t\t\teligible alice from 2027-01-01 until 2026-01-01\n\t\t}\n\t}\n}" + site, "Caddyfile:5", "is not before until"},
		{"date without keyword value", "{\n\tjit {\n\t\trole db-admin {\n\t\t\tmax_duration 1h\n\t\t\teligible alice until\n\t\t}\n\t}\n}" + site, "Caddyfile:5", "until needs a date"},
		{"no max_duration", "{\n\tjit {\n\t\trole db-admin {\n\t\t\teligible alice\n\t\t}\n\t}\n}" + site, "Caddyfile:", "no max_duration"},
		{"no eligible", "{\n\tjit {\n\t\trole db-admin {\n\t\t\tmax_duration 1h\n\t\t}\n\t}\n}" + site, "Caddyfile:", "no one is eligible"},
		{"bad justification", "{\n\tjit {\n\t\trole db-admin {\n\t\t\tmax_duration 1h\n\t\t\tjustification maybe\n\t\t\teligible alice\n\t\t}\n\t}\n}" + site, "Caddyfile:5", "justification takes"},
		{"duplicate role", "{\n\tjit {\n\t\trole db-admin {\n\t\t\tmax_duration 1h\n\t\t\teligible alice\n\t\t}\n\t\trole db-admin {\n\t\t\tmax_duration 1h\n\t\t\teligible alice\n\t\t}\n\t}\n}" + site, "Caddyfile:7", "declared twice"},
		{"unknown role in site", "{\n\tjit {\n\t\trole db-admin {\n\t\t\tmax_duration 1h\n\t\t\teligible alice\n\t\t}\n\t}\n}\nhttp://example.com {\n\tjit db-admn\n}\n", "Caddyfile:10", `unknown role "db-admn": declared roles are db-admin`},
		{"site without global option", "http://example.com {\n\tjit db-admin\n}\n", "Caddyfile:2", "no role is declared"},
		{"directive without role", "{\n\tjit {\n\t\trole db-admin {\n\t\t\tmax_duration 1h\n\t\t\teligible alice\n\t\t}\n\t}\n}\nhttp://example.com {\n\tjit\n}\n", "Caddyfile:10", "at least one role"},
		{"directive with unknown subdirective", "{\n\tjit {\n\t\trole db-admin {\n\t\t\tmax_duration 1h\n\t\t\teligible alice\n\t\t}\n\t}\n}\nhttp://example.com {\n\tjit db-admin {\n\t\tfoo\n\t}\n}\n", "Caddyfile:11", `unrecognized jit subdirective "foo"`},
		{"audience not an origin", "{\n\tjit {\n\t\trole db-admin {\n\t\t\tmax_duration 1h\n\t\t\teligible alice\n\t\t}\n\t}\n}\nhttp://example.com {\n\tjit db-admin {\n\t\taudience https://example.com/admin\n\t}\n}\n", "Caddyfile:11", "is not an origin"},
		{"assertion with two audiences", "{\n\tjit {\n\t\trole db-admin {\n\t\t\tmax_duration 1h\n\t\t\teligible alice\n\t\t}\n\t}\n}\nhttp://example.com {\n\tjit db-admin {\n\t\tassertion https://a.internal https://b.internal\n\t}\n}\n", "Caddyfile:11", "wrong argument count"},
		{"bad role name", "{\n\tjit {\n\t\trole ../etc {\n\t\t\tmax_duration 1h\n\t\t\teligible alice\n\t\t}\n\t}\n}" + site, "Caddyfile:3", "role name"},
		{"bad step_up", "{\n\tjit {\n\t\trole db-admin {\n\t\t\tmax_duration 1h\n\t\t\teligible alice\n\t\t\tstep_up passkey\n\t\t}\n\t}\n}" + site, "Caddyfile:6", `step_up "passkey": want webauthn, totp or any`},
		{"rp_id with a scheme", "{\n\tjit {\n\t\trp_id https://example.com\n\t\trole db-admin {\n\t\t\tmax_duration 1h\n\t\t\teligible alice\n\t\t}\n\t}\n}" + site, "Caddyfile:3", "rp_id: \"https://example.com\" is not a domain name"},
		{"rp_id an address", "{\n\tjit {\n\t\trp_id 10.0.0.1\n\t\trole db-admin {\n\t\t\tmax_duration 1h\n\t\t\teligible alice\n\t\t}\n\t}\n}" + site, "Caddyfile:3", "not an IP address"},
		{"bad lockout count", "{\n\tjit {\n\t\tlockout {\n\t\t\tmax_failures zero\n\t\t}\n\t\trole db-admin {\n\t\t\tmax_duration 1h\n\t\t\teligible alice\n\t\t}\n\t}\n}" + site, "Caddyfile:4", "max_failures"},
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

func TestRoleConfigBuildRefusesWhatTheCaddyfileWouldHave(t *testing.T) {
	// JSON configs skip the Caddyfile parser; Provision must refuse the same mistakes.
	tests := []struct {
		name string
		rc   RoleConfig
		want string
	}{
		{"no max", RoleConfig{Eligible: []EligibleConfig{{Subjects: []string{"a"}}}}, "max_duration is required"},
		{"no eligible", RoleConfig{MaxDuration: 60e9}, "no one is eligible"},
		{"empty subjects", RoleConfig{MaxDuration: 60e9, Eligible: []EligibleConfig{{}}}, "names no subject"},
		{"bad date", RoleConfig{MaxDuration: 60e9, Eligible: []EligibleConfig{{Subjects: []string{"a"}, Until: "tomorrow"}}}, "neither a date"},
		{"bad regex", RoleConfig{MaxDuration: 60e9, Ticket: "(", Eligible: []EligibleConfig{{Subjects: []string{"a"}}}}, "not a valid regular expression"},
		{"bad step_up", RoleConfig{MaxDuration: 60e9, StepUp: "passkey", Eligible: []EligibleConfig{{Subjects: []string{"a"}}}}, "want webauthn, totp or any"},
		{"control char subject", RoleConfig{MaxDuration: 60e9, Eligible: []EligibleConfig{{Subjects: []string{"a\nb"}}}}, "not a user name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.rc.build("role")
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v, want an error saying %q", err, tt.want)
			}
		})
	}
}

func TestTicketPatternMustMatchInFull(t *testing.T) {
	re, err := compileTicket("INC-[0-9]+|CHG-[0-9]+")
	if err != nil {
		t.Fatal(err)
	}
	for s, want := range map[string]bool{"INC-1": true, "CHG-22": true, "xINC-1": false, "INC-1x": false, "INC-": false} {
		if re.MatchString(s) != want {
			t.Errorf("%q: got %v, want %v", s, !want, want)
		}
	}
}

func TestCaddyfileAssertion(t *testing.T) {
	for src, want := range map[string][2]string{
		"assertion":                          {"true", ""},
		"assertion https://backend.internal": {"true", "https://backend.internal"},
	} {
		cfg, err := adapt(t, validGlobal+"http://example.com {\n\tjit db-admin {\n\t\t"+src+"\n\t}\n}\n")
		if err != nil {
			t.Fatalf("%s: %v", src, err)
		}
		raw, _ := json.Marshal(cfg)
		s := string(raw)
		if !strings.Contains(s, `"assertion":`+want[0]) || (want[1] != "" && !strings.Contains(s, `"assertion_audience":"`+want[1]+`"`)) {
			t.Errorf("%s adapts to %s", src, s)
		}
	}
}

func TestCountArgTakesOneWholeNumberInItsRange(t *testing.T) {
	for _, tt := range []struct {
		line    string
		most    int
		want    int
		wantErr string
	}{
		{"count 1", 10, 1, ""},
		{"count 10", 10, 10, ""},
		{"count 11", 10, 0, `count "11": want a whole number from 1 to 10`},
		{"count 0", 10, 0, `count "0": want a whole number from 1 to 10`},
		{"count -3", 10, 0, `count "-3": want a whole number from 1 to 10`},
		{"count two", 10, 0, `count "two": want a whole number from 1 to 10`},
		{"count 1000000", 0, 1000000, ""},
		{"count 0", 0, 0, `count "0": want a whole number of at least 1`},
		{"count 2.5", 0, 0, `count "2.5": want a whole number of at least 1`},
		{"count", 10, 0, "wrong argument count"},
		{"count 1 2", 10, 0, "wrong argument count"},
	} {
		t.Run(fmt.Sprintf("%s, at most %d", tt.line, tt.most), func(t *testing.T) {
			d := caddyfile.NewTestDispenser(tt.line)
			d.Next()
			got := 0
			err := countArg(d, "count", tt.most, &got)
			if tt.wantErr == "" {
				if err != nil || got != tt.want {
					t.Errorf("got %d, %v; want %d", got, err, tt.want)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) || got != 0 {
				t.Errorf("got %d, %v; want an error saying %q and nothing set", got, err, tt.wantErr)
			}
		})
	}
}
