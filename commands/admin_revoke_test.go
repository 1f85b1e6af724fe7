package commands

import (
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	"github.com/caddy-jit/caddy-jit/internal/adminapi"
)

func TestRevokeCommandOutput(t *testing.T) {
	ended := func(id, user string) adminapi.Session {
		r := cliTestRecord(id, user)
		r.Ended, r.EndedBy, r.EndReason = cliTestStart.Add(time.Minute), "root via admin API (127.0.0.1:1)", "why"
		return adminapi.Session{Record: r, Revoked: true}
	}
	tests := []struct {
		name string
		args []string
		body string
		want string
	}{
		{
			name: "one", args: []string{"revoke", "AAAAAAAAAAAAAAAAAAAAAA"}, body: listJSON(t, ended("AAAAAAAAAAAAAAAAAAAAAA", "alice")),
			want: "Revoked session AAAAAAAAAAAAAAAAAAAAAA of alice (role console-admin, started 2026-03-01 09:00 UTC, would have expired 2026-03-01 10:00 UTC).\n",
		},
		{
			name: "all of a user", args: []string{"revoke", "--user", "bob"},
			body: listJSON(t, ended("AAAAAAAAAAAAAAAAAAAAAA", "bob"), ended("BBBBBBBBBBBBBBBBBBBBBB", "bob")),
			want: "Revoked session AAAAAAAAAAAAAAAAAAAAAA of bob (role console-admin, started 2026-03-01 09:00 UTC, would have expired 2026-03-01 10:00 UTC).\n" +
				"Revoked session BBBBBBBBBBBBBBBBBBBBBB of bob (role console-admin, started 2026-03-01 09:00 UTC, would have expired 2026-03-01 10:00 UTC).\n",
		},
		{
			name: "expired before", args: []string{"revoke", "CCCCCCCCCCCCCCCCCCCCCC"},
			body: listJSON(t, adminapi.Session{Record: cliTestRecord("CCCCCCCCCCCCCCCCCCCCCC", "alice")}),
			want: "Session CCCCCCCCCCCCCCCCCCCCCC of alice (role console-admin) had already expired at 2026-03-01 10:00 UTC: nothing to revoke.\n",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			stub := &adminStub{status: http.StatusOK, body: tc.body}
			out, _, err := runJitStreams(t, append(tc.args, "--address", stub.start(t))...)
			if err != nil {
				t.Fatalf("revoke: %v", err)
			}
			if out != tc.want {
				t.Errorf("output:\n%s\nwant\n%s", out, tc.want)
			}
		})
	}
}

func TestUnlockAndRotateKeysOutput(t *testing.T) {
	tests := []struct {
		name string
		args []string
		body string
		want string
	}{
		{"unlock", []string{"unlock", "alice"}, `{"user":"alice","result":"unlocked"}`, "Unlocked alice: their next correct code is accepted.\n"},
		{"rotate-keys", []string{"rotate-keys"}, `{"kid":"k3","keys":["k1","k2","k3"]}`, "New signing key: k3\nKeys in use, oldest first (the last one signs): k1, k2, k3\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			stub := &adminStub{status: http.StatusOK, body: tc.body}
			out, _, err := runJitStreams(t, append(tc.args, "--address", stub.start(t))...)
			if err != nil {
				t.Fatal(err)
			}
			if out != tc.want {
				t.Errorf("output %q, want %q", out, tc.want)
			}
		})
	}
}

func TestRevokeUnlockRotateErrorsArePlain(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		status  int
		body    string
		want    []string
		notWant []string
	}{
		{
			name: "no such session", args: []string{"revoke", "AAAAAAAAAAAAAAAAAAAAAA"}, status: http.StatusNotFound,
			body:    `{"error":"no session with id \"AAAAAAAAAAAAAAAAAAAAAA\""}` + "\n",
			want:    []string{`revoking session "AAAAAAAAAAAAAAAAAAAAAA"`, "HTTP 404", `no session with id "AAAAAAAAAAAAAAAAAAAAAA"`},
			notWant: []string{`{"error"`},
		},
		{
			name: "user without sessions", args: []string{"revoke", "--user", "alice"}, status: http.StatusOK,
			body: `{"sessions":[]}`,
			want: []string{`"alice" has no active session: nothing was revoked`},
		},
		{
			name: "bad user name", args: []string{"unlock", "al\x01ice"}, status: http.StatusBadRequest,
			body:    `{"error":"the user name \"al\\u0001ice\" holds a slash or a control character"}`,
			want:    []string{"clearing the lockout of", "HTTP 400", "holds a slash or a control character"},
			notWant: []string{`{"error"`},
		},
		{
			name: "jit not configured", args: []string{"sessions"}, status: http.StatusNotFound,
			body: `{"error":"caddy-jit is not configured: the running config has no jit app (global ` + "`jit`" + ` option)"}`,
			want: []string{"listing sessions", "HTTP 404", "caddy-jit is not configured"},
		},
		{
			name: "storage failure", args: []string{"rotate-keys"}, status: http.StatusServiceUnavailable,
			body: `{"error":"rotating the signing key: the storage failed: disk full"}`,
			want: []string{"HTTP 503", "the storage failed: disk full"},
		},
		{
			name: "not caddy-jit", args: []string{"sessions", "--json"}, status: http.StatusOK,
			body: "<html>hello</html>",
			want: []string{"something other than caddy-jit's JSON", "caddy with caddy-jit"},
		},
		{
			name: "rotation without key id", args: []string{"rotate-keys"}, status: http.StatusOK,
			body: `{}`,
			want: []string{"without the new key id"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			stub := &adminStub{status: tc.status, body: tc.body}
			addr := stub.start(t)
			out, _, err := runJitStreams(t, append(tc.args, "--address", addr)...)
			if err == nil {
				t.Fatalf("%v succeeded:\n%s", tc.args, out)
			}
			for _, want := range tc.want {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not contain %q", err, want)
				}
			}
			for _, notWant := range tc.notWant {
				if strings.Contains(err.Error(), notWant) {
					t.Errorf("error %q contains %q", err, notWant)
				}
			}
			if out != "" {
				t.Errorf("printed something despite the error:\n%s", out)
			}
		})
	}
}

