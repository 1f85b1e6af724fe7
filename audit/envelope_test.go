package audit

import (
	"strings"
	"testing"
)

// The envelope is not hashed, but a SIEM shows it: an edit of it is a break at its line.
func TestVerifyEnvelopeEdits(t *testing.T) {
	lines, all := attackedLog(t)
	line := lines[4] // seq 5, an "evt" written by the batched writer
	for _, tc := range []struct {
		name, old, new, want string // want: "" for intact
	}{
		{"msg given twice, the first another event", `"msg":"evt"`, `"msg":"revoked","msg":"evt"`, `its key "msg" appears twice`},
		{"msg an object", `"msg":"evt"`, `"msg":{"revoked":true}`, "its msg is not a string"},
		{"msg removed", `"msg":"evt",`, ``, "it has no msg"},
		{"logger another", `"logger":"` + LoggerName + `"`, `"logger":"http.log.access"`, "its logger is not " + LoggerName},
		{"level debug", `"level":"info"`, `"level":"debug"`, "its level is not info"},
		{"level upper, as level_format upper writes it", `"level":"info"`, `"level":"INFO"`, ""},
		{"level colored, as level_format color writes it", `"level":"info"`, `"level":"\u001b[34mINFO\u001b[0m"`, ""},
		{"without logger and level, as a bare encoder writes it", `"level":"info",`, ``, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if !strings.Contains(line, tc.old) {
				t.Fatalf("%q is not in %s", tc.old, line)
			}
			edited := edit(lines, 4, func(l string) string { return strings.Replace(l, tc.old, tc.new, 1) })
			res := alVerify(t, all, Data("log", []byte(strings.Join(edited, ""))))
			got := verifyOutcome(res)
			if tc.want == "" && got != "intact" || tc.want != "" && !strings.HasPrefix(got, "break: log:5: "+tc.want) {
				t.Fatalf("got %s, want %q", got, tc.want)
			}
		})
	}
}
