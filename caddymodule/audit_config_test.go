package caddymodule

import (
	"encoding/json"
	"strings"
	"testing"
)

const auditRole = "\t\trole db-admin {\n\t\t\tmax_duration 1h\n\t\t\teligible alice\n\t\t}\n"

func auditCaddyfile(block string) string {
	return "{\n\tjit {\n\t\taudit {\n" + block + "\t\t}\n" + auditRole + "\t}\n}\nhttp://example.com {\n\tjit db-admin\n}\n"
}

func TestCaddyfileAuditBlockAdapts(t *testing.T) {
	cfg, err := adapt(t, auditCaddyfile("\t\t\toutput file /var/log/jit-audit.log {\n\t\t\t\troll_size 10MiB\n\t\t\t}\n"+
		"\t\t\tflush_interval 20ms\n\t\t\tqueue 100\n\t\t\tcheckpoint 500 30s\n\t\t\twitness https://witness.example/jit\n"))
	if err != nil {
		t.Fatal(err)
	}
	got, _ := json.Marshal(cfg["apps"].(map[string]any)["jit"].(map[string]any)["audit"])
	want := `{"checkpoint_every":500,"checkpoint_interval":30000000000,"flush_interval":20000000,` +
		`"output":{"filename":"/var/log/jit-audit.log","output":"file","roll_size_mb":10},"queue":100,"witness":"https://witness.example/jit"}`
	if string(got) != want {
		t.Errorf("audit:\n got %s\nwant %s", got, want)
	}
}

func TestCaddyfileAuditMistakesNameTheLine(t *testing.T) {
	for _, tt := range []struct {
		name, block, wantLine, wantText string
	}{
		{"unknown setting", "\t\t\tflush 1s\n", "Caddyfile:4", `unrecognized audit setting "flush"`},
		{"output without writer", "\t\t\toutput\n", "Caddyfile:4", "name a Caddy log writer"},
		{"unknown writer", "\t\t\toutput fil x.log\n", "Caddyfile:4", `audit output "fil": no such log writer`},
		{"flush_interval zero", "\t\t\tflush_interval 0s\n", "Caddyfile:4", `flush_interval "0s": want a positive duration`},
		{"queue not a number", "\t\t\tqueue many\n", "Caddyfile:4", "audit queue"},
		{"checkpoint one argument", "\t\t\tcheckpoint 1000\n", "Caddyfile:4", "want a number of events and a duration"},
		{"checkpoint zero events", "\t\t\tcheckpoint 0 60s\n", "Caddyfile:4", `audit checkpoint "0"`},
		{"checkpoint bad duration", "\t\t\tcheckpoint 10 soon\n", "Caddyfile:4", `audit checkpoint "soon"`},
		{"witness not http", "\t\t\twitness ftp://witness.example/x\n", "Caddyfile:4", "want an http or https URL"},
		{"witness without host", "\t\t\twitness https:///x\n", "Caddyfile:4", "want an http or https URL"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := adapt(t, auditCaddyfile(tt.block))
			if err == nil {
				t.Fatal("the Caddyfile was accepted")
			}
			if !strings.Contains(err.Error(), tt.wantLine) || !strings.Contains(err.Error(), tt.wantText) {
				t.Errorf("error %q should name %s and say %q", err, tt.wantLine, tt.wantText)
			}
		})
	}
}