func TestRevokeUnlockRotateArgs(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"revoke nothing", []string{"revoke"}, "want exactly one session id or --user, got 0"},
		{"revoke two ids", []string{"revoke", "a", "b"}, "want exactly one session id or --user, got 2"},
		{"revoke id and user", []string{"revoke", "a", "--user", "bob"}, "not both"},
		{"revoke empty id", []string{"revoke", "", "--address", "127.0.0.1:1"}, "no session id or user"},
		{"unlock nobody", []string{"unlock"}, "want exactly one user name, got 0"},
		{"unlock empty", []string{"unlock", "", "--address", "127.0.0.1:1"}, "no user name"},
		{"sessions with an argument", []string{"sessions", "alice"}, "unknown command"},
		{"rotate-keys with an argument", []string{"rotate-keys", "now"}, "unknown command"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := runJitStreams(t, tc.args...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

// TestEnrollCommandRegistered checks the admin flags of every subcommand.
func TestSessionsRevokeUnlockRotateAreRegistered(t *testing.T) {
	cmd := jitCommand()
	want := map[string][]string{"sessions": {"user", "role", "json"}, "revoke": {"user", "reason"}, "unlock": {"reason"}, "rotate-keys": nil}
	for name, flags := range want {
		sub, _, err := cmd.Find([]string{name})
		if err != nil || sub.Name() != name {
			t.Errorf("caddy jit %s: %v", name, err)
			continue
		}
		for _, flag := range flags {
			if sub.Flags().Lookup(flag) == nil {
				t.Errorf("caddy jit %s lacks --%s", name, flag)
			}
		}
	}
	seen := map[string]bool{}
	for _, sub := range cmd.Commands() {
		if seen[sub.Name()] {
			t.Errorf("caddy jit %s is registered twice", sub.Name())
		}
		seen[sub.Name()] = true
	}
}

// A --config whose admin API is on is only where the address comes from: the
// command goes to that admin API, not to storage.
func TestSessionsWithConfigUsesItsAdminAPI(t *testing.T) {
	stub := &adminStub{status: http.StatusOK, body: `{"sessions":[]}`}
	addr := stub.start(t)
	storage := t.TempDir()
	config := filepath.Join(t.TempDir(), "caddy.json")
	cfg := `{"admin":{"listen":"` + addr + `"},"storage":{"module":"file_system","root":"` + storage + `"},` +
		`"apps":{"jit":{"roles":{"r":{"max_duration":3600000000000,"eligible":[{"subjects":["alice"]}]}}}}}`
	if err := os.WriteFile(config, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}

	out, stderr, err := runJitStreams(t, "sessions", "--config", config)
	if err != nil {
		t.Fatalf("sessions: %v", err)
	}
	if req := stub.only(t); req.method != http.MethodGet || req.path != "/jit/sessions" {
		t.Errorf("request %s %s, want GET /jit/sessions", req.method, req.path)
	}
	if out != "No active sessions.\n" || stderr != "" {
		t.Errorf("stdout %q, stderr %q", out, stderr)
	}
	if entries, _ := os.ReadDir(storage); len(entries) != 0 {
		t.Errorf("the command touched the storage although the admin API is on: %v", entries)
	}
}

func TestWithControlExitsAsCaddyDoesWhenTheWorkFails(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "no-such-Caddyfile")
	for _, tt := range []struct {
		name     string
		flags    []string
		work     error
		wantRun  bool
		wantCode int
		wantErr  string
	}{
		{"the work is done", []string{"--address", "localhost:2999"}, nil, true, caddy.ExitCodeSuccess, ""},
		{"the work fails", []string{"--address", "localhost:2999"}, errors.New("HTTP 503"), true, caddy.ExitCodeFailedStartup, "HTTP 503"},
		{"caddy-jit cannot be reached", []string{"--config", missing}, nil, false, caddy.ExitCodeFailedStartup, "no-such-Caddyfile"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cmd := rotateKeysCommand()
			if err := cmd.ParseFlags(tt.flags); err != nil {
				t.Fatal(err)
			}
			ran := false
			code, err := withControl(caddycmd.Flags{FlagSet: cmd.Flags()}, io.Discard, func(ctl jitControl) error {
				ran = ctl != nil
				return tt.work
			})
			if ran != tt.wantRun || code != tt.wantCode {
				t.Errorf("ran %v, exit %d; want ran %v, exit %d", ran, code, tt.wantRun, tt.wantCode)
			}
			if (err == nil) != (tt.wantErr == "") || (err != nil && !strings.Contains(err.Error(), tt.wantErr)) {
				t.Errorf("error %v, want one saying %q", err, tt.wantErr)
			}
		})
	}
}
